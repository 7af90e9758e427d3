//! A valid header and L1 table whose single L2 table is the fuzz input: every way an L2
//! entry can be malformed (offsets, flags, compressed sizes) must be an error, not a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmscope::block::qcow2::{create, Qcow2CreateOptions};
use vmscope::block::{open_node, OpenOptions};

const CS: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vmscope-fuzz-l2-{}", std::process::id()));
    let opts = Qcow2CreateOptions {
        size: 2 << 20,
        cluster_size: CS,
        ..Default::default()
    };
    if create(&path, &opts).is_err() {
        return;
    }
    // Point L1[0] at a new L2 table (cluster 8) filled with the input.
    let mut img = std::fs::read(&path).unwrap_or_default();
    let l1 = u64::from_be_bytes(img[40..48].try_into().unwrap()) as usize;
    img.resize(9 * CS as usize + 8 * CS as usize, 0);
    let l2 = 8 * CS as usize;
    let n = data.len().min(CS as usize);
    img[l2..l2 + n].copy_from_slice(&data[..n]);
    img[l1..l1 + 8].copy_from_slice(&(0x8000_0000_0000_0000u64 | l2 as u64).to_be_bytes());
    if std::fs::write(&path, &img).is_err() {
        return;
    }
    if let Ok(node) = open_node(&path, &OpenOptions::default()) {
        let mut buf = vec![0u8; CS as usize];
        for c in 0..(CS / 8).min(512) {
            let _ = node.read_at(c * CS, &mut buf);
            let _ = node.block_status(c * CS, CS);
        }
        let _ = node.write_at(CS / 2, &[7u8; 100]);
        let _ = node.discard(0, 1 << 20);
        let _ = node.flush();
    }
    let _ = std::fs::remove_file(&path);
});
