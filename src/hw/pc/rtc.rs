//! The MC146818 CMOS RTC at ports 0x70 (index, bit 7 masks NMIs) and 0x71 (data): the clock
//! from host time (`-rtc base=utc`), and the NVRAM bytes QEMU's `pc` fills in for firmware
//! (memory sizes, CPU count, boot order, equipment).
//!
//! Interrupts on IRQ 8: periodic (rate from register A), update-ended (every second) and
//! alarm, flagged in register C (cleared by reading it), raised when enabled in register B.
//! A ticker thread wakes for the next due event. Register A's update-in-progress bit is set
//! during the last 244 µs of every second, as on the chip.
//!
//! The time comes from an [`RtcTimeSource`] (`-rtc base=...,clock=...`).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::rtc_clock::RtcTimeSource;

use crate::hw::bus::PioDevice;

pub const RTC_IO_BASE: u16 = 0x70;
pub const RTC_IO_LEN: u16 = 2;
/// The ISA interrupt line of the RTC.
pub const RTC_IRQ: u32 = 8;

const SECONDS: usize = 0x00;
const MINUTES: usize = 0x02;
const HOURS: usize = 0x04;
const DAY_OF_WEEK: usize = 0x06;
const DAY_OF_MONTH: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const CENTURY: usize = 0x32;

const REG_A_UIP: u8 = 0x80;
const REG_A_RATE: u8 = 0x0f;
const REG_B_SET: u8 = 0x80;
const REG_B_PIE: u8 = 0x40;
const REG_B_AIE: u8 = 0x20;
const REG_B_UIE: u8 = 0x10;
const REG_C_IRQF: u8 = 0x80;
const REG_C_PF: u8 = 0x40;
const REG_C_AF: u8 = 0x20;
const REG_C_UF: u8 = 0x10;
const REG_B_BINARY: u8 = 0x04;
const REG_B_24H: u8 = 0x02;
const REG_D_VALID_RAM: u8 = 0x80;
const HOUR_PM: u8 = 0x80;
const SECONDS_ALARM: usize = 0x01;
const MINUTES_ALARM: usize = 0x03;
const HOURS_ALARM: usize = 0x05;
/// An alarm byte with both top bits set matches any value.
const ALARM_DONT_CARE: u8 = 0xc0;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// The update cycle: UIP is set this long before each second ends.
const UPDATE_IN_PROGRESS_NANOS: i64 = 244_000;
/// The time base: periodic rates are divisions of 32.768 kHz.
const BASE_HZ: i64 = 32_768;

// NVRAM bytes of QEMU's pc_cmos_init.
const EQUIPMENT: usize = 0x14;
const BASE_MEMORY_LOW: usize = 0x15;
const EXTENDED_MEMORY_LOW: usize = 0x17;
const EXTENDED_MEMORY_LOW_COPY: usize = 0x30;
const BOOT_ORDER_FIRST: usize = 0x3d;
const BOOT_ORDER_THIRD: usize = 0x38;
const MEMORY_ABOVE_16M: usize = 0x34;
const MEMORY_ABOVE_4G: usize = 0x5b;
const CPU_COUNT_MINUS_ONE: usize = 0x5f;
/// FPU present, PS/2 mouse present.
const EQUIPMENT_FPU_AND_MOUSE: u8 = 0x06;

/// What QEMU's `pc` machine tells the firmware through CMOS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmosFacts {
    pub ram_below_4g: u64,
    pub ram_above_4g: u64,
    pub cpus: u32,
    /// `-boot order=` letters, QEMU's default "cad".
    pub boot_order: String,
}

/// The boot device codes of the CMOS boot order bytes.
fn boot_code(letter: char) -> u8 {
    match letter {
        'a' => 1,
        'c' => 2,
        'd' => 3,
        'n' => 4,
        _ => 0,
    }
}

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Days since 1970-01-01 to a proleptic Gregorian date (era-based conversion).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl DateTime {
    fn from_unix(seconds: i64) -> DateTime {
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: second_of_day / 3600,
            minute: second_of_day / 60 % 60,
            second: second_of_day % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }
}

struct State {
    index: u8,
    nvram: [u8; 128],
    /// Guest time minus host time, in seconds (the guest may set the clock).
    offset: i64,
    /// Host time (ns) of the next periodic interrupt, when the rate is not zero.
    next_periodic: Option<i64>,
    /// Host time (ns) of the next update cycle end (a whole second).
    next_update: i64,
}

/// Raises IRQ 8 (an edge; the flags stay in register C until it is read).
pub type RtcIrq = Box<dyn Fn() + Send + Sync>;

/// The RTC and its NVRAM.
pub struct Rtc {
    state: Mutex<State>,
    /// Wakes the ticker when the guest changed what it waits for.
    changed: Condvar,
    /// Host time in nanoseconds since the Unix epoch.
    now: Box<dyn Fn() -> i64 + Send + Sync>,
    irq: RtcIrq,
}

/// The periodic interrupt period for register A's rate select, if enabled.
fn periodic_period(reg_a: u8) -> Option<i64> {
    let rate = i64::from(reg_a & REG_A_RATE);
    // Rates 1 and 2 are the same as 8 and 9 (256 and 128 Hz) on the 32.768 kHz base.
    let rate = match rate {
        0 => return None,
        1 | 2 => rate + 7,
        _ => rate,
    };
    Some(NANOS_PER_SECOND * (1 << (rate - 1)) / BASE_HZ)
}

impl Rtc {
    /// An RTC showing `time`'s time and raising `irq`; call [`Rtc::start_ticker`] for its
    /// interrupts.
    pub fn new(facts: &CmosFacts, irq: RtcIrq, time: RtcTimeSource) -> Rtc {
        Rtc::with_clock(facts, Box::new(move || time.now_ns()), irq)
    }

    fn with_clock(facts: &CmosFacts, now: Box<dyn Fn() -> i64 + Send + Sync>, irq: RtcIrq) -> Rtc {
        let mut nvram = [0u8; 128];
        nvram[REG_A] = 0x26;
        nvram[REG_B] = REG_B_24H;
        nvram[REG_D] = REG_D_VALID_RAM;
        nvram[EQUIPMENT] = EQUIPMENT_FPU_AND_MOUSE;
        nvram[BASE_MEMORY_LOW..BASE_MEMORY_LOW + 2].copy_from_slice(&640u16.to_le_bytes());
        let extended_kib = (facts.ram_below_4g / 1024).saturating_sub(1024).min(65535) as u16;
        nvram[EXTENDED_MEMORY_LOW..EXTENDED_MEMORY_LOW + 2]
            .copy_from_slice(&extended_kib.to_le_bytes());
        nvram[EXTENDED_MEMORY_LOW_COPY..EXTENDED_MEMORY_LOW_COPY + 2]
            .copy_from_slice(&extended_kib.to_le_bytes());
        let above_16m = (facts.ram_below_4g.saturating_sub(16 << 20) >> 16).min(65535) as u16;
        nvram[MEMORY_ABOVE_16M..MEMORY_ABOVE_16M + 2].copy_from_slice(&above_16m.to_le_bytes());
        let above_4g = (facts.ram_above_4g >> 16).to_le_bytes();
        nvram[MEMORY_ABOVE_4G..MEMORY_ABOVE_4G + 3].copy_from_slice(&above_4g[..3]);
        nvram[CPU_COUNT_MINUS_ONE] = facts.cpus.saturating_sub(1) as u8;
        let codes: Vec<u8> = facts.boot_order.chars().map(boot_code).collect();
        let code = |i: usize| codes.get(i).copied().unwrap_or(0);
        nvram[BOOT_ORDER_FIRST] = code(1) << 4 | code(0);
        // Bit 0 clear: check the floppy boot signature (QEMU's default).
        nvram[BOOT_ORDER_THIRD] = code(2) << 4;
        let next_update = (now() / NANOS_PER_SECOND + 1) * NANOS_PER_SECOND;
        Rtc {
            state: Mutex::new(State {
                index: 0,
                nvram,
                offset: 0,
                next_periodic: None,
                next_update,
            }),
            changed: Condvar::new(),
            now,
            irq,
        }
    }

    /// Sets a CMOS byte as the board does after its devices exist (QEMU's
    /// `mc146818rtc_set_cmos_data`, used for the IDE disk bytes).
    pub fn set_cmos_data(&self, index: u8, value: u8) {
        if let Some(byte) = self.state.lock().unwrap().nvram.get_mut(usize::from(index)) {
            *byte = value;
        }
    }

    /// Starts the thread that delivers the RTC's interrupts; it ends with the RTC.
    pub fn start_ticker(self: &Arc<Rtc>) -> std::io::Result<()> {
        let rtc: Weak<Rtc> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("rtc".into())
            .spawn(move || loop {
                let Some(rtc) = rtc.upgrade() else { return };
                let mut state = rtc.state.lock().unwrap();
                let now = (rtc.now)();
                let deadline = rtc.service(&mut state, now);
                // Wake at least once a second to notice the RTC is gone.
                let wait = (deadline - now).clamp(0, NANOS_PER_SECOND);
                let _ = rtc
                    .changed
                    .wait_timeout(state, Duration::from_nanos(wait as u64))
                    .unwrap();
            })
            .map(|_| ())
    }

    /// Sets `flags` in register C and raises IRQ 8 if one of them is enabled and no
    /// interrupt is pending already.
    fn flag(&self, state: &mut State, flags: u8) {
        let enabled = state.nvram[REG_B] & (REG_B_PIE | REG_B_AIE | REG_B_UIE);
        let was_pending = state.nvram[REG_C] & REG_C_IRQF != 0;
        state.nvram[REG_C] |= flags;
        if flags & enabled != 0 && !was_pending {
            state.nvram[REG_C] |= REG_C_IRQF;
            (self.irq)();
        }
    }

    /// Delivers every event due at host time `now` and returns when the next one is due.
    fn service(&self, state: &mut State, now: i64) -> i64 {
        // As on QEMU, the periodic timer runs only while its interrupt is enabled.
        let period =
            periodic_period(state.nvram[REG_A]).filter(|_| state.nvram[REG_B] & REG_B_PIE != 0);
        match (period, state.next_periodic) {
            (None, _) => state.next_periodic = None,
            (Some(period), None) => state.next_periodic = Some(now + period),
            (Some(period), Some(due)) if now >= due => {
                self.flag(state, REG_C_PF);
                // Ticks missed while nobody looked are not replayed.
                let missed = (now - due) / period;
                state.next_periodic = Some(due + (missed + 1) * period);
            }
            _ => {}
        }
        if now >= state.next_update {
            state.next_update = (now / NANOS_PER_SECOND + 1) * NANOS_PER_SECOND;
            if state.nvram[REG_B] & REG_B_SET == 0 {
                let mut flags = REG_C_UF;
                if self.alarm_matches(state) {
                    flags |= REG_C_AF;
                }
                self.flag(state, flags);
            }
        }
        state
            .next_periodic
            .map_or(state.next_update, |p| p.min(state.next_update))
    }

    fn alarm_matches(&self, state: &State) -> bool {
        [
            (SECONDS_ALARM, SECONDS),
            (MINUTES_ALARM, MINUTES),
            (HOURS_ALARM, HOURS),
        ]
        .into_iter()
        .all(|(alarm, current)| {
            let alarm = state.nvram[alarm];
            alarm & ALARM_DONT_CARE == ALARM_DONT_CARE
                || alarm == self.time_register(state, current)
        })
    }

    fn encode(nvram: &[u8; 128], value: u32) -> u8 {
        if nvram[REG_B] & REG_B_BINARY != 0 {
            value as u8
        } else {
            (((value / 10) << 4) | (value % 10)) as u8
        }
    }

    fn decode(nvram: &[u8; 128], value: u8) -> u32 {
        if nvram[REG_B] & REG_B_BINARY != 0 {
            u32::from(value)
        } else {
            u32::from(value >> 4) * 10 + u32::from(value & 0x0f)
        }
    }

    fn time(&self, state: &State) -> DateTime {
        DateTime::from_unix((self.now)().div_euclid(NANOS_PER_SECOND) + state.offset)
    }

    /// A clock register as the guest reads it.
    fn time_register(&self, state: &State, index: usize) -> u8 {
        let nvram = &state.nvram;
        let time = || self.time(state);
        match index {
            SECONDS => Self::encode(nvram, time().second),
            MINUTES => Self::encode(nvram, time().minute),
            HOURS => {
                let hour = time().hour;
                if nvram[REG_B] & REG_B_24H != 0 {
                    Self::encode(nvram, hour)
                } else {
                    let twelve = if hour % 12 == 0 { 12 } else { hour % 12 };
                    Self::encode(nvram, twelve) | if hour >= 12 { HOUR_PM } else { 0 }
                }
            }
            DAY_OF_WEEK => Self::encode(nvram, time().weekday + 1),
            DAY_OF_MONTH => Self::encode(nvram, time().day),
            MONTH => Self::encode(nvram, time().month),
            YEAR => Self::encode(nvram, time().year.rem_euclid(100) as u32),
            CENTURY => Self::encode(nvram, time().year.div_euclid(100) as u32),
            _ => nvram[index],
        }
    }

    fn read_register(&self, state: &mut State, index: usize) -> u8 {
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                self.time_register(state, index)
            }
            REG_A => {
                let into_second = (self.now)().rem_euclid(NANOS_PER_SECOND);
                let updating = state.nvram[REG_B] & REG_B_SET == 0
                    && into_second >= NANOS_PER_SECOND - UPDATE_IN_PROGRESS_NANOS;
                (state.nvram[REG_A] & !REG_A_UIP) | if updating { REG_A_UIP } else { 0 }
            }
            REG_C => {
                // Bring the flags up to date, then reading acknowledges them.
                let now = (self.now)();
                self.service(state, now);
                let value = state.nvram[REG_C];
                state.nvram[REG_C] = 0;
                value
            }
            _ => state.nvram[index],
        }
    }

    fn write_register(&self, state: &mut State, index: usize, value: u8) {
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                let mut time = self.time(state);
                let nvram = &state.nvram;
                let number = |v: u8| Self::decode(nvram, v);
                match index {
                    SECONDS => time.second = number(value).min(59),
                    MINUTES => time.minute = number(value).min(59),
                    HOURS => {
                        time.hour = if nvram[REG_B] & REG_B_24H != 0 {
                            number(value).min(23)
                        } else {
                            let hour = number(value & !HOUR_PM) % 12;
                            hour + if value & HOUR_PM != 0 { 12 } else { 0 }
                        }
                    }
                    DAY_OF_MONTH => time.day = number(value).clamp(1, 31),
                    MONTH => time.month = number(value).clamp(1, 12),
                    YEAR => {
                        time.year = time.year.div_euclid(100) * 100 + i64::from(number(value) % 100)
                    }
                    CENTURY => {
                        time.year = i64::from(number(value)) * 100 + time.year.rem_euclid(100)
                    }
                    // The weekday follows from the date.
                    _ => {}
                }
                state.offset = time.to_unix() - (self.now)().div_euclid(NANOS_PER_SECOND);
            }
            REG_A => {
                state.nvram[REG_A] = value & !REG_A_UIP;
                // A new rate starts counting now.
                state.next_periodic = None;
                self.changed.notify_all();
            }
            REG_B => {
                state.nvram[REG_B] = value;
                self.changed.notify_all();
            }
            // C and D are read-only.
            REG_C | REG_D => {}
            _ => state.nvram[index] = value,
        }
    }
}

impl PioDevice for Rtc {
    fn read(&self, offset: u16, data: &mut [u8]) {
        let mut state = self.state.lock().unwrap();
        data.fill(0xff);
        if offset == 1 {
            let index = usize::from(state.index);
            data[0] = self.read_register(&mut state, index);
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        match offset {
            // Bit 7 of the index masks NMIs on a PC; KVM delivers none from here.
            0 => state.index = data[0] & 0x7f,
            _ => {
                let index = usize::from(state.index);
                self.write_register(&mut state, index, data[0]);
            }
        }
    }
}

impl Rtc {
    /// The RTC as QEMU's `info qtree` shows it (`mc146818rtc`; the century is kept in CMOS,
    /// so `base_year` is 0, and missed periodic ticks are dropped: `discard`).
    pub fn qdev(&self) -> crate::hw::describe::QdevDevice {
        use crate::hw::describe::{QdevDevice, QdevProp};
        QdevDevice::new("mc146818rtc")
            .gpio_out("", 1)
            .prop(QdevProp::uint("base_year", 0))
            .prop(QdevProp::uint("iobase", u64::from(RTC_IO_BASE)))
            .prop(QdevProp::uint("irq", u64::from(RTC_IRQ)))
            .prop(QdevProp::string("lost_tick_policy", "discard"))
    }
}

/// The RTC's ports under QEMU's region names: the index port is its own region inside.
pub fn io_regions() -> Vec<crate::hw::describe::PortRegion> {
    use crate::hw::describe::PortRegion;
    vec![
        PortRegion::new("rtc", RTC_IO_BASE, RTC_IO_LEN).with_child(PortRegion::new(
            "rtc-index",
            0,
            1,
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    fn facts() -> CmosFacts {
        CmosFacts {
            ram_below_4g: 128 << 20,
            ram_above_4g: 0,
            cpus: 2,
            boot_order: "cad".into(),
        }
    }

    fn read(rtc: &Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut byte = [0u8];
        rtc.read(1, &mut byte);
        byte[0]
    }

    fn write(rtc: &Rtc, index: u8, value: u8) {
        rtc.write(0, &[index]);
        rtc.write(1, &[value]);
    }

    /// An RTC on a clock the test moves, counting interrupts.
    fn rtc_on_test_clock() -> (Arc<Rtc>, Arc<AtomicI64>, Arc<AtomicUsize>) {
        let clock = Arc::new(AtomicI64::new(1_795_316_005 * NANOS_PER_SECOND));
        let irqs = Arc::new(AtomicUsize::new(0));
        let (c, i) = (clock.clone(), irqs.clone());
        let rtc = Rtc::with_clock(
            &facts(),
            Box::new(move || c.load(Ordering::SeqCst)),
            Box::new(move || {
                i.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (Arc::new(rtc), clock, irqs)
    }

    fn advance(rtc: &Rtc, clock: &AtomicI64, nanos: i64) -> i64 {
        let now = clock.fetch_add(nanos, Ordering::SeqCst) + nanos;
        rtc.service(&mut rtc.state.lock().unwrap(), now)
    }

    #[test]
    fn periodic_interrupts_follow_the_rate_and_need_register_c_reads() {
        let (rtc, clock, irqs) = rtc_on_test_clock();
        // 0x26: 32.768 kHz base, rate 6 = 1024 Hz; nothing until PIE is set.
        assert_eq!(advance(&rtc, &clock, 10_000_000) % NANOS_PER_SECOND, 0);
        write(&rtc, 0x0b, REG_B_24H | REG_B_PIE);
        let next = advance(&rtc, &clock, 0);
        assert_eq!(next - clock.load(Ordering::SeqCst), 976_562, "1/1024 s");
        advance(&rtc, &clock, 976_562);
        assert_eq!(irqs.load(Ordering::SeqCst), 1);
        // Not acknowledged: the next tick sets PF again but raises nothing.
        advance(&rtc, &clock, 976_562);
        assert_eq!(irqs.load(Ordering::SeqCst), 1);
        assert_eq!(read(&rtc, 0x0c), REG_C_IRQF | REG_C_PF);
        assert_eq!(read(&rtc, 0x0c), 0, "reading C clears it");
        advance(&rtc, &clock, 976_562);
        assert_eq!(irqs.load(Ordering::SeqCst), 2);
        // Rate 0 stops it.
        read(&rtc, 0x0c);
        write(&rtc, 0x0a, 0x20);
        advance(&rtc, &clock, 500_000_000);
        assert_eq!(irqs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn update_ended_and_alarm_interrupts_and_uip() {
        let (rtc, clock, irqs) = rtc_on_test_clock();
        // The clock reads 02:53:25; alarm at 02:53:27, any hour.
        write(&rtc, 0x01, 0x27);
        write(&rtc, 0x03, 0x53);
        write(&rtc, 0x05, 0xc0);
        write(&rtc, 0x0b, REG_B_24H | REG_B_AIE);
        advance(&rtc, &clock, NANOS_PER_SECOND);
        assert_eq!(
            irqs.load(Ordering::SeqCst),
            0,
            "UF is flagged but not enabled"
        );
        assert_eq!(read(&rtc, 0x0c), REG_C_UF);
        advance(&rtc, &clock, NANOS_PER_SECOND);
        assert_eq!(irqs.load(Ordering::SeqCst), 1);
        assert_eq!(read(&rtc, 0x0c), REG_C_IRQF | REG_C_AF | REG_C_UF);
        write(&rtc, 0x0b, REG_B_24H | REG_B_UIE);
        advance(&rtc, &clock, NANOS_PER_SECOND);
        assert_eq!(irqs.load(Ordering::SeqCst), 2);
        // Update in progress: the last 244 µs of a second.
        clock.store(1_795_316_010 * NANOS_PER_SECOND - 100_000, Ordering::SeqCst);
        assert_eq!(read(&rtc, 0x0a) & REG_A_UIP, REG_A_UIP);
        clock.store(1_795_316_010 * NANOS_PER_SECOND + 100_000, Ordering::SeqCst);
        assert_eq!(read(&rtc, 0x0a) & REG_A_UIP, 0);
    }

    #[test]
    fn the_ticker_thread_delivers_and_ends_with_the_rtc() {
        let irqs = Arc::new(AtomicUsize::new(0));
        let seen = irqs.clone();
        let rtc = Arc::new(Rtc::new(
            &facts(),
            Box::new(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
            RtcTimeSource::new(Default::default(), Default::default()),
        ));
        rtc.start_ticker().unwrap();
        // 8 Hz periodic interrupts, acknowledged as they come.
        write(&rtc, 0x0a, 0x2d);
        write(&rtc, 0x0b, REG_B_24H | REG_B_PIE);
        let start = std::time::Instant::now();
        while irqs.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_secs(5) {
            read(&rtc, 0x0c);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(irqs.load(Ordering::SeqCst) >= 3);
        assert!(start.elapsed() >= Duration::from_millis(200), "8 Hz");
        let weak = Arc::downgrade(&rtc);
        drop(rtc);
        std::thread::sleep(Duration::from_millis(1200));
        assert!(weak.upgrade().is_none(), "the ticker let go of it");
    }

    #[test]
    fn date_conversions_round_trip() {
        // 2026-11-22 02:53:25 UTC, a Sunday.
        let t = DateTime::from_unix(1_795_316_005);
        assert_eq!((t.year, t.month, t.day), (2026, 11, 22));
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (2, 53, 25, 0));
        for seconds in [0i64, 951_782_400, 1_709_164_800, 4_102_444_800] {
            assert_eq!(DateTime::from_unix(seconds).to_unix(), seconds);
        }
        // 2000-02-29 and 2024-02-29 exist.
        assert_eq!(DateTime::from_unix(951_782_400).day, 29);
    }

    #[test]
    fn clock_reads_bcd_and_binary_and_can_be_set() {
        let rtc = Rtc::with_clock(
            &facts(),
            Box::new(|| 1_795_316_005 * NANOS_PER_SECOND),
            Box::new(|| {}),
        );
        assert_eq!(read(&rtc, 0x00), 0x25);
        assert_eq!(read(&rtc, 0x02), 0x53);
        assert_eq!(read(&rtc, 0x04), 0x02);
        assert_eq!(read(&rtc, 0x06), 0x01, "Sunday is 1");
        assert_eq!(read(&rtc, 0x07), 0x22);
        assert_eq!(read(&rtc, 0x08), 0x11);
        assert_eq!(read(&rtc, 0x09), 0x26);
        assert_eq!(read(&rtc, 0x32), 0x20);
        assert_eq!(read(&rtc, 0x0a), 0x26);
        assert_eq!(read(&rtc, 0x0d), 0x80);
        write(&rtc, 0x0b, REG_B_24H | REG_B_BINARY);
        assert_eq!(read(&rtc, 0x00), 25);
        write(&rtc, 0x0b, 0);
        write(&rtc, 0x04, 0x83); // 3 PM in 12-hour BCD
        assert_eq!(read(&rtc, 0x04), 0x83);
        write(&rtc, 0x0b, REG_B_24H);
        assert_eq!(read(&rtc, 0x04), 0x15);
        write(&rtc, 0x09, 0x30);
        assert_eq!(read(&rtc, 0x09), 0x30);
        assert_eq!(read(&rtc, 0x07), 0x22);
    }

    #[test]
    fn nvram_holds_qemu_memory_and_boot_bytes() {
        let rtc = Rtc::with_clock(
            &CmosFacts {
                ram_below_4g: 3 << 30,
                ram_above_4g: 1 << 30,
                cpus: 4,
                boot_order: "cad".into(),
            },
            Box::new(|| 0),
            Box::new(|| {}),
        );
        assert_eq!((read(&rtc, 0x15), read(&rtc, 0x16)), (0x80, 0x02));
        assert_eq!((read(&rtc, 0x17), read(&rtc, 0x18)), (0xff, 0xff));
        assert_eq!((read(&rtc, 0x30), read(&rtc, 0x31)), (0xff, 0xff));
        // (3 GiB - 16 MiB) / 64 KiB = 0xbf00
        assert_eq!((read(&rtc, 0x34), read(&rtc, 0x35)), (0x00, 0xbf));
        // 1 GiB / 64 KiB = 0x4000
        assert_eq!(
            (read(&rtc, 0x5b), read(&rtc, 0x5c), read(&rtc, 0x5d)),
            (0x00, 0x40, 0x00)
        );
        assert_eq!(read(&rtc, 0x5f), 3);
        assert_eq!(read(&rtc, 0x3d), 0x12, "c then a");
        assert_eq!(read(&rtc, 0x38), 0x30, "then d");
        assert_eq!(read(&rtc, 0x14), 0x06);
        let small = Rtc::with_clock(&facts(), Box::new(|| 0), Box::new(|| {}));
        // 128 MiB: 127 MiB extended is capped at 0xffff KiB; (128 - 16) MiB / 64 KiB = 0x0700.
        assert_eq!((read(&small, 0x17), read(&small, 0x18)), (0xff, 0xff));
        assert_eq!((read(&small, 0x34), read(&small, 0x35)), (0x00, 0x07));
        write(&small, 0x40, 0x5a);
        assert_eq!(read(&small, 0x40), 0x5a);
        write(&small, 0x0d, 0);
        assert_eq!(read(&small, 0x0d), 0x80);
    }
}
