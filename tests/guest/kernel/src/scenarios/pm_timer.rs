//! `pm-timer`: the ACPI PM timer's overflow interrupt. With ACPI mode on and the SCI routed
//! as the MADT says, the kernel clears TMR_STS and sets TMR_EN: an SCI must come each time
//! bit 23 of the 24-bit, 3.579545 MHz counter changes (every 2^23 ticks, 2.34 s). Two are
//! awaited and acknowledged; the interval between them is checked in timer ticks.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::console::Dec;
use crate::ioapic::IoApic;
use crate::port::{inl, inw, outb, outw};
use crate::start_info::StartInfo;
use crate::{acpi, interrupts, kprintln, lapic, pic, pit};

const SCI_VECTOR: u8 = 0x39;
const PM1_TMR: u16 = 1 << 0;
const PM1_CNT_SCI_EN: u16 = 1 << 0;
const OVERFLOW_TICKS: u32 = 1 << 23;
const WAIT_MS: u64 = 10_000;

static PM1A_EVENT: AtomicU32 = AtomicU32::new(0);
static PM_TIMER: AtomicU32 = AtomicU32::new(0);
static SCIS: AtomicU32 = AtomicU32::new(0);
/// The PM timer value at each of the first two SCIs.
static AT: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

fn on_sci(_vector: u8) {
    let event = PM1A_EVENT.load(Ordering::Acquire) as u16;
    let now = inl(PM_TIMER.load(Ordering::Acquire) as u16) & 0x00ff_ffff;
    let status = inw(event);
    if status & PM1_TMR != 0 {
        outw(event, PM1_TMR);
        let n = SCIS.fetch_add(1, Ordering::AcqRel) as usize;
        if let Some(slot) = AT.get(n) {
            slot.store(now, Ordering::Release);
        }
        if n + 1 >= AT.len() {
            // Enough: disable the source.
            outw(event + 2, inw(event + 2) & !PM1_TMR);
        }
    }
    lapic::end_of_interrupt();
}

fn on_spurious(_vector: u8) {}

pub fn run(info: &StartInfo) {
    let Some((rsdp, _)) = acpi::find_rsdp(info) else {
        kprintln!("pm-timer: no RSDP");
        return;
    };
    let (Some(fadt_addr), Some(madt)) = (
        acpi::find_table(rsdp, b"FACP"),
        acpi::find_table(rsdp, b"APIC"),
    ) else {
        kprintln!("pm-timer: no FADT or MADT");
        return;
    };
    let fadt = acpi::fadt(fadt_addr);
    let (event, control) = (fadt.pm1a_event as u16, fadt.pm1a_control as u16);
    PM1A_EVENT.store(u32::from(event), Ordering::Release);
    PM_TIMER.store(fadt.pm_timer, Ordering::Release);
    if inw(control) & PM1_CNT_SCI_EN == 0 {
        outb(fadt.smi_command as u16, fadt.acpi_enable);
        let mut waited = 0;
        while inw(control) & PM1_CNT_SCI_EN == 0 && waited < 1000 {
            pit::delay_ms(1);
            waited += 1;
        }
    }
    interrupts::init();
    interrupts::set_handler(lapic::SPURIOUS_VECTOR, on_spurious);
    interrupts::set_handler(SCI_VECTOR, on_sci);
    lapic::init_boot_cpu();
    pic::init();
    let Some(entry) = acpi::madt_ioapic(madt) else {
        kprintln!("pm-timer: the MADT lists no ioapic");
        return;
    };
    let (gsi, flags) = acpi::isa_irq_route(madt, fadt.sci_irq as u8);
    let ioapic = IoApic::new(entry.address);
    let Some(pin) = gsi
        .checked_sub(entry.gsi_base)
        .filter(|&p| p < ioapic.pins())
    else {
        kprintln!("pm-timer: gsi not on the ioapic");
        return;
    };
    // TMR_STS reads set until first cleared (nothing armed yet); clearing arms the next
    // overflow.
    kprintln!(
        "pm-timer: tmr_sts before clearing ",
        Dec(u64::from(inw(event) & PM1_TMR))
    );
    outw(event, PM1_TMR);
    kprintln!(
        "pm-timer: tmr_sts after clearing ",
        Dec(u64::from(inw(event) & PM1_TMR))
    );
    ioapic.route(pin, SCI_VECTOR, flags, lapic::id(), false);
    outw(event + 2, inw(event + 2) | PM1_TMR);
    interrupts::enable();
    let mut waited = 0;
    while (SCIS.load(Ordering::Acquire) as usize) < AT.len() && waited < WAIT_MS {
        pit::delay_ms(1);
        waited += 1;
    }
    // Quiet once disabled: no further SCI.
    pit::delay_ms(100);
    interrupts::disable();
    let count = SCIS.load(Ordering::Acquire);
    kprintln!("pm-timer: overflow scis ", Dec(u64::from(count)));
    if count as usize >= AT.len() {
        let interval = AT[1]
            .load(Ordering::Acquire)
            .wrapping_sub(AT[0].load(Ordering::Acquire))
            & 0x00ff_ffff;
        // One overflow period apart, give or take interrupt latency (1/16 of a period).
        let close = interval.abs_diff(OVERFLOW_TICKS) < OVERFLOW_TICKS / 16;
        kprintln!(
            "pm-timer: interval is 2^23 ticks: ",
            if close { "yes" } else { "no" }
        );
    }
}
