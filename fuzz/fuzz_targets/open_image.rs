//! Any byte string as a qcow2 file: opening, reading, mapping and writing must return errors,
//! never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmscope::block::{open_node, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vmscope-fuzz-open-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let opts = OpenOptions {
        format: Some("qcow2".into()),
        no_backing: true,
        ..Default::default()
    };
    if let Ok(node) = open_node(&path, &opts) {
        let size = node.virtual_size().unwrap_or(0).min(1 << 24);
        let mut buf = vec![0u8; 65536];
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(65536);
            let _ = node.read_at(pos, &mut buf[..n as usize]);
            let _ = node.block_status(pos, n);
            pos += n;
        }
        let _ = node.write_at(0, &vec![1u8; 4096.min(size as usize)]);
        let _ = node.flush();
    }
    let _ = std::fs::remove_file(&path);
});
