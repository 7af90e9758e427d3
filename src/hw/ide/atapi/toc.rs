//! READ TOC/PMA/ATIP replies for QEMU's single-track data disc (its `hw/block/cdrom.c`).

/// Minute, second and frame of a block address (2 seconds of lead-in, 75 frames a second).
/// QEMU stores each in a byte, so minutes past 255 wrap.
pub fn lba_to_msf(lba: u32) -> [u8; 3] {
    let frames = lba.wrapping_add(150);
    [
        ((frames / 75) / 60) as u8,
        ((frames / 75) % 60) as u8,
        (frames % 75) as u8,
    ]
}

/// Appends an address field: MSF as reserved byte + M + S + F, otherwise a big-endian LBA.
fn push_address(out: &mut Vec<u8>, lba: u32, msf: bool) {
    if msf {
        out.push(0);
        out.extend_from_slice(&lba_to_msf(lba));
    } else {
        out.extend_from_slice(&lba.to_be_bytes());
    }
}

/// Format 0 (TOC): track 1 at block 0 and the lead-out after the last block. `None` for a
/// starting track QEMU refuses (above 1 and not the lead-out, 0xaa).
pub fn formatted_toc(blocks: u32, msf: bool, start_track: u8) -> Option<Vec<u8>> {
    if start_track > 1 && start_track != 0xaa {
        return None;
    }
    let mut out = vec![0, 0, 1, 1];
    if start_track <= 1 {
        out.extend_from_slice(&[0, 0x14, 1, 0]);
        push_address(&mut out, 0, msf);
    }
    out.extend_from_slice(&[0, 0x16, 0xaa, 0]);
    push_address(&mut out, blocks, msf);
    Some(finish(out))
}

/// Format 1 (multi-session information): one session.
pub fn session_info() -> [u8; 12] {
    let mut out = [0u8; 12];
    out[1] = 0x0a;
    out[2] = 0x01;
    out[3] = 0x01;
    out
}

/// Format 2 (raw TOC): points A0 (first track), A1 (last track), A2 (lead-out) and track 1.
pub fn raw_toc(blocks: u32, msf: bool) -> Vec<u8> {
    let mut out = vec![0, 0, 1, 1];
    // Session 1, data track, point A0: first track 1, disc type 0.
    out.extend_from_slice(&[1, 0x14, 0, 0xa0, 0, 0, 0, 0, 1, 0, 0]);
    // Point A1: last track 1.
    out.extend_from_slice(&[1, 0x14, 0, 0xa1, 0, 0, 0, 0, 1, 0, 0]);
    // Point A2: the lead-out address.
    out.extend_from_slice(&[1, 0x14, 0, 0xa2, 0, 0, 0]);
    push_address(&mut out, blocks, msf);
    // Point 1: track 1 starts at block 0 (in LBA form QEMU writes four zero bytes).
    out.extend_from_slice(&[1, 0x14, 0, 1, 0, 0, 0]);
    push_address(&mut out, 0, msf);
    finish(out)
}

/// Fills in the data length (bytes after the length field; the replies are short).
fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let len = (out.len() - 2) as u16;
    out[..2].copy_from_slice(&len.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msf_counts_the_two_second_lead_in() {
        assert_eq!(lba_to_msf(0), [0, 2, 0]);
        assert_eq!(lba_to_msf(40), [0, 2, 40]);
        assert_eq!(lba_to_msf(4500 - 150), [1, 0, 0]);
    }

    #[test]
    fn toc_from_the_lead_out_has_only_the_lead_out() {
        let toc = formatted_toc(40, false, 0xaa).unwrap();
        assert_eq!(toc, [0, 10, 1, 1, 0, 0x16, 0xaa, 0, 0, 0, 0, 40]);
        assert!(formatted_toc(40, false, 2).is_none());
    }
}
