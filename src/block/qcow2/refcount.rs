//! Reading and writing one entry of a refcount block, for every refcount order (1 to 64
//! bits). Sub-byte widths pack entries from the least significant bit, as QEMU does; wider
//! ones are big-endian.

/// Value of entry `index` in a refcount block of `2^order`-bit entries.
pub fn get(block: &[u8], order: u32, index: usize) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = block[index / per_byte];
            let shift = (index % per_byte) * bits;
            ((byte >> shift) as u64) & ((1u64 << bits) - 1)
        }
        3 => block[index] as u64,
        4 => u16::from_be_bytes([block[2 * index], block[2 * index + 1]]) as u64,
        5 => {
            u32::from_be_bytes(block[4 * index..4 * index + 4].try_into().expect("4 bytes")) as u64
        }
        _ => u64::from_be_bytes(block[8 * index..8 * index + 8].try_into().expect("8 bytes")),
    }
}

/// Sets entry `index`; `value` must not exceed [`max_value`].
pub fn set(block: &mut [u8], order: u32, index: usize, value: u64) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let shift = (index % per_byte) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            let b = &mut block[index / per_byte];
            *b = (*b & !mask) | (((value as u8) << shift) & mask);
        }
        3 => block[index] = value as u8,
        4 => block[2 * index..2 * index + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        5 => block[4 * index..4 * index + 4].copy_from_slice(&(value as u32).to_be_bytes()),
        _ => block[8 * index..8 * index + 8].copy_from_slice(&value.to_be_bytes()),
    }
}

/// Largest refcount representable with `2^order` bits.
pub fn max_value(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// Entries per refcount block of `cluster_bits`.
pub fn entries_per_block(cluster_bits: u32, order: u32) -> u64 {
    1u64 << (cluster_bits + 3 - order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_round_trips_without_touching_neighbours() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 64];
            let n = (64 * 8) >> order;
            let max = max_value(order);
            for i in 0..n {
                set(&mut block, order, i, (i as u64 * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    get(&block, order, i),
                    (i as u64 * 7) & max,
                    "order {order} index {i}"
                );
            }
        }
    }

    #[test]
    fn sub_byte_layout_matches_qemu() {
        let mut block = vec![0u8; 1];
        set(&mut block, 0, 1, 1);
        assert_eq!(block[0], 0b10);
        let mut block = vec![0u8; 1];
        set(&mut block, 2, 1, 0xa);
        assert_eq!(block[0], 0xa0);
    }
}
