//! QEMU's BIOS linker/loader (`etc/table-loader`): commands that tell the firmware how to
//! place the ACPI blobs it reads from fw_cfg and patch the pointers and checksums between
//! them. The same commands are applied here for direct kernel boot, where no firmware runs.
//!
//! Each command is 128 bytes, little-endian: a u32 command code, then its arguments, the
//! file names NUL-padded to 56 bytes (QEMU's `BiosLinkerLoaderEntry`).

use std::collections::BTreeMap;

const COMMAND_SIZE: usize = 128;
const FILE_NAME_SIZE: usize = 56;

const COMMAND_ALLOCATE: u32 = 1;
const COMMAND_ADD_POINTER: u32 = 2;
const COMMAND_ADD_CHECKSUM: u32 = 3;

/// Where the firmware allocates a file: anywhere in high RAM, or the F-segment (below
/// 1 MiB, where an RSDP must be for legacy scanners).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    High = 1,
    FSeg = 2,
}

/// One loader command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Load `file` into memory aligned to `align` in `zone`.
    Allocate {
        file: &'static str,
        align: u32,
        zone: Zone,
    },
    /// Add the address of `source` to the `size`-byte little-endian value at `offset` in
    /// `dest` (which holds an offset into `source` before patching).
    AddPointer {
        dest: &'static str,
        source: &'static str,
        offset: u32,
        size: u8,
    },
    /// Set the byte at `offset` in `file` so that `[start, start + length)` sums to zero.
    AddChecksum {
        file: &'static str,
        offset: u32,
        start: u32,
        length: u32,
    },
}

fn put_name(entry: &mut [u8], at: usize, name: &str) {
    // Names are our own constants, all shorter than the field.
    entry[at..at + name.len()].copy_from_slice(name.as_bytes());
}

/// The `etc/table-loader` file: every command, padded to a whole page as QEMU pads it.
pub fn serialize(commands: &[Command]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(commands.len() * COMMAND_SIZE);
    for command in commands {
        let mut entry = [0u8; COMMAND_SIZE];
        match command {
            Command::Allocate { file, align, zone } => {
                entry[0..4].copy_from_slice(&COMMAND_ALLOCATE.to_le_bytes());
                put_name(&mut entry, 4, file);
                entry[60..64].copy_from_slice(&align.to_le_bytes());
                entry[64] = *zone as u8;
            }
            Command::AddPointer {
                dest,
                source,
                offset,
                size,
            } => {
                entry[0..4].copy_from_slice(&COMMAND_ADD_POINTER.to_le_bytes());
                put_name(&mut entry, 4, dest);
                put_name(&mut entry, 4 + FILE_NAME_SIZE, source);
                entry[116..120].copy_from_slice(&offset.to_le_bytes());
                entry[120] = *size;
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                entry[0..4].copy_from_slice(&COMMAND_ADD_CHECKSUM.to_le_bytes());
                put_name(&mut entry, 4, file);
                entry[60..64].copy_from_slice(&offset.to_le_bytes());
                entry[64..68].copy_from_slice(&start.to_le_bytes());
                entry[68..72].copy_from_slice(&length.to_le_bytes());
            }
        }
        blob.extend_from_slice(&entry);
    }
    blob.resize(blob.len().div_ceil(4096).max(1) * 4096, 0);
    blob
}

/// A command refers to something that does not exist (a bug in the table builder).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("ACPI loader: file {0} was not allocated")]
    UnknownFile(String),
    #[error("ACPI loader: {what} at {offset:#x} is outside file {file}")]
    OutOfRange {
        what: &'static str,
        file: String,
        offset: u64,
    },
}

/// Runs the commands as firmware would, with each file placed at the address `place`
/// chooses for it: returns the patched files with their addresses.
pub fn link(
    commands: &[Command],
    files: &BTreeMap<&'static str, Vec<u8>>,
    mut place: impl FnMut(&'static str, usize, u32, Zone) -> u64,
) -> Result<BTreeMap<&'static str, (u64, Vec<u8>)>, LinkError> {
    let mut placed: BTreeMap<&'static str, (u64, Vec<u8>)> = BTreeMap::new();
    let unknown = |name: &str| LinkError::UnknownFile(name.to_string());
    for command in commands {
        match command {
            Command::Allocate { file, align, zone } => {
                let data = files.get(file).ok_or_else(|| unknown(file))?.clone();
                let address = place(file, data.len(), *align, *zone);
                placed.insert(file, (address, data));
            }
            Command::AddPointer {
                dest,
                source,
                offset,
                size,
            } => {
                let source_address = placed.get(source).ok_or_else(|| unknown(source))?.0;
                let (_, data) = placed.get_mut(dest).ok_or_else(|| unknown(dest))?;
                let at = *offset as usize;
                let size = usize::from(*size);
                let field = data
                    .get_mut(at..at + size)
                    .filter(|_| matches!(size, 1 | 2 | 4 | 8))
                    .ok_or(LinkError::OutOfRange {
                        what: "pointer",
                        file: dest.to_string(),
                        offset: u64::from(*offset),
                    })?;
                let mut value = [0u8; 8];
                value[..size].copy_from_slice(field);
                let patched = u64::from_le_bytes(value).wrapping_add(source_address);
                field.copy_from_slice(&patched.to_le_bytes()[..size]);
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                let (_, data) = placed.get_mut(file).ok_or_else(|| unknown(file))?;
                let (start, end) = (*start as usize, *start as usize + *length as usize);
                let out_of_range = |what, offset: usize| LinkError::OutOfRange {
                    what,
                    file: file.to_string(),
                    offset: offset as u64,
                };
                if end > data.len() {
                    return Err(out_of_range("checksummed range", end));
                }
                if *offset as usize >= data.len() {
                    return Err(out_of_range("checksum", *offset as usize));
                }
                let sum = data[start..end]
                    .iter()
                    .fold(0u8, |sum, b| sum.wrapping_add(*b));
                let at = *offset as usize;
                data[at] = data[at].wrapping_sub(sum);
            }
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_qemus_layout() {
        let blob = serialize(&[
            Command::Allocate {
                file: "etc/acpi/rsdp",
                align: 16,
                zone: Zone::FSeg,
            },
            Command::AddPointer {
                dest: "etc/acpi/rsdp",
                source: "etc/acpi/tables",
                offset: 16,
                size: 4,
            },
            Command::AddChecksum {
                file: "etc/acpi/rsdp",
                offset: 8,
                start: 0,
                length: 20,
            },
        ]);
        assert_eq!(blob.len(), 4096);
        assert_eq!(&blob[0..4], &[1, 0, 0, 0]);
        assert_eq!(&blob[4..17], b"etc/acpi/rsdp");
        assert_eq!(blob[17], 0);
        assert_eq!(&blob[60..65], &[16, 0, 0, 0, 2]);
        let pointer = &blob[128..256];
        assert_eq!(pointer[0], 2);
        assert_eq!(&pointer[60..75], b"etc/acpi/tables");
        assert_eq!(&pointer[116..121], &[16, 0, 0, 0, 4]);
        let checksum = &blob[256..384];
        assert_eq!(checksum[0], 3);
        assert_eq!(&checksum[60..72], &[8, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0]);
        assert!(blob[384..].iter().all(|&b| b == 0));
    }

    #[test]
    fn link_patches_pointers_and_checksums() {
        let mut files = BTreeMap::new();
        files.insert("a", vec![0x10, 0, 0, 0, 0, 7]);
        files.insert("b", vec![0; 4]);
        let commands = [
            Command::Allocate {
                file: "b",
                align: 64,
                zone: Zone::High,
            },
            Command::Allocate {
                file: "a",
                align: 16,
                zone: Zone::FSeg,
            },
            Command::AddPointer {
                dest: "a",
                source: "b",
                offset: 0,
                size: 4,
            },
            Command::AddChecksum {
                file: "a",
                offset: 4,
                start: 0,
                length: 6,
            },
        ];
        let placed = link(&commands, &files, |name, _, _, zone| match (name, zone) {
            ("b", Zone::High) => 0x1000_0000,
            _ => 0xf_0000,
        })
        .unwrap();
        let (address, a) = &placed["a"];
        assert_eq!(*address, 0xf_0000);
        assert_eq!(&a[..4], &0x1000_0010u32.to_le_bytes());
        assert_eq!(a.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);

        let bad = [Command::AddPointer {
            dest: "a",
            source: "b",
            offset: 0,
            size: 4,
        }];
        assert_eq!(
            link(&bad, &files, |_, _, _, _| 0).unwrap_err(),
            LinkError::UnknownFile("b".into())
        );
        let outside = [
            commands[0].clone(),
            commands[1].clone(),
            Command::AddPointer {
                dest: "a",
                source: "b",
                offset: 4,
                size: 4,
            },
        ];
        assert!(matches!(
            link(&outside, &files, |_, _, _, _| 0),
            Err(LinkError::OutOfRange { .. })
        ));
    }
}
