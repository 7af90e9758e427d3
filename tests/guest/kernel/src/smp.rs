//! Starting the application processors: INIT-SIPI-SIPI to each, one at a time, through the
//! real-mode trampoline of `boot`. Each AP records its APIC id and halts.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::boot::{ap_trampoline, AP_TRAMPOLINE_BASE};
use crate::start_info::StartInfo;
use crate::{lapic, phys, pit};

pub const MAX_CPUS: usize = 32;
const AP_STACK_SIZE: usize = 16 * 1024;
/// How long an AP may take to report in: generous, since the KVM on the project's machines
/// emulates every guest instruction.
const AP_TIMEOUT_MS: u64 = 10_000;
const POLL_MS: u64 = 1;

#[repr(C, align(16))]
struct ApStacks([[u8; AP_STACK_SIZE]; MAX_CPUS]);

#[link_section = ".stacks"]
static mut AP_STACKS: ApStacks = ApStacks([[0; AP_STACK_SIZE]; MAX_CPUS]);

/// The stack the next AP to start takes (read by the trampoline's 64-bit part).
#[no_mangle]
static ap_boot_stack_top: AtomicU64 = AtomicU64::new(0);

static ONLINE: AtomicU32 = AtomicU32::new(0);
static ONLINE_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

#[no_mangle]
extern "C" fn ap_main() -> ! {
    let id = lapic::id();
    let slot = ONLINE.load(Ordering::Acquire) as usize;
    if slot < MAX_CPUS {
        ONLINE_IDS[slot].store(id, Ordering::Release);
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::power::halt_forever()
}

/// Copies the trampoline to its page below 1 MiB, after checking that the page is free RAM.
pub fn install_trampoline(info: &StartInfo) -> Result<(), &'static str> {
    let code = ap_trampoline();
    if code.len() > 4096 {
        return Err("the AP trampoline is larger than a page");
    }
    if !info.is_free_ram(AP_TRAMPOLINE_BASE, 4096) {
        return Err("the AP trampoline page is not free RAM in the memory map");
    }
    // SAFETY: the page is RAM that the memory map offers and that holds nothing the loader
    // handed over (checked above); this kernel keeps nothing below 1 MiB.
    unsafe { phys::write_bytes(AP_TRAMPOLINE_BASE, code) };
    Ok(())
}

/// Starts the AP with `apic_id` and waits for it to report in; returns whether it did.
pub fn start_ap(apic_id: u32) -> bool {
    let before = ONLINE.load(Ordering::Acquire);
    if before as usize >= MAX_CPUS {
        return false;
    }
    // SAFETY: one stack per AP slot, handed out before the AP starts and never reused.
    let stack = unsafe { core::ptr::addr_of_mut!(AP_STACKS.0[before as usize]) };
    ap_boot_stack_top.store(stack as u64 + AP_STACK_SIZE as u64, Ordering::Release);

    let vector = (AP_TRAMPOLINE_BASE >> 12) as u8;
    lapic::send_init(apic_id);
    pit::delay_ms(10);
    for _ in 0..2 {
        lapic::send_startup(apic_id, vector);
        pit::delay_us(200);
        if ONLINE.load(Ordering::Acquire) > before {
            return true;
        }
    }
    let mut waited = 0;
    while waited < AP_TIMEOUT_MS {
        if ONLINE.load(Ordering::Acquire) > before {
            return true;
        }
        pit::delay_ms(POLL_MS);
        waited += POLL_MS;
    }
    false
}

/// APIC ids of the APs that reported in, in the order they did.
pub fn online_ids(out: &mut [u32; MAX_CPUS]) -> usize {
    let n = (ONLINE.load(Ordering::Acquire) as usize).min(MAX_CPUS);
    for (i, slot) in out.iter_mut().enumerate().take(n) {
        *slot = ONLINE_IDS[i].load(Ordering::Acquire);
    }
    n
}
