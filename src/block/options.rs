//! Open options shared by every format: QEMU's `-drive` cache and aio modes, read-only,
//! node names, and qcow2's metadata cache options.

use super::error::{BlockError, BlockResult};

/// `-drive cache=` as QEMU defines it: the combination of `cache.direct`,
/// `cache.writeback` (guest-visible write cache) and `cache.no-flush`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Host page cache, guest flushes reach the disk (QEMU's default).
    #[default]
    Writeback,
    /// Host page cache, every write is made durable before it completes.
    Writethrough,
    /// O_DIRECT, guest flushes reach the disk.
    None,
    /// O_DIRECT and every write durable before completion.
    Directsync,
    /// Host page cache, guest flushes are not passed to the host (`cache.no-flush=on`).
    Unsafe,
}

impl CacheMode {
    /// Parses QEMU's names.
    pub fn parse(s: &str) -> BlockResult<Self> {
        Ok(match s {
            "writeback" => CacheMode::Writeback,
            "writethrough" => CacheMode::Writethrough,
            "none" | "off" => CacheMode::None,
            "directsync" => CacheMode::Directsync,
            "unsafe" => CacheMode::Unsafe,
            _ => {
                return Err(BlockError::InvalidOption(format!(
                    "invalid cache option '{s}'"
                )))
            }
        })
    }

    /// Whether host files are opened with O_DIRECT (`cache.direct`).
    pub fn direct(self) -> bool {
        matches!(self, CacheMode::None | CacheMode::Directsync)
    }

    /// Whether each write must be durable before it completes (no guest-visible write cache).
    pub fn writethrough(self) -> bool {
        matches!(self, CacheMode::Writethrough | CacheMode::Directsync)
    }

    /// Whether flush requests are dropped (`cache.no-flush=on`).
    pub fn no_flush(self) -> bool {
        matches!(self, CacheMode::Unsafe)
    }

    /// QEMU's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
            CacheMode::None => "none",
            CacheMode::Directsync => "directsync",
            CacheMode::Unsafe => "unsafe",
        }
    }
}

/// `-drive aio=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AioMode {
    /// A pool of threads doing blocking preadv/pwritev (QEMU's default).
    #[default]
    Threads,
    /// Linux native AIO; QEMU requires `cache.direct=on` for it.
    Native,
    /// io_uring.
    IoUring,
}

impl AioMode {
    /// Parses QEMU's names.
    pub fn parse(s: &str) -> BlockResult<Self> {
        Ok(match s {
            "threads" => AioMode::Threads,
            "native" => AioMode::Native,
            "io_uring" => AioMode::IoUring,
            _ => {
                return Err(BlockError::InvalidOption(format!(
                    "invalid aio option '{s}'"
                )))
            }
        })
    }

    /// Checks the combination with the cache mode the way QEMU does: Linux AIO only works
    /// asynchronously on O_DIRECT files, so QEMU refuses it without `cache.direct=on`.
    /// Whether the engine can run on this kernel is checked when a file is opened
    /// ([`super::aio::check_available`]).
    pub fn validate(self, cache: CacheMode) -> BlockResult<()> {
        match self {
            AioMode::Native if !cache.direct() => Err(BlockError::InvalidOption(
                "aio=native was specified, but it requires cache.direct=on, which was not specified."
                    .into(),
            )),
            AioMode::Threads | AioMode::Native | AioMode::IoUring => Ok(()),
        }
    }

    /// QEMU's name of the engine.
    pub fn name(self) -> &'static str {
        match self {
            AioMode::Threads => "threads",
            AioMode::Native => "native",
            AioMode::IoUring => "io_uring",
        }
    }
}

/// `detect-zeroes=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DetectZeroes {
    #[default]
    Off,
    On,
    Unmap,
}

impl DetectZeroes {
    /// Parses QEMU's values; `unmap` needs `discard=unmap`, as QEMU checks.
    pub fn parse(s: &str, discard_unmap: bool) -> BlockResult<Self> {
        match s {
            "off" => Ok(DetectZeroes::Off),
            "on" => Ok(DetectZeroes::On),
            "unmap" if discard_unmap => Ok(DetectZeroes::Unmap),
            "unmap" => Err(BlockError::InvalidOption(
                "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap".into(),
            )),
            _ => Err(BlockError::InvalidOption(format!(
                "Parameter 'detect-zeroes' does not accept value '{s}'"
            ))),
        }
    }
}

/// qcow2's metadata cache options (`l2-cache-size`, ...), all in bytes / seconds as QEMU takes
/// them. `None` means "not given": QEMU's defaults are derived from the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qcow2CacheOptions {
    pub l2_cache_size: Option<u64>,
    pub l2_cache_entry_size: Option<u64>,
    pub refcount_cache_size: Option<u64>,
    pub cache_size: Option<u64>,
    pub cache_clean_interval: Option<u64>,
}

/// How to open an image and, by default, its backing chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open read-only (the whole chain is always opened read-only below the top).
    pub read_only: bool,
    /// `auto-read-only=on`: fall back to read-only where read-write is impossible (QEMU's
    /// behaviour for corrupt images opened by a tool that only reads).
    pub auto_read_only: bool,
    pub cache: CacheMode,
    pub aio: AioMode,
    /// Format of the top image (`format=`); probed from the content when `None`.
    pub format: Option<String>,
    /// `backing.driver`-less open: do not open the backing chain (`qemu-img -U`-like uses and
    /// `rebase -u`).
    pub no_backing: bool,
    /// Override the backing file named in the header (as `backing=`/`-b` does).
    pub backing_override: Option<String>,
    pub qcow2_cache: Qcow2CacheOptions,
    /// `node-name=`; generated as QEMU does (`#blockNNN`) when absent.
    pub node_name: Option<String>,
    pub detect_zeroes: DetectZeroes,
}

/// Parses a QEMU size: a number with an optional suffix k/K, M, G, T, P, E (powers of 1024)
/// or b/B; fractions are accepted with suffixes as QEMU does ("1.5G").
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (num, mult): (&str, u64) = match s.chars().last()? {
        'b' | 'B' => (&s[..s.len() - 1], 1),
        'k' | 'K' => (&s[..s.len() - 1], 1 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        'p' | 'P' => (&s[..s.len() - 1], 1 << 50),
        'e' | 'E' => (&s[..s.len() - 1], 1 << 60),
        _ => (s, 1),
    };
    if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
        return None;
    }
    if let Ok(v) = num.parse::<u64>() {
        return v.checked_mul(mult);
    }
    if mult > 1 && num.contains('.') {
        let f: f64 = num.parse().ok()?;
        if !f.is_finite() || f < 0.0 {
            return None;
        }
        let v = f * mult as f64;
        if v >= u64::MAX as f64 {
            return None;
        }
        return Some(v as u64);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_qemu() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1.5M"), Some(3 << 19));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("16E"), None);
    }

    #[test]
    fn cache_modes_map_to_flags() {
        assert!(CacheMode::parse("none").unwrap().direct());
        assert!(CacheMode::parse("directsync").unwrap().writethrough());
        assert!(CacheMode::parse("unsafe").unwrap().no_flush());
        assert!(!CacheMode::parse("writeback").unwrap().writethrough());
        assert!(CacheMode::parse("bogus").is_err());
    }

    #[test]
    fn native_aio_needs_direct_io() {
        assert!(AioMode::Threads.validate(CacheMode::None).is_ok());
        assert!(AioMode::Native.validate(CacheMode::None).is_ok());
        assert!(AioMode::Native.validate(CacheMode::Directsync).is_ok());
        assert!(AioMode::IoUring.validate(CacheMode::Writeback).is_ok());
        let e = AioMode::Native.validate(CacheMode::Writeback).unwrap_err();
        assert_eq!(
            e.to_string(),
            "aio=native was specified, but it requires cache.direct=on, which was not specified."
        );
    }
}
