//! The 8254 PIT: channel 2 as a polled delay (gate and output through port 0x61), channel 0
//! as the periodic interrupt source of the `timer` scenario.

use crate::port::{inb, outb};

/// The PIT input clock, Hz.
pub const FREQUENCY_HZ: u64 = 1_193_182;

const CHANNEL0: u16 = 0x40;
const CHANNEL2: u16 = 0x42;
const COMMAND: u16 = 0x43;
const PORT_B: u16 = 0x61;
const PORT_B_GATE2: u8 = 0x01;
const PORT_B_SPEAKER: u8 = 0x02;
const PORT_B_OUT2: u8 = 0x20;

/// Longest single channel-2 shot: 65535 ticks, about 54.9 ms.
const MAX_SHOT_US: u64 = 50_000;

/// Busy-waits at least `us` microseconds of PIT time.
pub fn delay_us(mut us: u64) {
    while us > 0 {
        let shot = us.min(MAX_SHOT_US);
        one_shot(shot * FREQUENCY_HZ / 1_000_000);
        us -= shot;
    }
}

pub fn delay_ms(ms: u64) {
    delay_us(ms * 1000);
}

/// Channel 2 in mode 0 (interrupt on terminal count): OUT2 rises after `ticks`.
fn one_shot(ticks: u64) {
    let ticks = ticks.clamp(1, 0xffff) as u16;
    // Gate on, speaker off.
    outb(PORT_B, (inb(PORT_B) & !PORT_B_SPEAKER) | PORT_B_GATE2);
    outb(COMMAND, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
    outb(CHANNEL2, ticks as u8);
    outb(CHANNEL2, (ticks >> 8) as u8);
    while inb(PORT_B) & PORT_B_OUT2 == 0 {
        core::hint::spin_loop();
    }
}

/// Channel 0 as a rate generator (mode 2) at `hz`, raising IRQ 0 each period.
pub fn start_periodic(hz: u64) {
    let divisor = (FREQUENCY_HZ / hz).clamp(1, 0xffff) as u16;
    outb(COMMAND, 0b0011_0100); // channel 0, lobyte/hibyte, mode 2, binary
    outb(CHANNEL0, divisor as u8);
    outb(CHANNEL0, (divisor >> 8) as u8);
}

/// Channel 0 in mode 0 with the longest count and no reload: one last edge, then quiet.
pub fn stop_periodic() {
    outb(COMMAND, 0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
    outb(CHANNEL0, 0xff);
    outb(CHANNEL0, 0xff);
}
