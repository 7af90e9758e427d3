//! The ACPI power-management I/O block of the PIIX4 PM function: PM1 event/control registers
//! and the PM timer. Writing SLP_EN with sleep type 0 (the `_S5` value in QEMU's DSDT) powers
//! the machine off; this is how guests shut down.

use std::sync::Mutex;
use std::time::Instant;

use super::bus::PioDevice;

/// Where SeaBIOS programs the PIIX4 PM base on QEMU's `pc`; direct-boot guests find it there too.
pub const PM_IO_BASE: u16 = 0x600;
/// The PM block spans 64 ports.
pub const PM_IO_LEN: u16 = 0x40;

const PM1_STS: u16 = 0x00;
const PM1_EN: u16 = 0x02;
const PM1_CNT: u16 = 0x04;
const PM_TMR: u16 = 0x08;

const PM1_CNT_SCI_EN: u16 = 1 << 0;
const PM1_CNT_SLP_EN: u16 = 1 << 13;
const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
/// Sleep type of S5 (soft off) in the DSDT's `_S5` package.
const SLP_TYP_SOFT_OFF: u16 = 0;

/// The ACPI PM timer runs at 3.579545 MHz and is 24 bits wide.
const PM_TIMER_HZ: u128 = 3_579_545;
const PM_TIMER_MASK: u32 = 0x00ff_ffff;

#[derive(Default)]
struct Registers {
    status: u16,
    enable: u16,
    control: u16,
}

/// The PM register block.
pub struct PowerManagement {
    registers: Mutex<Registers>,
    started: Instant,
    on_poweroff: Box<dyn Fn() + Send + Sync>,
}

impl PowerManagement {
    pub fn new(on_poweroff: Box<dyn Fn() + Send + Sync>) -> PowerManagement {
        PowerManagement {
            registers: Mutex::new(Registers::default()),
            started: Instant::now(),
            on_poweroff,
        }
    }

    /// Sets or clears SCI_EN in PM1 control, as the chipset does when an OS writes ACPI
    /// enable/disable to the APM control port (the FADT's SMI_CMD).
    pub fn set_sci_enabled(&self, enabled: bool) {
        let mut regs = self.registers.lock().unwrap();
        if enabled {
            regs.control |= PM1_CNT_SCI_EN;
        } else {
            regs.control &= !PM1_CNT_SCI_EN;
        }
    }

    fn timer(&self) -> u32 {
        let ticks = self.started.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000;
        (ticks as u32) & PM_TIMER_MASK
    }

    fn read_register(&self, offset: u16) -> u32 {
        let regs = self.registers.lock().unwrap();
        match offset {
            PM1_STS => u32::from(regs.status),
            PM1_EN => u32::from(regs.enable),
            PM1_CNT => u32::from(regs.control),
            PM_TMR => {
                drop(regs);
                self.timer()
            }
            _ => 0,
        }
    }

    fn write_register(&self, offset: u16, value: u16) {
        let mut regs = self.registers.lock().unwrap();
        match offset {
            // Status bits are cleared by writing ones.
            PM1_STS => regs.status &= !value,
            PM1_EN => regs.enable = value,
            PM1_CNT => {
                regs.control = (value & !PM1_CNT_SLP_EN) | (regs.control & PM1_CNT_SCI_EN);
                let sleep_type = (value >> PM1_CNT_SLP_TYP_SHIFT) & 0x7;
                if value & PM1_CNT_SLP_EN != 0 && sleep_type == SLP_TYP_SOFT_OFF {
                    drop(regs);
                    (self.on_poweroff)();
                }
            }
            _ => {}
        }
    }
}

impl PioDevice for PowerManagement {
    fn read(&self, offset: u16, data: &mut [u8]) {
        // Registers are read at their own offset or at a byte inside them.
        let (base, shift) = match offset {
            0..=1 => (PM1_STS, offset),
            2..=3 => (PM1_EN, offset - 2),
            4..=5 => (PM1_CNT, offset - 4),
            8..=11 => (PM_TMR, offset - 8),
            _ => {
                data.fill(0);
                return;
            }
        };
        let value = self.read_register(base) >> (8 * shift);
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = (value >> (8 * i)) as u8;
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        // Only whole 16-bit registers are written by real drivers; a byte write to the low
        // half updates that half.
        if !matches!(offset, PM1_STS | PM1_EN | PM1_CNT) {
            return;
        }
        let mut value = (self.read_register(offset) as u16) & !0xff;
        value |= u16::from(data.first().copied().unwrap_or(0));
        if data.len() >= 2 {
            value = u16::from_le_bytes([data[0], data[1]]);
        }
        self.write_register(offset, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn pm() -> (PowerManagement, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let pm = PowerManagement::new(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        (pm, count)
    }

    #[test]
    fn slp_en_with_s5_type_powers_off() {
        let (pm, poweroffs) = pm();
        pm.write(PM1_CNT, &0x0001u16.to_le_bytes());
        assert_eq!(poweroffs.load(Ordering::SeqCst), 0);
        pm.write(PM1_CNT, &0x2000u16.to_le_bytes());
        assert_eq!(poweroffs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn other_sleep_types_do_not_power_off() {
        let (pm, poweroffs) = pm();
        pm.write(PM1_CNT, &(PM1_CNT_SLP_EN | 1 << 10).to_le_bytes());
        assert_eq!(poweroffs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn pm_timer_advances_and_wraps_at_24_bits() {
        let (pm, _) = pm();
        let mut a = [0u8; 4];
        pm.read(PM_TMR, &mut a);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut b = [0u8; 4];
        pm.read(PM_TMR, &mut b);
        let (a, b) = (u32::from_le_bytes(a), u32::from_le_bytes(b));
        assert!(a <= PM_TIMER_MASK && b <= PM_TIMER_MASK);
        assert!(
            b.wrapping_sub(a) & PM_TIMER_MASK >= 7000,
            "2 ms is ~7159 ticks"
        );
    }
}
