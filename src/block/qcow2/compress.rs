//! Compressed clusters: raw deflate with a 4 KiB window (QEMU's zlib type) and zstd frames.

use std::io::Read;

use super::header::CompressionType;
use crate::block::error::{BlockError, BlockResult};

/// Inflates `input` into exactly `out.len()` bytes.
pub fn decompress(kind: CompressionType, input: &[u8], out: &mut [u8]) -> BlockResult<()> {
    match kind {
        CompressionType::Zlib => {
            let mut d = flate2::Decompress::new_with_window_bits(false, 12);
            let status = d
                .decompress(input, out, flate2::FlushDecompress::Finish)
                .map_err(|e| BlockError::Corrupt(format!("Could not decompress cluster: {e}")))?;
            // QEMU accepts a stream that fills the cluster even if it does not end there.
            if d.total_out() as usize != out.len() {
                return Err(BlockError::Corrupt(format!(
                    "Could not decompress cluster: {status:?} after {} of {} bytes",
                    d.total_out(),
                    out.len()
                )));
            }
            Ok(())
        }
        CompressionType::Zstd => {
            let mut src = input;
            let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut src).map_err(|e| {
                BlockError::Corrupt(format!("Could not decompress zstd cluster: {e}"))
            })?;
            let mut done = 0;
            while done < out.len() {
                match dec.read(&mut out[done..]) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) => {
                        return Err(BlockError::Corrupt(format!(
                            "Could not decompress zstd cluster: {e}"
                        )))
                    }
                }
            }
            if done != out.len() {
                return Err(BlockError::Corrupt(format!(
                    "Could not decompress zstd cluster: {done} of {} bytes",
                    out.len()
                )));
            }
            Ok(())
        }
    }
}

/// Compresses one cluster. Returns `None` when compression does not save space (QEMU then
/// writes the cluster uncompressed).
pub fn compress(kind: CompressionType, input: &[u8]) -> BlockResult<Option<Vec<u8>>> {
    let out = match kind {
        CompressionType::Zlib => {
            let mut c =
                flate2::Compress::new_with_window_bits(flate2::Compression::default(), false, 12);
            let mut out = Vec::with_capacity(input.len() + 64);
            c.compress_vec(input, &mut out, flate2::FlushCompress::Finish)
                .map_err(|e| BlockError::Corrupt(format!("Could not compress cluster: {e}")))?;
            if c.total_in() as usize != input.len() {
                return Ok(None);
            }
            out
        }
        // QEMU 7.2 (qcow2-threads.c) compresses with a fresh ZSTD_CCtx and no parameters
        // set, i.e. zstd's default level (3), one frame per cluster with the content size
        // and no checksum: the same here. The pure-Rust encoder only offers level 1, whose
        // clusters came out far larger than QEMU's, hence libzstd for compression.
        CompressionType::Zstd => zstd::bulk::compress(input, zstd::DEFAULT_COMPRESSION_LEVEL)
            .map_err(|e| BlockError::Corrupt(format!("Could not compress cluster: {e}")))?,
    };
    if out.len() >= input.len() {
        return Ok(None);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_types_round_trip() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 300) as u8).collect();
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            let c = compress(kind, &data).unwrap().expect("compressible");
            let mut out = vec![0u8; data.len()];
            decompress(kind, &c, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = vec![0u8; 4096];
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            assert!(decompress(kind, &[0xff; 100], &mut out).is_err());
            assert!(decompress(kind, &[], &mut out).is_err());
        }
    }
}
