//! Fast "is this buffer all zeros" for detect-zeroes, copy-on-write and convert's sparse
//! output. A byte-at-a-time `all(|b| b == 0)` does not vectorise (it exits early on every
//! byte) and showed up as the top user-space cost of allocating writes.

/// Whether every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    // OR-folding whole blocks has no early exit inside a block, so it compiles to SIMD;
    // checking between blocks still stops soon on data.
    let mut blocks = buf.chunks_exact(256);
    for b in &mut blocks {
        if b.iter().fold(0u8, |acc, &x| acc | x) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_any_nonzero_byte() {
        assert!(is_zero(&[]));
        for len in [1usize, 255, 256, 257, 4096, 65536 + 17] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for pos in [0, len / 2, len - 1] {
                v[pos] = 1;
                assert!(!is_zero(&v), "len {len} pos {pos}");
                v[pos] = 0;
            }
        }
    }
}
