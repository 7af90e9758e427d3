//! `bench`: qemu-img bench's options and output, with `--random[=SEED]` for random offsets.
//! Queue depth is served by that many threads doing synchronous I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use vmscope::block::{AioMode, BlockError, CacheMode, OpenOptions};

use super::args::{long, opt, parse, OptSpec};
use super::{fail, open_image, CmdResult};

const SPEC: &[OptSpec] = &[
    opt('c', "c", true),
    opt('d', "d", true),
    opt('f', "f", true),
    opt('i', "i", true),
    opt('n', "n", false),
    opt('o', "o", true),
    opt('q', "q", false),
    opt('s', "s", true),
    opt('S', "S", true),
    opt('t', "t", true),
    opt('U', "U", false),
    opt('w', "w", false),
    long("flush-interval", "flush-interval", true),
    long("no-drain", "no-drain", false),
    long("pattern", "pattern", true),
    long("random", "random", false),
    long("random-seed", "random-seed", true),
    long("force-share", "U", false),
    long("image-opts", "image-opts", false),
];

fn num(p: &super::args::Parsed, k: &str, default: u64, what: &str) -> Result<u64, super::CmdError> {
    match p.get(k) {
        None => Ok(default),
        Some(s) => vmscope::block::options::parse_size(s)
            .ok_or_else(|| fail(format!("Invalid {what} specified"))),
    }
}

/// splitmix64: a tiny, good-enough generator for offsets.
fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The offset of request `i` as qemu-img 7.2 bench computes it: the first at `start`
/// unwrapped, then each `step` further, wrapped modulo the image size (0 for an empty
/// image). A request that then runs past the end fails the run with EIO, as in QEMU 7.2.
fn sequential_offset(start: u64, step: u64, i: u64, size: u64) -> u64 {
    if i == 0 {
        return start;
    }
    if size == 0 {
        return 0;
    }
    ((start as u128 + i as u128 * step as u128) % size as u128) as u64
}

pub fn bench(args: &[String]) -> CmdResult {
    let p = parse(args, SPEC).map_err(fail)?;
    let [filename] = p.positional.as_slice() else {
        return Err(fail("Expecting one image file name"));
    };
    let count = num(&p, "c", 75000, "request count")?;
    let depth = num(&p, "d", 64, "queue depth")?.clamp(1, 1024);
    let bufsize = num(&p, "s", 4096, "buffer size")?;
    let step = num(&p, "S", bufsize, "step size")?;
    let start = num(&p, "o", 0, "offset")?;
    let flush_interval = num(&p, "flush-interval", 0, "flush interval")?;
    let pattern = num(&p, "pattern", 0, "pattern")? as u8;
    let write = p.has("w");
    let random = p.has("random") || p.has("random-seed");
    let seed = num(&p, "random-seed", 1, "random seed")?;
    let mut cache = match p.get("t") {
        Some(t) => CacheMode::parse(t).map_err(|_| fail(format!("Invalid cache mode: {t}")))?,
        None => CacheMode::Writeback,
    };
    let mut aio = match p.get("i") {
        Some(i) => AioMode::parse(i).map_err(|_| fail(format!("Invalid aio option: {i}")))?,
        None => AioMode::Threads,
    };
    if p.has("n") {
        cache = CacheMode::None;
        aio = AioMode::Native;
    }
    if bufsize == 0 {
        return Err(fail("Invalid buffer size specified"));
    }
    let node = open_image(
        filename,
        p.get("f"),
        !write,
        false,
        &OpenOptions {
            cache,
            aio,
            ..Default::default()
        },
    )?;
    let size = node.virtual_size().map_err(|e| fail(e.to_string()))?;
    if size < bufsize {
        return Err(fail("Image too small for the buffer size"));
    }
    // qemu-img 7.2 bench accepts -q but prints both of its lines anyway.
    {
        println!(
            "Sending {count} {} requests, {bufsize} bytes each, {depth} in parallel (starting at offset {start}, step size {step})",
            if write { "write" } else { "read" }
        );
    }
    let slots = size / bufsize;
    let next = AtomicU64::new(0);
    let error: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..depth {
            let node = &node;
            let next = &next;
            let error = &error;
            s.spawn(move || {
                // Aligned like QEMU's qemu_blockalign() buffers, so O_DIRECT needs no copy.
                let mut aligned = vmscope::block::host_file::AlignedBuf::zeroed(bufsize as usize);
                aligned.as_mut_slice().fill(pattern);
                let buf = &mut aligned.as_mut_slice()[..bufsize as usize];
                let mut rng = seed ^ (t.wrapping_mul(0x1234_5678_9abc));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let off = if random {
                        (next_rand(&mut rng) % slots) * bufsize
                    } else {
                        sequential_offset(start, step, i, size)
                    };
                    let r = if write {
                        node.write_at(off, buf)
                    } else {
                        node.read_at(off, buf)
                    };
                    let r = r.and_then(|_| {
                        if write && flush_interval > 0 && (i + 1).is_multiple_of(flush_interval) {
                            node.flush()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = r {
                        // QEMU's block layer fails requests past the end with EIO.
                        let msg = match e {
                            BlockError::OutOfRange { .. } => "Input/output error".to_string(),
                            e => e.to_string(),
                        };
                        *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
                        next.store(count, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(fail(format!("Failed request: {e}")));
    }
    if write {
        node.flush().map_err(|e| fail(e.to_string()))?;
    }
    let el = t0.elapsed().as_secs_f64();
    println!("Run completed in {el:.3} seconds.");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::sequential_offset;

    #[test]
    fn offsets_wrap_like_qemu_img_bench() {
        let (size, buf) = (1u64 << 30, 65536u64);
        assert_eq!(sequential_offset(7, buf, 0, size), 7);
        assert_eq!(sequential_offset(0, buf, 1, size), buf);
        // A pass wraps at the image size, keeping 64 KiB alignment.
        let per_pass = size / buf;
        assert_eq!(sequential_offset(0, buf, per_pass, size), 0);
        for i in [per_pass + 1, 3 * per_pass + 7, 100_000] {
            assert_eq!(sequential_offset(0, buf, i, size) % buf, 0, "request {i}");
        }
        assert_eq!(sequential_offset(8192, 10000, 3, 1 << 20), 38192);
        assert_eq!(sequential_offset(7, 4096, 3, 0), 0);
    }
}
