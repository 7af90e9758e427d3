//! The PIIX IDE function's drives: ATA disks and ATAPI CD-ROMs.

pub mod atapi;
