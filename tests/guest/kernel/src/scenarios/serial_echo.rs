//! `serial-echo`: reads lines from COM1, received through IRQ 4, and echoes each back with a
//! prefix until the line `quit`.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::console::Dec;
use crate::{interrupts, kprintln, lapic, pic, serial};

const COM1_IRQ: u8 = 4;
const QUIT: &[u8] = b"quit";
const LINE_MAX: usize = 128;

/// Bytes from the interrupt handler to the main loop: a single-producer, single-consumer
/// ring (the handler only advances `HEAD`, the loop only `TAIL`).
const RING_SIZE: usize = 256;
static RING: [AtomicU8; RING_SIZE] = [const { AtomicU8::new(0) }; RING_SIZE];
static HEAD: AtomicUsize = AtomicUsize::new(0);
static TAIL: AtomicUsize = AtomicUsize::new(0);

fn on_com1(_vector: u8) {
    while let Some(byte) = serial::try_read_byte() {
        let head = HEAD.load(Ordering::Relaxed);
        if head.wrapping_sub(TAIL.load(Ordering::Acquire)) < RING_SIZE {
            RING[head % RING_SIZE].store(byte, Ordering::Relaxed);
            HEAD.store(head.wrapping_add(1), Ordering::Release);
        }
    }
    pic::end_of_interrupt(COM1_IRQ);
}

fn on_spurious(_vector: u8) {}

/// The next received byte, halting until one arrives.
fn next_byte() -> u8 {
    loop {
        let tail = TAIL.load(Ordering::Relaxed);
        if HEAD.load(Ordering::Acquire) != tail {
            let byte = RING[tail % RING_SIZE].load(Ordering::Relaxed);
            TAIL.store(tail.wrapping_add(1), Ordering::Release);
            return byte;
        }
        interrupts::wait();
    }
}

pub fn run(_info: &crate::start_info::StartInfo) {
    interrupts::init();
    interrupts::set_handler(lapic::SPURIOUS_VECTOR, on_spurious);
    lapic::init_boot_cpu();
    pic::init();
    interrupts::set_handler(pic::VECTOR_BASE + COM1_IRQ, on_com1);
    pic::unmask(COM1_IRQ);
    serial::enable_receive_interrupt();
    kprintln!("serial-echo: ready, send lines, end with ", "quit");

    let mut lines = 0u64;
    let mut line = [0u8; LINE_MAX];
    let mut len = 0;
    loop {
        match next_byte() {
            b'\r' => {}
            b'\n' => {
                if &line[..len] == QUIT {
                    break;
                }
                lines += 1;
                kprintln!("echo: ", &line[..len]);
                len = 0;
            }
            byte => {
                if len < LINE_MAX {
                    line[len] = byte;
                    len += 1;
                }
            }
        }
    }
    serial::disable_interrupts();
    pic::mask_irq(COM1_IRQ);
    kprintln!("serial-echo: ", Dec(lines), " lines echoed");
}
