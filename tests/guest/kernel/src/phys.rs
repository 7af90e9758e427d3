//! Access to physical memory through the boot identity map.

use crate::boot::IDENTITY_MAPPED_GIB;

const MAPPED_END: u64 = IDENTITY_MAPPED_GIB << 30;

/// Whether `[addr, addr + len)` lies inside the identity map.
pub fn is_mapped(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= MAPPED_END)
}

fn check(addr: u64, len: u64) {
    if !is_mapped(addr, len) {
        crate::kprintln!(
            "kernel: physical address ",
            crate::console::Hex(addr, 1),
            " is not mapped"
        );
        crate::power::poweroff();
    }
}

pub fn read_u8(addr: u64) -> u8 {
    check(addr, 1);
    // SAFETY: identity-mapped (checked); a plain-data read of memory or MMIO.
    unsafe { (addr as *const u8).read_volatile() }
}

pub fn read_u32(addr: u64) -> u32 {
    check(addr, 4);
    // SAFETY: as in read_u8; unaligned reads are fine on x86.
    unsafe { (addr as *const u32).read_unaligned() }
}

pub fn read_u64(addr: u64) -> u64 {
    check(addr, 8);
    // SAFETY: as in read_u32.
    unsafe { (addr as *const u64).read_unaligned() }
}

/// # Safety
/// `addr` must not hold anything this kernel uses (its image, stacks, tables).
pub unsafe fn write_u64(addr: u64, value: u64) {
    check(addr, 8);
    // SAFETY: mapped (checked); the caller vouches that nothing else lives there.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

/// # Safety
/// As for [`write_u64`].
pub unsafe fn write_bytes(addr: u64, bytes: &[u8]) {
    check(addr, bytes.len() as u64);
    // SAFETY: as in write_u64.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) }
}
