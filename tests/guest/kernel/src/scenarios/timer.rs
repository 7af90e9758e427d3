//! `timer`: PIT channel 0 interrupts through the 8259 PIC, then local APIC timer interrupts,
//! each counted to a fixed number. Only counts are printed, never rates, so the output is
//! the same however fast the machine runs.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::console::{Dec, Hex};
use crate::{interrupts, kprintln, lapic, pic, pit};

const TICKS: u32 = 50;
const PIT_HZ: u64 = 1000;
const PIT_IRQ: u8 = 0;
/// 1 ms at the 1 GHz APIC clock (QEMU's and KVM's) divided by 16.
const LAPIC_PERIOD_COUNT: u32 = 62_500;
const LAPIC_TIMER_VECTOR: u8 = 0x40;
/// How long the ticks may take to arrive before the scenario gives up.
const TIMEOUT_MS: u64 = 5000;
/// After a source is stopped, how long it must stay quiet.
const QUIET_MS: u64 = 20;

static PIT_TICKS: AtomicU32 = AtomicU32::new(0);
static LAPIC_TICKS: AtomicU32 = AtomicU32::new(0);

fn on_pit(_vector: u8) {
    // Masked from inside the handler at the target, so the count stops exactly there.
    if PIT_TICKS.fetch_add(1, Ordering::AcqRel) + 1 >= TICKS {
        pic::mask_irq(PIT_IRQ);
    }
    pic::end_of_interrupt(PIT_IRQ);
}

fn on_lapic_timer(_vector: u8) {
    if LAPIC_TICKS.fetch_add(1, Ordering::AcqRel) + 1 >= TICKS {
        lapic::stop_timer();
    }
    lapic::end_of_interrupt();
}

fn on_spurious(_vector: u8) {}

/// Lets interrupts in until `counter` reaches `TICKS` or the timeout passes; the result.
fn wait_for_ticks(counter: &AtomicU32) -> u32 {
    interrupts::enable();
    let mut waited = 0;
    while counter.load(Ordering::Acquire) < TICKS && waited < TIMEOUT_MS {
        pit::delay_ms(1);
        waited += 1;
    }
    // Any tick still pending on the stopped source would show up here.
    pit::delay_ms(QUIET_MS);
    interrupts::disable();
    counter.load(Ordering::Acquire)
}

pub fn run(_info: &crate::start_info::StartInfo) {
    interrupts::init();
    interrupts::set_handler(lapic::SPURIOUS_VECTOR, on_spurious);
    lapic::init_boot_cpu();
    pic::init();

    interrupts::set_handler(pic::VECTOR_BASE + PIT_IRQ, on_pit);
    pit::start_periodic(PIT_HZ);
    kprintln!(
        "timer: pit channel 0 at ",
        Dec(PIT_HZ),
        " Hz on irq 0 via 8259 vector ",
        Hex(u64::from(pic::VECTOR_BASE + PIT_IRQ), 2)
    );
    pic::unmask(PIT_IRQ);
    let ticks = wait_for_ticks(&PIT_TICKS);
    pit::stop_periodic();
    report("pit", ticks);

    interrupts::set_handler(LAPIC_TIMER_VECTOR, on_lapic_timer);
    kprintln!(
        "timer: lapic periodic, divide 16, count ",
        Dec(u64::from(LAPIC_PERIOD_COUNT)),
        ", vector ",
        Hex(u64::from(LAPIC_TIMER_VECTOR), 2)
    );
    lapic::start_periodic_timer(LAPIC_TIMER_VECTOR, LAPIC_PERIOD_COUNT);
    let ticks = wait_for_ticks(&LAPIC_TICKS);
    lapic::stop_timer();
    report("lapic", ticks);
}

fn report(source: &str, ticks: u32) {
    if ticks == TICKS {
        kprintln!(
            "timer: ",
            source,
            " counted ",
            Dec(u64::from(ticks)),
            " ticks, then quiet"
        );
    } else if ticks < TICKS {
        kprintln!(
            "timer: ",
            source,
            " only ",
            Dec(u64::from(ticks)),
            " of ",
            Dec(u64::from(TICKS)),
            " ticks in ",
            Dec(TIMEOUT_MS),
            " ms"
        );
    } else {
        kprintln!(
            "timer: ",
            source,
            " kept ticking after it was stopped: ",
            Dec(u64::from(ticks)),
            " ticks"
        );
    }
}
