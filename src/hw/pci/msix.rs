//! MSI-X for PCI functions: the capability in configuration space (message control with
//! enable and function mask), the vector table and pending-bit array a BAR exposes, and the
//! rule that decides whether raising a vector delivers an interrupt now or leaves it
//! pending until the guest unmasks it. Delivery itself (a KVM route and irqfd per vector)
//! is behind [`MsiDelivery`], implemented by the machine.

use std::sync::{Arc, Mutex};

use super::config::{ConfigSpace, STATUS};

/// Capability id of MSI-X.
pub const CAPABILITY_MSIX: u8 = 0x11;
/// Status register bit: the function has a capability list.
const STATUS_CAPABILITY_LIST: u16 = 0x0010;
/// Configuration-space register holding the first capability's offset.
const CAPABILITY_POINTER: usize = 0x34;
/// Message control bits.
const CONTROL_ENABLE: u16 = 0x8000;
const CONTROL_FUNCTION_MASK: u16 = 0x4000;
/// Bytes per table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;
const VECTOR_MASKED: u32 = 1;
/// The architectural limit of an MSI-X table.
pub const MAX_VECTORS: u16 = 2048;

/// Where an MSI is written: what the guest programmed into a table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Delivers a function's MSI-X vectors to the interrupt controllers.
pub trait MsiDelivery: Send + Sync {
    /// The vector's message changed; `None` when it can no longer fire (masked, disabled).
    fn route(&self, vector: u16, message: Option<MsiMessage>);
    /// Delivers the vector with the message last routed.
    fn fire(&self, vector: u16);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    message: MsiMessage,
    control: u32,
}

impl Default for Entry {
    /// Entries start masked (PCI spec).
    fn default() -> Self {
        Entry {
            message: MsiMessage::default(),
            control: VECTOR_MASKED,
        }
    }
}

struct MsixState {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
}

/// A function's MSI-X vectors.
pub struct Msix {
    state: Mutex<MsixState>,
    delivery: Arc<dyn MsiDelivery>,
}

/// Where the capability sits and where its table and PBA live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    pub vectors: u16,
    pub table_bar: u8,
    pub table_offset: u32,
    pub pba_bar: u8,
    pub pba_offset: u32,
}

impl MsixLayout {
    /// Adds the capability to `space`; returns its offset, for [`Msix::control_written`].
    pub fn install(&self, space: &mut ConfigSpace, offset: usize, next: u8) -> usize {
        space.set_u8(offset, CAPABILITY_MSIX);
        space.set_u8(offset + 1, next);
        space.set_u16(offset + 2, self.vectors - 1);
        space.set_u32(offset + 4, self.table_offset | u32::from(self.table_bar));
        space.set_u32(offset + 8, self.pba_offset | u32::from(self.pba_bar));
        // Only the enable and function-mask bits of message control are the guest's.
        space.set_writable(offset, &[0x00, 0x00, 0x00, 0xc0]);
        space.set_writable(offset + 4, &[0; 8]);
        if space.u8(CAPABILITY_POINTER) == 0 {
            space.set_u8(CAPABILITY_POINTER, offset as u8);
        }
        space.set_u16(STATUS, space.u16(STATUS) | STATUS_CAPABILITY_LIST);
        offset
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors) * ENTRY_SIZE
    }

    /// Bytes of the pending-bit array (whole quadwords).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }
}

impl Msix {
    /// `vectors` vectors, all masked, MSI-X disabled. Clamped to the architectural limit.
    pub fn new(vectors: u16, delivery: Arc<dyn MsiDelivery>) -> Msix {
        let n = usize::from(vectors.clamp(1, MAX_VECTORS));
        Msix {
            state: Mutex::new(MsixState {
                entries: vec![Entry::default(); n],
                pending: vec![false; n],
                enabled: false,
                function_masked: false,
            }),
            delivery,
        }
    }

    /// Back to power-on state (disabled, every vector masked).
    pub fn reset(&self) {
        let vectors = {
            let mut state = self.state.lock().unwrap();
            let n = state.entries.len();
            *state = MsixState {
                entries: vec![Entry::default(); n],
                pending: vec![false; n],
                enabled: false,
                function_masked: false,
            };
            n
        };
        for vector in 0..vectors {
            self.delivery.route(vector as u16, None);
        }
    }

    /// The guest wrote configuration space: applies the capability's message control.
    pub fn control_written(&self, space: &ConfigSpace, capability_offset: usize) {
        let control = space.u16(capability_offset + 2);
        let mut state = self.state.lock().unwrap();
        state.enabled = control & CONTROL_ENABLE != 0;
        state.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.reroute_all(&mut state);
    }

    /// Whether the vector can deliver now.
    fn deliverable(state: &MsixState, vector: usize) -> bool {
        state.enabled
            && !state.function_masked
            && state.entries[vector].control & VECTOR_MASKED == 0
    }

    fn reroute(&self, state: &mut MsixState, vector: usize) {
        let message = Self::deliverable(state, vector).then_some(state.entries[vector].message);
        self.delivery.route(vector as u16, message);
        // Unmasking delivers what became pending meanwhile.
        if message.is_some() && state.pending[vector] {
            state.pending[vector] = false;
            self.delivery.fire(vector as u16);
        }
    }

    fn reroute_all(&self, state: &mut MsixState) {
        for vector in 0..state.entries.len() {
            self.reroute(state, vector);
        }
    }

    /// The device raises `vector`: delivered now, or pending while masked. Vectors beyond
    /// the table (a device bug or a guest-chosen number) are ignored.
    pub fn notify(&self, vector: u16) {
        let mut state = self.state.lock().unwrap();
        let v = usize::from(vector);
        if v >= state.entries.len() {
            return;
        }
        if Self::deliverable(&state, v) {
            self.delivery.fire(vector);
        } else if state.enabled {
            state.pending[v] = true;
        }
    }

    /// A guest read of the table (any width, any alignment within the table).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let state = self.state.lock().unwrap();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = table_byte(&state, offset + i as u64).unwrap_or(0);
        }
    }

    /// A guest write to the table. Dword and qword writes are what drivers use; each byte is
    /// applied so any width works.
    pub fn write_table(&self, offset: u64, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        let mut touched = Vec::new();
        for (i, &byte) in data.iter().enumerate() {
            let at = offset + i as u64;
            let vector = (at / ENTRY_SIZE) as usize;
            if vector >= state.entries.len() {
                continue;
            }
            let within = (at % ENTRY_SIZE) as usize;
            let entry = &mut state.entries[vector];
            let mut raw = entry_bytes(entry);
            raw[within] = byte;
            *entry = entry_from_bytes(&raw);
            if touched.last() != Some(&vector) {
                touched.push(vector);
            }
        }
        for vector in touched {
            self.reroute(&mut state, vector);
        }
    }

    /// A guest read of the pending-bit array.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let state = self.state.lock().unwrap();
        for (i, byte) in data.iter_mut().enumerate() {
            let first_vector = (offset + i as u64) * 8;
            *byte = (0..8).fold(0u8, |acc, bit| {
                let v = (first_vector + bit) as usize;
                if state.pending.get(v).copied().unwrap_or(false) {
                    acc | (1 << bit)
                } else {
                    acc
                }
            });
        }
    }
}

fn entry_bytes(entry: &Entry) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&entry.message.address.to_le_bytes());
    raw[8..12].copy_from_slice(&entry.message.data.to_le_bytes());
    raw[12..].copy_from_slice(&entry.control.to_le_bytes());
    raw
}

fn entry_from_bytes(raw: &[u8; 16]) -> Entry {
    let word = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
    Entry {
        message: MsiMessage {
            address: u64::from(word(0)) | u64::from(word(4)) << 32,
            data: word(8),
        },
        // Only the mask bit of vector control is defined; the rest reads as zero.
        control: word(12) & VECTOR_MASKED,
    }
}

fn table_byte(state: &MsixState, at: u64) -> Option<u8> {
    let entry = state.entries.get((at / ENTRY_SIZE) as usize)?;
    Some(entry_bytes(entry)[(at % ENTRY_SIZE) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::pci::config::Identity;

    #[derive(Default)]
    struct Recorder {
        routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
        fired: Mutex<Vec<u16>>,
    }

    impl MsiDelivery for Recorder {
        fn route(&self, vector: u16, message: Option<MsiMessage>) {
            self.routes.lock().unwrap().push((vector, message));
        }
        fn fire(&self, vector: u16) {
            self.fired.lock().unwrap().push(vector);
        }
    }

    fn layout() -> MsixLayout {
        MsixLayout {
            vectors: 3,
            table_bar: 1,
            table_offset: 0,
            pba_bar: 1,
            pba_offset: 0x800,
        }
    }

    fn space() -> ConfigSpace {
        ConfigSpace::new(Identity {
            vendor: 0x1af4,
            device: 0x1041,
            revision: 1,
            class: 0x01_00_00,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
            header_type: 0,
        })
    }

    fn program(msix: &Msix, vector: u64, address: u64, data: u32, masked: bool) {
        let base = vector * ENTRY_SIZE;
        msix.write_table(base, &address.to_le_bytes());
        msix.write_table(base + 8, &data.to_le_bytes());
        msix.write_table(base + 12, &u32::from(masked).to_le_bytes());
    }

    #[test]
    fn the_capability_is_linked_and_only_its_control_bits_are_writable() {
        let mut space = space();
        let offset = layout().install(&mut space, 0x40, 0);
        assert_eq!(space.u8(0x34), 0x40);
        assert_ne!(space.u16(STATUS) & STATUS_CAPABILITY_LIST, 0);
        assert_eq!(space.u8(offset), CAPABILITY_MSIX);
        assert_eq!(space.u16(offset + 2), 2, "table size is N-1");
        assert_eq!(space.u32(offset + 4), 1);
        assert_eq!(space.u32(offset + 8), 0x801);
        space.write_dword(0x40, 0xffff_ffff, 0xffff_ffff);
        assert_eq!(space.u16(offset + 2), 0xc002);
        assert_eq!(space.u8(offset), CAPABILITY_MSIX);
        space.write_dword(0x44, 0, 0xffff_ffff);
        assert_eq!(space.u32(offset + 4), 1, "table location is read-only");
    }

    #[test]
    fn vectors_fire_only_when_enabled_and_unmasked_and_pending_ones_fire_on_unmask() {
        let delivery = Arc::new(Recorder::default());
        let msix = Msix::new(3, delivery.clone());
        let mut space = space();
        let cap = layout().install(&mut space, 0x40, 0);
        program(&msix, 1, 0xfee0_0000, 0x4041, false);
        msix.notify(1);
        assert!(
            delivery.fired.lock().unwrap().is_empty(),
            "MSI-X is disabled"
        );
        space.write_dword(0x40, 0x8000_0000, 0xffff_0000);
        msix.control_written(&space, cap);
        assert!(delivery.routes.lock().unwrap().contains(&(
            1,
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x4041
            })
        )));
        msix.notify(1);
        assert_eq!(*delivery.fired.lock().unwrap(), [1]);
        // Masked vector: pending bit set, delivered on unmask.
        msix.write_table(ENTRY_SIZE + 12, &1u32.to_le_bytes());
        msix.notify(1);
        let mut pba = [0u8; 1];
        msix.read_pba(0, &mut pba);
        assert_eq!(pba, [0b10]);
        msix.write_table(ENTRY_SIZE + 12, &0u32.to_le_bytes());
        assert_eq!(*delivery.fired.lock().unwrap(), [1, 1]);
        msix.read_pba(0, &mut pba);
        assert_eq!(pba, [0]);
        // The function mask holds every vector back.
        space.write_dword(0x40, 0xc000_0000, 0xffff_0000);
        msix.control_written(&space, cap);
        msix.notify(1);
        assert_eq!(delivery.fired.lock().unwrap().len(), 2);
    }

    #[test]
    fn table_reads_return_what_was_written_and_hostile_offsets_are_harmless() {
        let msix = Msix::new(3, Arc::new(Recorder::default()));
        program(&msix, 2, 0x1_fee0_1000, 0x55, false);
        let mut b = [0u8; 16];
        msix.read_table(2 * ENTRY_SIZE, &mut b);
        assert_eq!(
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            0x1_fee0_1000
        );
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 0x55);
        // Reserved vector-control bits read as zero.
        msix.write_table(2 * ENTRY_SIZE + 12, &0xffff_fffeu32.to_le_bytes());
        msix.read_table(2 * ENTRY_SIZE + 12, &mut b[..4]);
        assert_eq!(&b[..4], &[0; 4]);
        msix.write_table(1 << 40, &[0xff; 8]);
        msix.read_table(1 << 40, &mut b);
        assert_eq!(b, [0; 16]);
        msix.notify(999);
        let mut pba = [0u8; 8];
        msix.read_pba(1 << 20, &mut pba);
        assert_eq!(pba, [0; 8]);
    }
}
