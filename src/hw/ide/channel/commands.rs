//! ATA command execution: which device accepts which command (QEMU's command table), and
//! what each command does to the task file; data phases are in the sibling modules.

use super::*;

/// ATA command codes (ACS-2 table B.2), as QEMU names them.
pub(super) mod cmd {
    pub const DSM: u8 = 0x06;
    pub const DEVICE_RESET: u8 = 0x08;
    pub const RECALIBRATE: u8 = 0x10;
    pub const READ: u8 = 0x20;
    pub const READ_ONCE: u8 = 0x21;
    pub const READ_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_NATIVE_MAX_EXT: u8 = 0x27;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE: u8 = 0x30;
    pub const WRITE_ONCE: u8 = 0x31;
    pub const WRITE_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const WRITE_VERIFY: u8 = 0x3c;
    pub const VERIFY: u8 = 0x40;
    pub const VERIFY_ONCE: u8 = 0x41;
    pub const VERIFY_EXT: u8 = 0x42;
    pub const SEEK: u8 = 0x70;
    pub const DIAGNOSE: u8 = 0x90;
    pub const SPECIFY: u8 = 0x91;
    pub const STANDBY_NOW2: u8 = 0x94;
    pub const IDLE_IMMEDIATE2: u8 = 0x95;
    pub const STANDBY2: u8 = 0x96;
    pub const SET_IDLE2: u8 = 0x97;
    pub const CHECK_POWER_MODE2: u8 = 0x98;
    pub const SLEEP_NOW2: u8 = 0x99;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET: u8 = 0xa1;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_ONCE: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_ONCE: u8 = 0xcb;
    pub const STANDBY_NOW1: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const SET_IDLE1: u8 = 0xe3;
    pub const CHECK_POWER_MODE1: u8 = 0xe5;
    pub const SLEEP_NOW1: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const IDENTIFY: u8 = 0xec;
    pub const SET_FEATURES: u8 = 0xef;
    pub const SECURITY_FREEZE_LOCK: u8 = 0xf5;
    pub const READ_NATIVE_MAX: u8 = 0xf8;
}

/// Which devices accept a command, and whether success sets DSC (QEMU's `ide_cmd_table`).
struct CommandFlags {
    disk: bool,
    cdrom: bool,
    set_dsc: bool,
}

fn command_flags(code: u8) -> Option<CommandFlags> {
    use cmd::*;
    let (disk, cdrom, set_dsc) = match code {
        DEVICE_RESET | PACKET | IDENTIFY_PACKET => (false, true, false),
        READ | DIAGNOSE | FLUSH_CACHE | IDENTIFY => (true, true, false),
        SET_FEATURES => (true, true, true),
        DSM | READ_ONCE | READ_EXT | READ_DMA_EXT | READ_MULTIPLE_EXT | WRITE | WRITE_ONCE
        | WRITE_EXT | WRITE_DMA_EXT | WRITE_MULTIPLE_EXT | WRITE_VERIFY | STANDBY_NOW2
        | IDLE_IMMEDIATE2 | STANDBY2 | SET_IDLE2 | SLEEP_NOW2 | READ_MULTIPLE | WRITE_MULTIPLE
        | READ_DMA | READ_DMA_ONCE | WRITE_DMA | WRITE_DMA_ONCE | STANDBY_NOW1 | IDLE_IMMEDIATE
        | STANDBY | SET_IDLE1 | SLEEP_NOW1 | FLUSH_CACHE_EXT => (true, false, false),
        RECALIBRATE | READ_NATIVE_MAX_EXT | VERIFY | VERIFY_ONCE | VERIFY_EXT | SEEK | SPECIFY
        | CHECK_POWER_MODE2 | SET_MULTIPLE | CHECK_POWER_MODE1 | SECURITY_FREEZE_LOCK
        | READ_NATIVE_MAX => (true, false, true),
        _ => return None,
    };
    Some(CommandFlags {
        disk,
        cdrom,
        set_dsc,
    })
}

impl State {
    pub(super) fn execute(&mut self, code: u8) {
        let u = self.selected;
        // Commands to an absent device 1 go nowhere.
        if u == 1 && self.units[1].attachment.is_empty() {
            return;
        }
        let is_cdrom = self.units[u].attachment.is_cdrom();
        if self.units[u].tf.status & (STATUS_BSY | STATUS_DRQ) != 0
            && !(code == cmd::DEVICE_RESET && is_cdrom)
        {
            return;
        }
        let permitted = command_flags(code).filter(|f| if is_cdrom { f.cdrom } else { f.disk });
        let Some(flags) = permitted else {
            self.units[u].abort();
            self.raise_irq();
            return;
        };
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_BSY;
        unit.tf.error = 0;
        if self.run_command(u, code) {
            let tf = &mut self.units[u].tf;
            tf.status &= !STATUS_BSY;
            if flags.set_dsc && tf.error == 0 {
                tf.status |= STATUS_DSC;
            }
            self.raise_irq();
        }
    }

    /// Runs a permitted command; true when it completed and the caller should finish it
    /// (clear BSY, raise the interrupt), false when the command manages that itself.
    pub(super) fn run_command(&mut self, u: usize, code: u8) -> bool {
        use cmd::*;
        let unit = &mut self.units[u];
        let has_disk = unit.disk().is_some();
        match code {
            DEVICE_RESET => {
                unit.transfer_stop();
                self.dma = self.dma.filter(|&(unit, _)| unit != u);
                let unit = &mut self.units[u];
                unit.reset();
                unit.tf.status = 0;
                false
            }
            RECALIBRATE | SPECIFY | STANDBY_NOW1 | STANDBY_NOW2 | IDLE_IMMEDIATE
            | IDLE_IMMEDIATE2 | STANDBY | STANDBY2 | SET_IDLE1 | SET_IDLE2 | SLEEP_NOW1
            | SLEEP_NOW2 | SEEK => true,
            CHECK_POWER_MODE1 | CHECK_POWER_MODE2 => {
                unit.tf.nsector = 0xff; // active or idle
                true
            }
            SECURITY_FREEZE_LOCK => {
                unit.tf.nsector = 0;
                true
            }
            VERIFY | VERIFY_ONCE | VERIFY_EXT => {
                unit.lba48_transform(code == VERIFY_EXT);
                true
            }
            READ | READ_ONCE | READ_EXT => {
                if unit.attachment.is_cdrom() {
                    // ATA/ATAPI-4 8.27.5.2: a packet device answers with its signature.
                    unit.set_signature();
                    unit.abort();
                    return true;
                }
                if !has_disk {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_EXT);
                unit.req_sectors = 1;
                self.sector_read(u);
                false
            }
            READ_MULTIPLE | READ_MULTIPLE_EXT => {
                if !has_disk || unit.mult_sectors == 0 {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_MULTIPLE_EXT);
                unit.req_sectors = unit.mult_sectors;
                self.sector_read(u);
                false
            }
            WRITE | WRITE_ONCE | WRITE_EXT | WRITE_VERIFY => {
                if !has_disk {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == WRITE_EXT);
                unit.req_sectors = 1;
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.transfer_start(SECTOR_SIZE as usize, OnEnd::SectorWrite);
                false
            }
            WRITE_MULTIPLE | WRITE_MULTIPLE_EXT => {
                if !has_disk || unit.mult_sectors == 0 {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == WRITE_MULTIPLE_EXT);
                unit.req_sectors = unit.mult_sectors;
                let n = unit.tf.nsector.min(unit.req_sectors);
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.transfer_start(n as usize * SECTOR_SIZE as usize, OnEnd::SectorWrite);
                false
            }
            READ_DMA | READ_DMA_ONCE | READ_DMA_EXT | WRITE_DMA | WRITE_DMA_ONCE
            | WRITE_DMA_EXT => {
                if !has_disk {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_DMA_EXT || code == WRITE_DMA_EXT);
                let job = if matches!(code, READ_DMA | READ_DMA_ONCE | READ_DMA_EXT) {
                    DmaJob::Read
                } else {
                    DmaJob::Write
                };
                self.start_dma(u, job);
                false
            }
            DSM => {
                // Data set management: only TRIM, its ranges come by DMA.
                if unit.tf.feature == 0x01 && has_disk {
                    self.start_dma(u, DmaJob::Trim);
                    return false;
                }
                unit.abort();
                true
            }
            READ_NATIVE_MAX | READ_NATIVE_MAX_EXT => {
                let total = unit.disk().map_or(0, |d| d.total_sectors);
                if total == 0 {
                    unit.abort();
                    return true;
                }
                unit.lba48_transform(code == READ_NATIVE_MAX_EXT);
                unit.set_sector_number(total as i64 - 1);
                true
            }
            SET_MULTIPLE => {
                let n = unit.tf.nsector & 0xff;
                if n != 0 && (n > MAX_MULT_SECTORS || !n.is_power_of_two()) {
                    unit.abort();
                } else {
                    unit.mult_sectors = n;
                }
                true
            }
            FLUSH_CACHE | FLUSH_CACHE_EXT => {
                self.flush(u);
                false
            }
            IDENTIFY => {
                if !unit.attachment.is_disk() {
                    if unit.attachment.is_cdrom() {
                        unit.set_signature();
                    }
                    unit.abort();
                    return true;
                }
                let words = *unit.identify_words().expect("a disk has IDENTIFY data");
                self.send_identify(u, &words);
                false
            }
            IDENTIFY_PACKET => {
                if !unit.attachment.is_cdrom() {
                    unit.abort();
                    return true;
                }
                let words = *unit.identify_words().expect("a CD-ROM has IDENTIFY data");
                self.send_identify(u, &words);
                false
            }
            DIAGNOSE => {
                self.diagnose(u);
                false
            }
            SET_FEATURES => self.set_features(u),
            PACKET => {
                if unit.tf.feature & 0x02 != 0 {
                    // Overlapped commands are not supported.
                    unit.abort();
                    return true;
                }
                unit.tf.status = STATUS_DRDY | STATUS_DSC;
                unit.atapi_dma = unit.tf.feature & 0x01 != 0;
                unit.tf.nsector = REASON_COD;
                unit.transfer_start(PACKET_SIZE, OnEnd::PacketCommand);
                false
            }
            _ => {
                unit.abort();
                true
            }
        }
    }

    pub(super) fn send_identify(&mut self, u: usize, words: &[u16; 256]) {
        let unit = &mut self.units[u];
        unit.tf.status = STATUS_DRDY | STATUS_DSC;
        unit.transfer_start(512, OnEnd::Stop);
        unit.buffer[..512].copy_from_slice(&identify::to_bytes(words));
        self.raise_irq();
    }

    /// EXECUTE DEVICE DIAGNOSTIC, also the end of a software reset.
    pub(super) fn diagnose(&mut self, u: usize) {
        let unit = &mut self.units[u];
        unit.set_signature();
        unit.tf.error = 0x01; // passed
        if unit.attachment.is_cdrom() {
            // Packet devices come out with a clear status register, DRDY included.
            unit.tf.status = 0;
        } else {
            unit.tf.status = STATUS_DRDY | STATUS_DSC;
            self.raise_irq();
        }
    }

    pub(super) fn set_features(&mut self, u: usize) -> bool {
        let unit = &mut self.units[u];
        if unit.attachment.is_empty() {
            unit.abort();
            return true;
        }
        match unit.tf.feature {
            0x02 | 0x82 => {
                let enable = unit.tf.feature == 0x02;
                if let Attachment::Disk(disk) = &mut unit.attachment {
                    disk.write_cache = enable;
                }
                // QEMU edits word 85 of whatever IDENTIFY data the device has, CD-ROMs too.
                if let Some(words) = unit.identify_words() {
                    words[85] = identify::enabled_features_word(enable);
                }
                if enable {
                    true
                } else {
                    self.flush(u);
                    false
                }
            }
            // Power-on defaults, read look-ahead, APM, acoustic management, vendor NOPs.
            0xcc | 0x66 | 0xaa | 0x55 | 0x05 | 0x85 | 0x69 | 0x67 | 0x96 | 0x9a | 0x42 | 0xc2 => {
                true
            }
            0x03 => {
                // Set transfer mode: recorded in the cached IDENTIFY data.
                let mode = unit.tf.nsector as u8;
                let bit = 1u16 << ((mode & 0x07) + 8);
                let (w62, w63, w88) = match mode >> 3 {
                    0x00 | 0x01 => (0x07, 0x07, 0x3f),
                    0x02 => (0x07 | bit, 0x07, 0x3f),
                    0x04 => (0x07, 0x07 | bit, 0x3f),
                    0x08 => (0x07, 0x07, 0x3f | bit),
                    _ => {
                        unit.abort();
                        return true;
                    }
                };
                if let Some(words) = unit.identify_words() {
                    words[62] = w62;
                    words[63] = w63;
                    words[88] = w88;
                }
                true
            }
            _ => {
                unit.abort();
                true
            }
        }
    }
}
