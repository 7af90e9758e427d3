//! `rtc`: reads the CMOS clock as firmware does (wait for the end of an update cycle, then
//! the time and date registers, decoding BCD as register B says) and prints the date and
//! the time to the minute, so that `-rtc base=...` can be compared between machines
//! without the seconds a slower boot adds.

use crate::console::Dec;
use crate::kprintln;
use crate::port::{inb, outb};

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
const REG_A_UPDATE_IN_PROGRESS: u8 = 0x80;
const REG_B_BINARY: u8 = 0x04;
const REG_B_24_HOUR: u8 = 0x02;

fn cmos(register: u8) -> u8 {
    outb(INDEX, register);
    inb(DATA)
}

fn decode(value: u8, binary: bool) -> u64 {
    if binary {
        u64::from(value)
    } else {
        u64::from(value >> 4) * 10 + u64::from(value & 0x0f)
    }
}

/// Two digits, zero-padded.
struct Two(u64);

impl crate::console::Emit for Two {
    fn emit(&self) {
        if self.0 < 10 {
            "0".emit();
        }
        Dec(self.0).emit();
    }
}

pub fn run(_info: &crate::start_info::StartInfo) {
    // The registers are stable outside an update cycle; read twice to be sure of a
    // consistent minute.
    let read = || {
        while cmos(0x0a) & REG_A_UPDATE_IN_PROGRESS != 0 {}
        [
            cmos(0x02),
            cmos(0x04),
            cmos(0x07),
            cmos(0x08),
            cmos(0x09),
            cmos(0x32),
        ]
    };
    let mut values = read();
    loop {
        let again = read();
        if again == values {
            break;
        }
        values = again;
    }
    let reg_b = cmos(0x0b);
    let binary = reg_b & REG_B_BINARY != 0;
    let [minute, hour, day, month, year, century] = values.map(|v| decode(v, binary));
    kprintln!(
        "rtc: register B ",
        Dec(u64::from(reg_b)),
        if reg_b & REG_B_24_HOUR != 0 {
            " (24-hour)"
        } else {
            " (12-hour)"
        }
    );
    kprintln!(
        "rtc: ",
        Dec(century),
        Two(year),
        "-",
        Two(month),
        "-",
        Two(day),
        " ",
        Two(hour),
        ":",
        Two(minute)
    );
}
