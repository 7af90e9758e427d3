//! `powerbutton`: the ACPI fixed-feature power button. The kernel reads the PM block's ports
//! from the FADT and the S5 sleep type from the DSDT, enters ACPI mode through SMI_CMD,
//! routes the SCI through the I/O APIC as the MADT says, enables PWRBTN_EN and waits; the
//! host presses the button (monitor `system_powerdown`). On the SCI it acknowledges
//! PWRBTN_STS and powers off through S5, as an OS does.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::console::{Dec, Hex};
use crate::ioapic::IoApic;
use crate::port::{inw, outb, outw};
use crate::start_info::StartInfo;
use crate::{acpi, interrupts, kprintln, lapic, pic, pit};

const SCI_VECTOR: u8 = 0x39;
const PM1_PWRBTN: u16 = 1 << 8;
const PM1_CNT_SCI_EN: u16 = 1 << 0;
const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// How long the host has to press the button.
const WAIT_MS: u64 = 60_000;

/// PM1a event block (status at +0, enable at +2), for the handler.
static PM1A_EVENT: AtomicU32 = AtomicU32::new(0);
/// PM1 status seen by the SCI handler (masked to the power button), +1 per SCI.
static SCI_STATUS: AtomicU32 = AtomicU32::new(0);
static SCI_COUNT: AtomicU32 = AtomicU32::new(0);
static STATUS_AFTER_CLEAR: AtomicU64 = AtomicU64::new(u64::MAX);

fn on_sci(_vector: u8) {
    let event = PM1A_EVENT.load(Ordering::Acquire) as u16;
    let status = inw(event);
    SCI_STATUS.store(u32::from(status & PM1_PWRBTN), Ordering::Release);
    // Acknowledge before the EOI: the SCI is level-triggered.
    outw(event, status & PM1_PWRBTN);
    STATUS_AFTER_CLEAR.store(u64::from(inw(event) & PM1_PWRBTN), Ordering::Release);
    SCI_COUNT.fetch_add(1, Ordering::AcqRel);
    lapic::end_of_interrupt();
}

fn on_spurious(_vector: u8) {}

pub fn run(info: &StartInfo) {
    let Some((rsdp, _)) = acpi::find_rsdp(info) else {
        kprintln!("powerbutton: no RSDP");
        return;
    };
    let (Some(fadt_addr), Some(madt)) = (
        acpi::find_table(rsdp, b"FACP"),
        acpi::find_table(rsdp, b"APIC"),
    ) else {
        kprintln!("powerbutton: no FADT or MADT");
        return;
    };
    let fadt = acpi::fadt(fadt_addr);
    kprintln!(
        "powerbutton: fadt sci ",
        Dec(u64::from(fadt.sci_irq)),
        " smi_cmd ",
        Hex(u64::from(fadt.smi_command), 2),
        " pm1a_evt ",
        Hex(u64::from(fadt.pm1a_event), 4),
        " pm1a_cnt ",
        Hex(u64::from(fadt.pm1a_control), 4),
        " pm_tmr ",
        Hex(u64::from(fadt.pm_timer), 4),
        " gpe0 ",
        Hex(u64::from(fadt.gpe0), 4),
        " flags ",
        Hex(u64::from(fadt.flags), 8)
    );
    let Some(s5) = acpi::s5_sleep_type(fadt.dsdt) else {
        kprintln!("powerbutton: the DSDT has no valid \\_S5");
        return;
    };
    kprintln!("powerbutton: dsdt \\_S5 slp_typ ", Dec(u64::from(s5)));
    let (event, control) = (fadt.pm1a_event as u16, fadt.pm1a_control as u16);
    PM1A_EVENT.store(u32::from(event), Ordering::Release);

    if inw(control) & PM1_CNT_SCI_EN == 0 {
        outb(fadt.smi_command as u16, fadt.acpi_enable);
        let mut waited = 0;
        while inw(control) & PM1_CNT_SCI_EN == 0 && waited < 1000 {
            pit::delay_ms(1);
            waited += 1;
        }
    }
    kprintln!(
        "powerbutton: acpi mode, sci_en ",
        Dec(u64::from(inw(control) & PM1_CNT_SCI_EN))
    );

    interrupts::init();
    interrupts::set_handler(lapic::SPURIOUS_VECTOR, on_spurious);
    interrupts::set_handler(SCI_VECTOR, on_sci);
    lapic::init_boot_cpu();
    pic::init();
    let Some(entry) = acpi::madt_ioapic(madt) else {
        kprintln!("powerbutton: the MADT lists no ioapic");
        return;
    };
    let (gsi, flags) = acpi::isa_irq_route(madt, fadt.sci_irq as u8);
    kprintln!(
        "powerbutton: sci irq ",
        Dec(u64::from(fadt.sci_irq)),
        " -> gsi ",
        Dec(u64::from(gsi)),
        " flags ",
        Hex(u64::from(flags), 4)
    );
    let ioapic = IoApic::new(entry.address);
    let Some(pin) = gsi
        .checked_sub(entry.gsi_base)
        .filter(|&p| p < ioapic.pins())
    else {
        kprintln!("powerbutton: gsi not on the ioapic");
        return;
    };
    // A stale press (none is expected) is cleared before enabling.
    outw(event, PM1_PWRBTN);
    outw(event + 2, inw(event + 2) | PM1_PWRBTN);
    ioapic.route(pin, SCI_VECTOR, flags, lapic::id(), false);
    kprintln!(
        "powerbutton: pwrbtn_en ",
        Dec(u64::from((inw(event + 2) & PM1_PWRBTN) >> 8)),
        ", waiting for the power button"
    );

    interrupts::enable();
    let mut waited = 0;
    while SCI_COUNT.load(Ordering::Acquire) == 0 && waited < WAIT_MS {
        pit::delay_ms(1);
        waited += 1;
    }
    interrupts::disable();
    if SCI_COUNT.load(Ordering::Acquire) == 0 {
        kprintln!("powerbutton: no SCI came");
        return;
    }
    kprintln!(
        "powerbutton: sci, pwrbtn_sts ",
        Dec(u64::from(SCI_STATUS.load(Ordering::Acquire) >> 8)),
        ", after acknowledging ",
        Dec(STATUS_AFTER_CLEAR.load(Ordering::Acquire) >> 8)
    );
    kprintln!("powerbutton: powering off through S5");
    let value = (inw(control) & !(7 << 10)) | (u16::from(s5) << 10) | PM1_CNT_SLP_EN;
    outw(control, value);
    pit::delay_ms(2000);
    kprintln!("powerbutton: S5 did not power the machine off");
}
