//! Compressed images against QEMU 7.2: `convert -c` makes files of about the same size as
//! qemu-img's (same zstd level, clusters packed back to back across cluster boundaries,
//! the last partial cluster compressed), with identical content and a clean check.

#[path = "block_support.rs"]
mod support;

use support::*;

/// 8 MiB plus an unaligned tail: text-like clusters (compressible), random ones (stored
/// uncompressed), zero ones (skipped) and half-and-half ones.
fn mixed_data() -> Vec<u8> {
    let words: Vec<String> = (0..400)
        .map(|i| {
            let mut r = Rng(i * 7919 + 1);
            (0..3 + r.below(8))
                .map(|_| (b'a' + r.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut r = Rng(42);
    let mut out = Vec::new();
    let total = (8 << 20) + 3000;
    let mut cluster = 0u64;
    while out.len() < total {
        let start = out.len();
        let end = (start + 65536).min(total);
        match cluster % 5 {
            0 | 1 => {
                while out.len() < end {
                    out.extend_from_slice(words[r.below(words.len() as u64) as usize].as_bytes());
                    out.push(if r.below(12) == 0 { b'\n' } else { b' ' });
                }
                out.truncate(end);
            }
            2 => out.extend((start..end).map(|_| r.next_u64() as u8)),
            3 => out.resize(end, 0),
            _ => {
                let half = start + (end - start) / 2;
                out.extend((start..half).map(|_| r.next_u64() as u8));
                out.extend((half..end).map(|i| (i / 97) as u8));
            }
        }
        cluster += 1;
    }
    out
}

fn file_size(p: &str) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn convert_c_sizes_match_qemu_img() {
    require_qemu();
    let s = Scratch::new("compress-size");
    let src = s.p("src.raw");
    std::fs::write(&src, mixed_data()).unwrap();
    // (compression type, allowed relative size difference). zstd uses the same library
    // and level as QEMU; zlib's deflate implementation differs slightly from zlib's.
    for (ct, tolerance) in [("zstd", 0.01), ("zlib", 0.04)] {
        let q = s.p(&format!("q-{ct}.qcow2"));
        let v = s.p(&format!("v-{ct}.qcow2"));
        let o = format!("compression_type={ct}");
        qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &o, &src, &q]);
        ok(
            vmscope_img(),
            &["convert", "-c", "-O", "qcow2", "-o", &o, &src, &v],
        );
        assert_qemu_check_clean(&v, false);
        qemu_img(&["compare", &q, &v]);
        qemu_img(&["compare", &src, &v]);
        let (qs, vs) = (file_size(&q) as f64, file_size(&v) as f64);
        let diff = (vs - qs).abs() / qs;
        assert!(
            diff <= tolerance,
            "{ct}: vmscope {vs} bytes vs qemu-img {qs} bytes ({:.1}% apart)",
            diff * 100.0
        );
        // The same clusters end up compressed (check's statistics line).
        let stats = |img: &str| {
            qemu_check(img)
                .1
                .lines()
                .find(|l| l.contains("compressed clusters"))
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(stats(&v), stats(&q), "{ct}");
        assert_eq!(
            qemu_img(&["info", &v])
                .lines()
                .find(|l| l.starts_with("virtual size")),
            qemu_img(&["info", &q])
                .lines()
                .find(|l| l.starts_with("virtual size"))
        );
    }
}

/// Compressed clusters that straddle host cluster boundaries read back through vmscope.
#[test]
fn packed_compressed_clusters_read_back() {
    require_qemu();
    let s = Scratch::new("compress-read");
    let data = mixed_data();
    let src = s.p("src.raw");
    std::fs::write(&src, &data).unwrap();
    for ct in ["zstd", "zlib"] {
        let v = s.p(&format!("v-{ct}.qcow2"));
        let o = format!("compression_type={ct},cluster_size=4096");
        ok(
            vmscope_img(),
            &["convert", "-c", "-O", "qcow2", "-o", &o, &src, &v],
        );
        assert_qemu_check_clean(&v, false);
        let mut want = data.clone();
        want.resize(data.len().div_ceil(512) * 512, 0);
        assert_same_content(ct, &vmscope_read_all(std::path::Path::new(&v)), &want);
        assert_same_content(ct, &qemu_read_all(&v, &s), &want);
    }
}
