//! The MC146818 CMOS RTC at ports 0x70 (index, bit 7 masks NMIs) and 0x71 (data): the clock
//! from host time (`-rtc base=utc`), and the NVRAM bytes QEMU's `pc` fills in for firmware
//! (memory sizes, CPU count, boot order, equipment).
//!
//! Not modelled yet (issue 5): periodic, alarm and update-ended interrupts (IRQ 8) and the
//! update-in-progress window; `-rtc` options other than the default are refused by the
//! command line.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hw::bus::PioDevice;

pub const RTC_IO_BASE: u16 = 0x70;
pub const RTC_IO_LEN: u16 = 2;

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
const REG_B_BINARY: u8 = 0x04;
const REG_B_24H: u8 = 0x02;
const REG_D_VALID_RAM: u8 = 0x80;
const HOUR_PM: u8 = 0x80;

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
}

/// The RTC and its NVRAM.
pub struct Rtc {
    state: Mutex<State>,
    now: Box<dyn Fn() -> i64 + Send + Sync>,
}

fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Rtc {
    /// An RTC on host UTC time.
    pub fn new(facts: &CmosFacts) -> Rtc {
        Rtc::with_clock(facts, Box::new(host_now))
    }

    fn with_clock(facts: &CmosFacts, now: Box<dyn Fn() -> i64 + Send + Sync>) -> Rtc {
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
        Rtc {
            state: Mutex::new(State {
                index: 0,
                nvram,
                offset: 0,
            }),
            now,
        }
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
        DateTime::from_unix((self.now)() + state.offset)
    }

    fn read_register(&self, state: &mut State, index: usize) -> u8 {
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
            REG_A => nvram[REG_A] & !REG_A_UIP,
            REG_C => {
                // Reading C acknowledges the (never raised) interrupt flags.
                let value = nvram[REG_C];
                state.nvram[REG_C] = 0;
                value
            }
            _ => nvram[index],
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
                state.offset = time.to_unix() - (self.now)();
            }
            REG_A => state.nvram[REG_A] = value & !REG_A_UIP,
            REG_B => state.nvram[REG_B] = value,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let rtc = Rtc::with_clock(&facts(), Box::new(|| 1_795_316_005));
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
        let small = Rtc::with_clock(&facts(), Box::new(|| 0));
        // 128 MiB: 127 MiB extended is capped at 0xffff KiB; (128 - 16) MiB / 64 KiB = 0x0700.
        assert_eq!((read(&small, 0x17), read(&small, 0x18)), (0xff, 0xff));
        assert_eq!((read(&small, 0x34), read(&small, 0x35)), (0x00, 0x07));
        write(&small, 0x40, 0x5a);
        assert_eq!(read(&small, 0x40), 0x5a);
        write(&small, 0x0d, 0);
        assert_eq!(read(&small, 0x0d), 0x80);
    }
}
