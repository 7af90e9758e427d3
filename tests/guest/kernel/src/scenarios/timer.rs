//! `timer`: interrupts from the PIT (channel 0) through the 8259 PIC, then through the I/O
//! APIC as the MADT routes ISA IRQ 0, then from the local APIC timer; each source counted to
//! a fixed number of ticks and then stopped. Only counts are printed, never rates, so the
//! output is the same however fast the machine runs.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::console::{Dec, Hex};
use crate::ioapic::IoApic;
use crate::start_info::StartInfo;
use crate::{acpi, interrupts, kprintln, lapic, pic, pit};

const TICKS: u32 = 50;
const PIT_HZ: u64 = 1000;
const PIT_IRQ: u8 = 0;
const IOAPIC_PIT_VECTOR: u8 = 0x30;
/// 1 ms at the 1 GHz APIC clock (QEMU's and KVM's) divided by 16.
const LAPIC_PERIOD_COUNT: u32 = 62_500;
const LAPIC_TIMER_VECTOR: u8 = 0x40;
/// How long the ticks may take to arrive before the scenario gives up.
const TIMEOUT_MS: u64 = 5000;
/// After a source is stopped, how long it must stay quiet.
const QUIET_MS: u64 = 20;

static PIC_TICKS: AtomicU32 = AtomicU32::new(0);
static IOAPIC_TICKS: AtomicU32 = AtomicU32::new(0);
static LAPIC_TICKS: AtomicU32 = AtomicU32::new(0);
static IOAPIC_BASE: AtomicU64 = AtomicU64::new(0);
static IOAPIC_PIT_PIN: AtomicU32 = AtomicU32::new(0);

// Each handler masks its source itself when the count is reached, so the count stops
// exactly there and any later tick shows up as an excess.

fn on_pit_via_pic(_vector: u8) {
    if PIC_TICKS.fetch_add(1, Ordering::AcqRel) + 1 >= TICKS {
        pic::mask_irq(PIT_IRQ);
    }
    pic::end_of_interrupt(PIT_IRQ);
}

fn on_pit_via_ioapic(_vector: u8) {
    if IOAPIC_TICKS.fetch_add(1, Ordering::AcqRel) + 1 >= TICKS {
        IoApic::new(IOAPIC_BASE.load(Ordering::Acquire))
            .mask(IOAPIC_PIT_PIN.load(Ordering::Acquire));
    }
    lapic::end_of_interrupt();
}

fn on_lapic_timer(_vector: u8) {
    if LAPIC_TICKS.fetch_add(1, Ordering::AcqRel) + 1 >= TICKS {
        lapic::stop_timer();
    }
    lapic::end_of_interrupt();
}

fn on_spurious(_vector: u8) {}

/// What a source did: ticks counted once it was stopped, and ticks after a quiet period.
struct Ticks {
    at_stop: u32,
    after_quiet: u32,
}

/// Lets interrupts in until `counter` reaches `TICKS` or the timeout passes.
fn wait_for_ticks(counter: &AtomicU32) -> Ticks {
    interrupts::enable();
    let mut waited = 0;
    while counter.load(Ordering::Acquire) < TICKS && waited < TIMEOUT_MS {
        pit::delay_ms(1);
        waited += 1;
    }
    // An interrupt the controller had already accepted when the handler masked the source
    // cannot be withdrawn and arrives right after; let it land before judging quietness.
    pit::delay_ms(1);
    let at_stop = counter.load(Ordering::Acquire);
    // Any tick still coming from the stopped source would show up here.
    pit::delay_ms(QUIET_MS);
    interrupts::disable();
    Ticks {
        at_stop,
        after_quiet: counter.load(Ordering::Acquire),
    }
}

pub fn run(info: &StartInfo) {
    interrupts::init();
    interrupts::set_handler(lapic::SPURIOUS_VECTOR, on_spurious);
    lapic::init_boot_cpu();
    pic::init();

    pit_via_pic();
    pit_via_ioapic(info);
    lapic_timer();
}

fn pit_via_pic() {
    interrupts::set_handler(pic::VECTOR_BASE + PIT_IRQ, on_pit_via_pic);
    kprintln!(
        "timer: pit channel 0 at ",
        Dec(PIT_HZ),
        " Hz on irq 0 via 8259 vector ",
        Hex(u64::from(pic::VECTOR_BASE + PIT_IRQ), 2)
    );
    pit::start_periodic(PIT_HZ);
    pic::unmask(PIT_IRQ);
    let ticks = wait_for_ticks(&PIC_TICKS);
    pit::stop_periodic();
    report("pit via 8259", ticks);
}

fn pit_via_ioapic(info: &StartInfo) {
    let Some(madt) = acpi::find_rsdp(info).and_then(|(rsdp, _)| acpi::find_table(rsdp, b"APIC"))
    else {
        kprintln!("timer: no MADT, cannot route irq 0 through the ioapic");
        return;
    };
    let Some(entry) = acpi::madt_ioapic(madt) else {
        kprintln!("timer: the MADT lists no ioapic");
        return;
    };
    let (gsi, flags) = acpi::isa_irq_route(madt, PIT_IRQ);
    let ioapic = IoApic::new(entry.address);
    let pins = ioapic.pins();
    kprintln!(
        "timer: madt ioapic id ",
        Dec(u64::from(entry.id)),
        " at ",
        Hex(entry.address, 8),
        " gsi base ",
        Dec(u64::from(entry.gsi_base)),
        ", ",
        Dec(u64::from(pins)),
        " pins; irq 0 -> gsi ",
        Dec(u64::from(gsi)),
        " flags ",
        Hex(u64::from(flags), 4)
    );
    let Some(pin) = gsi.checked_sub(entry.gsi_base).filter(|&p| p < pins) else {
        kprintln!("timer: gsi ", Dec(u64::from(gsi)), " is not on the ioapic");
        return;
    };
    IOAPIC_BASE.store(entry.address, Ordering::Release);
    IOAPIC_PIT_PIN.store(pin, Ordering::Release);
    interrupts::set_handler(IOAPIC_PIT_VECTOR, on_pit_via_ioapic);
    kprintln!(
        "timer: pit channel 0 at ",
        Dec(PIT_HZ),
        " Hz via ioapic pin ",
        Dec(u64::from(pin)),
        " vector ",
        Hex(u64::from(IOAPIC_PIT_VECTOR), 2)
    );
    pit::start_periodic(PIT_HZ);
    ioapic.route(pin, IOAPIC_PIT_VECTOR, flags, lapic::id(), false);
    let ticks = wait_for_ticks(&IOAPIC_TICKS);
    pit::stop_periodic();
    ioapic.mask(pin);
    report("pit via ioapic", ticks);
}

fn lapic_timer() {
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

fn report(source: &str, ticks: Ticks) {
    // One tick in flight at the moment of masking is allowed (see `wait_for_ticks`).
    let stopped_in_time = ticks.at_stop == TICKS || ticks.at_stop == TICKS + 1;
    if stopped_in_time && ticks.after_quiet == ticks.at_stop {
        kprintln!(
            "timer: ",
            source,
            " reached ",
            Dec(u64::from(TICKS)),
            " ticks, then quiet"
        );
    } else if ticks.at_stop < TICKS {
        kprintln!(
            "timer: ",
            source,
            " only ",
            Dec(u64::from(ticks.at_stop)),
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
            Dec(u64::from(ticks.after_quiet)),
            " ticks"
        );
    }
}
