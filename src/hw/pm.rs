//! The ACPI power-management I/O block of the PIIX4 PM function: PM1 event/control registers
//! and the PM timer, plus the GPE0 block QEMU's PIIX4 has at a fixed port. Writing SLP_EN with
//! sleep type 0 (the `_S5` value in QEMU's DSDT) powers the machine off; this is how guests
//! shut down. The power button (monitor `system_powerdown`) sets PWRBTN_STS when the guest
//! enabled it, and the SCI (ISA IRQ 9, level) is raised while an enabled status bit is set.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::bus::PioDevice;

/// Where SeaBIOS programs the PIIX4 PM base on QEMU's `pc`; direct-boot guests find it there too.
pub const PM_IO_BASE: u16 = 0x600;
/// The PM block spans 64 ports.
pub const PM_IO_LEN: u16 = 0x40;

const PM1_STS: u16 = 0x00;
const PM1_EN: u16 = 0x02;
const PM1_CNT: u16 = 0x04;
const PM_TMR: u16 = 0x08;

/// PM1 status/enable bits that raise the SCI in QEMU's PIIX4 (timer overflow, global lock
/// release, power button, RTC alarm); vmscope raises only the power button's.
const PM1_TMR: u16 = 1 << 0;
const PM1_GBL: u16 = 1 << 5;
const PM1_PWRBTN: u16 = 1 << 8;
const PM1_RTC: u16 = 1 << 10;
const PM1_SCI_SOURCES: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_RTC;

/// QEMU's PIIX4 GPE0 block: 2 status bytes (write one to clear), then 2 enable bytes, at a
/// fixed port (the FADT's GPE0_BLK).
pub const GPE0_IO_BASE: u16 = 0xafe0;
pub const GPE0_IO_LEN: u16 = 4;

const PM1_CNT_SCI_EN: u16 = 1 << 0;
const PM1_CNT_SLP_EN: u16 = 1 << 13;
const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
/// Sleep type of S5 (soft off) in the DSDT's `_S5` package.
const SLP_TYP_SOFT_OFF: u16 = 0;
/// Sleep type of S4 (suspend to disk) in the DSDT's `_S4` package (QEMU's `s4_val`): the
/// guest saved itself; the machine turns off as for S5.
pub const SLP_TYP_SUSPEND_TO_DISK: u16 = 2;

/// The ACPI PM timer runs at 3.579545 MHz and is 24 bits wide.
const PM_TIMER_HZ: u128 = 3_579_545;
const PM_TIMER_MASK: u32 = 0x00ff_ffff;
/// TMR_STS is set each time bit 23 of the counter changes.
const PM_TIMER_OVERFLOW_TICKS: u64 = 1 << 23;
/// How long the overflow thread sleeps at most before checking whether the block still
/// exists.
const OVERFLOW_THREAD_IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Registers {
    status: u16,
    enable: u16,
    control: u16,
    gpe_status: [u8; 2],
    gpe_enable: [u8; 2],
    /// The SCI level last driven.
    sci: bool,
    /// PM timer tick at which TMR_STS is set next (QEMU's `overflow_time`: the next change
    /// of the counter's bit 23); 0 after reset, so the bit reads set until first cleared.
    overflow_at: u64,
}

impl Registers {
    /// QEMU's `pm_update_sci`: the SCI is high while an enabled PM1 source (or GPE) is set.
    fn sci_level(&self) -> bool {
        let pm1 = self.status & self.enable & PM1_SCI_SOURCES != 0;
        let gpe =
            (self.gpe_status[0] & self.gpe_enable[0]) | (self.gpe_status[1] & self.gpe_enable[1]);
        pm1 || gpe != 0
    }
}

/// Drives the SCI line: `true` asserts it (level-triggered, active high).
pub type SciLine = Box<dyn Fn(bool) + Send + Sync>;

/// The PM register block.
pub struct PowerManagement {
    registers: Mutex<Registers>,
    started: Instant,
    on_poweroff: Box<dyn Fn() + Send + Sync>,
    sci: OnceLock<SciLine>,
    on_suspend_to_disk: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Wakes the overflow thread when TMR_EN or the next overflow changed.
    timer_changed: Condvar,
}

impl PowerManagement {
    pub fn new(on_poweroff: Box<dyn Fn() + Send + Sync>) -> PowerManagement {
        PowerManagement {
            registers: Mutex::new(Registers::default()),
            started: Instant::now(),
            on_poweroff,
            sci: OnceLock::new(),
            on_suspend_to_disk: OnceLock::new(),
            timer_changed: Condvar::new(),
        }
    }

    /// Starts the thread that raises the SCI when the PM timer overflows while TMR_EN is
    /// set (QEMU's PM timer interrupt). It ends within a second of the block being dropped.
    pub fn start_overflow_timer(self: &Arc<Self>) -> std::io::Result<()> {
        let weak: Weak<PowerManagement> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("acpi pm timer".into())
            .spawn(move || {
                while let Some(pm) = weak.upgrade() {
                    pm.wait_for_overflow();
                }
            })?;
        Ok(())
    }

    /// Waits until the next overflow that would raise the SCI (or a change, or the idle
    /// period), then brings the status and SCI up to date.
    fn wait_for_overflow(&self) {
        let mut regs = self.registers.lock().unwrap();
        self.update_sci(&mut regs);
        let armed = regs.enable & PM1_TMR != 0 && regs.status & PM1_TMR == 0;
        let wait = if armed {
            let remaining = regs.overflow_at.saturating_sub(self.ticks());
            let nanos = u128::from(remaining) * 1_000_000_000 / PM_TIMER_HZ + 1;
            Duration::from_nanos(nanos as u64).min(OVERFLOW_THREAD_IDLE)
        } else {
            OVERFLOW_THREAD_IDLE
        };
        let (mut regs, _) = self.timer_changed.wait_timeout(regs, wait).unwrap();
        self.update_sci(&mut regs);
    }

    /// PM timer ticks since power-on.
    fn ticks(&self) -> u64 {
        (self.started.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000) as u64
    }

    /// QEMU's `acpi_pm1_evt_get_sts`: TMR_STS becomes set once the overflow time passed.
    fn refresh_timer_status(&self, regs: &mut Registers) {
        if self.ticks() >= regs.overflow_at {
            regs.status |= PM1_TMR;
        }
    }

    /// What entering S4 does (QEMU: a SUSPEND_DISK event, then a guest shutdown). Until it
    /// is connected an S4 request is ignored, as any sleep type the DSDT does not list.
    pub fn connect_suspend_to_disk(&self, action: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_suspend_to_disk.set(action);
    }

    /// Connects the SCI output (ISA IRQ 9 on the `pc`); without it events set status bits only.
    pub fn connect_sci(&self, line: SciLine) {
        let _ = self.sci.set(line);
    }

    /// The power button was pressed (QEMU's `acpi_pm1_evt_power_down`): PWRBTN_STS is set
    /// only when the guest enabled PWRBTN_EN, and then the SCI is raised.
    pub fn press_power_button(&self) {
        let mut regs = self.registers.lock().unwrap();
        if regs.enable & PM1_PWRBTN != 0 {
            regs.status |= PM1_PWRBTN;
            self.update_sci(&mut regs);
        }
    }

    /// Power-on state (system reset): events, enables and control cleared, SCI low.
    pub fn reset(&self) {
        let mut regs = self.registers.lock().unwrap();
        let sci = regs.sci;
        *regs = Registers {
            sci,
            ..Registers::default()
        };
        self.update_sci(&mut regs);
        self.timer_changed.notify_all();
    }

    /// Drives the SCI line when its level changed.
    fn update_sci(&self, regs: &mut Registers) {
        self.refresh_timer_status(regs);
        let level = regs.sci_level();
        if level != regs.sci {
            regs.sci = level;
            if let Some(line) = self.sci.get() {
                line(level);
            }
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
        (self.ticks() as u32) & PM_TIMER_MASK
    }

    fn read_register(&self, offset: u16) -> u32 {
        let mut regs = self.registers.lock().unwrap();
        match offset {
            PM1_STS => {
                self.refresh_timer_status(&mut regs);
                u32::from(regs.status)
            }
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
            PM1_STS => {
                // Clearing TMR_STS arms the next overflow (QEMU's `acpi_pm1_evt_write_sts`).
                self.refresh_timer_status(&mut regs);
                if value & regs.status & PM1_TMR != 0 {
                    regs.overflow_at =
                        (self.ticks() + PM_TIMER_OVERFLOW_TICKS) & !(PM_TIMER_OVERFLOW_TICKS - 1);
                }
                regs.status &= !value;
                self.update_sci(&mut regs);
                self.timer_changed.notify_all();
            }
            PM1_EN => {
                regs.enable = value;
                self.update_sci(&mut regs);
                self.timer_changed.notify_all();
            }
            PM1_CNT => {
                regs.control = (value & !PM1_CNT_SLP_EN) | (regs.control & PM1_CNT_SCI_EN);
                let sleep_type = (value >> PM1_CNT_SLP_TYP_SHIFT) & 0x7;
                if value & PM1_CNT_SLP_EN != 0 {
                    drop(regs);
                    match sleep_type {
                        SLP_TYP_SOFT_OFF => (self.on_poweroff)(),
                        SLP_TYP_SUSPEND_TO_DISK => {
                            if let Some(action) = self.on_suspend_to_disk.get() {
                                action();
                            }
                        }
                        _ => {}
                    }
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

/// The GPE0 block's ports ([`GPE0_IO_BASE`]), sharing the PM block's state and SCI.
pub struct Gpe0Block(pub Arc<PowerManagement>);

impl PioDevice for Gpe0Block {
    fn read(&self, offset: u16, data: &mut [u8]) {
        let regs = self.0.registers.lock().unwrap();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match usize::from(offset) + i {
                at @ 0..=1 => regs.gpe_status[at],
                at @ 2..=3 => regs.gpe_enable[at - 2],
                _ => 0,
            };
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        let mut regs = self.0.registers.lock().unwrap();
        for (i, &byte) in data.iter().enumerate() {
            match usize::from(offset) + i {
                at @ 0..=1 => regs.gpe_status[at] &= !byte,
                at @ 2..=3 => regs.gpe_enable[at - 2] = byte,
                _ => {}
            }
        }
        self.0.update_sci(&mut regs);
    }
}

/// The GPE0 block under QEMU's region name.
pub fn gpe0_io_regions() -> Vec<crate::hw::describe::PortRegion> {
    vec![crate::hw::describe::PortRegion::new(
        "acpi-gpe0",
        GPE0_IO_BASE,
        GPE0_IO_LEN,
    )]
}

/// The registers inside the PM block (`piix4-pm` in QEMU), at offsets from its base:
/// PM1 event, PM1 control, the PM timer.
pub fn pm_block_io_regions() -> Vec<crate::hw::describe::PortRegion> {
    use crate::hw::describe::PortRegion;
    vec![
        PortRegion::new("acpi-evt", PM1_STS, 4),
        PortRegion::new("acpi-cnt", PM1_CNT, 2),
        PortRegion::new("acpi-tmr", PM_TMR, 4),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
    fn s4_runs_the_suspend_to_disk_action_when_connected() {
        let (pm, poweroffs) = pm();
        let s4 = PM1_CNT_SLP_EN | SLP_TYP_SUSPEND_TO_DISK << 10;
        pm.write(PM1_CNT, &s4.to_le_bytes());
        let suspends = Arc::new(AtomicUsize::new(0));
        let seen = suspends.clone();
        pm.connect_suspend_to_disk(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        pm.write(PM1_CNT, &s4.to_le_bytes());
        assert_eq!(suspends.load(Ordering::SeqCst), 1);
        assert_eq!(poweroffs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn other_sleep_types_do_not_power_off() {
        let (pm, poweroffs) = pm();
        pm.write(PM1_CNT, &(PM1_CNT_SLP_EN | 1 << 10).to_le_bytes());
        assert_eq!(poweroffs.load(Ordering::SeqCst), 0);
    }

    fn sci_probe(pm: &PowerManagement) -> Arc<Mutex<Vec<bool>>> {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let seen = levels.clone();
        pm.connect_sci(Box::new(move |level| seen.lock().unwrap().push(level)));
        levels
    }

    fn read16(pm: &PowerManagement, offset: u16) -> u16 {
        let mut data = [0u8; 2];
        pm.read(offset, &mut data);
        u16::from_le_bytes(data)
    }

    #[test]
    fn power_button_needs_pwrbtn_en_and_raises_sci_until_acknowledged() {
        let (pm, poweroffs) = pm();
        let levels = sci_probe(&pm);
        pm.press_power_button();
        assert_eq!(
            read16(&pm, PM1_STS) & PM1_PWRBTN,
            0,
            "not enabled: the press is lost"
        );
        assert!(levels.lock().unwrap().is_empty());
        pm.write(PM1_EN, &PM1_PWRBTN.to_le_bytes());
        pm.press_power_button();
        assert_eq!(read16(&pm, PM1_STS) & PM1_PWRBTN, PM1_PWRBTN);
        assert_eq!(*levels.lock().unwrap(), [true]);
        // Writing zero bits leaves status; writing the bit clears it and drops the SCI.
        pm.write(PM1_STS, &0u16.to_le_bytes());
        assert_eq!(read16(&pm, PM1_STS) & PM1_PWRBTN, PM1_PWRBTN);
        pm.write(PM1_STS, &PM1_PWRBTN.to_le_bytes());
        assert_eq!(read16(&pm, PM1_STS) & PM1_PWRBTN, 0);
        assert_eq!(*levels.lock().unwrap(), [true, false]);
        // Disabling with the status set lowers the line too; reset clears everything.
        pm.press_power_button();
        pm.write(PM1_EN, &0u16.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), [true, false, true, false]);
        pm.write(PM1_EN, &PM1_PWRBTN.to_le_bytes());
        pm.reset();
        assert_eq!(read16(&pm, PM1_EN), 0);
        assert_eq!(read16(&pm, PM1_STS) & PM1_PWRBTN, 0);
        assert_eq!(
            *levels.lock().unwrap(),
            [true, false, true, false, true, false]
        );
        assert_eq!(poweroffs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn timer_status_reads_set_until_cleared_then_waits_for_bit_23() {
        let (pm, _) = pm();
        assert_eq!(
            read16(&pm, PM1_STS) & PM1_TMR,
            PM1_TMR,
            "set after reset, as QEMU"
        );
        pm.write(PM1_STS, &PM1_TMR.to_le_bytes());
        assert_eq!(read16(&pm, PM1_STS) & PM1_TMR, 0);
        let regs = pm.registers.lock().unwrap();
        assert_eq!(regs.overflow_at % PM_TIMER_OVERFLOW_TICKS, 0);
        assert!(regs.overflow_at > pm.ticks());
        assert!(regs.overflow_at <= pm.ticks() + PM_TIMER_OVERFLOW_TICKS);
    }

    #[test]
    fn timer_overflow_raises_the_sci_when_enabled() {
        let (pm, _) = pm();
        let pm = Arc::new(pm);
        let levels = sci_probe(&pm);
        pm.start_overflow_timer().unwrap();
        // Arm an overflow 20 ms away instead of waiting up to 2.3 s for bit 23.
        pm.write(PM1_STS, &PM1_TMR.to_le_bytes());
        pm.registers.lock().unwrap().overflow_at = pm.ticks() + 71_590;
        pm.write(PM1_EN, &PM1_TMR.to_le_bytes());
        assert!(levels.lock().unwrap().is_empty(), "not yet");
        let deadline = Instant::now() + Duration::from_secs(5);
        while levels.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*levels.lock().unwrap(), [true]);
        assert_eq!(read16(&pm, PM1_STS) & PM1_TMR, PM1_TMR);
        pm.write(PM1_STS, &PM1_TMR.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), [true, false]);
    }

    #[test]
    fn gpe0_registers_store_enables_and_clear_status_by_ones() {
        let (pm, _) = pm();
        let pm = Arc::new(pm);
        let gpe = Gpe0Block(pm.clone());
        gpe.write(2, &[0x0f, 0x01]);
        let mut data = [0u8; 4];
        gpe.read(0, &mut data);
        assert_eq!(data, [0, 0, 0x0f, 0x01]);
        gpe.write(0, &[0xff, 0xff]);
        gpe.read(0, &mut data);
        assert_eq!(data, [0, 0, 0x0f, 0x01]);
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
