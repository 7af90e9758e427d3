//! The speed limit of a job (`speed` in bytes per second, 0 = unlimited): after each
//! chunk the job sleeps until the bytes copied so far fit the limit.

use std::time::{Duration, Instant};

pub(super) struct RateLimit {
    start: Instant,
    copied: u64,
}

impl RateLimit {
    pub(super) fn new() -> RateLimit {
        RateLimit {
            start: Instant::now(),
            copied: 0,
        }
    }

    /// Accounts `bytes` just copied; returns how long to wait before the next chunk.
    pub(super) fn account(&mut self, bytes: u64, speed: u64) -> Duration {
        if speed == 0 {
            return Duration::ZERO;
        }
        self.copied = self.copied.saturating_add(bytes);
        let due = Duration::from_secs_f64(self.copied as f64 / speed as f64);
        due.saturating_sub(self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits_and_limited_waits_for_the_bytes() {
        let mut r = RateLimit::new();
        assert_eq!(r.account(1 << 30, 0), Duration::ZERO);
        let mut r = RateLimit::new();
        let d = r.account(1000, 100);
        assert!(
            d > Duration::from_secs(9) && d <= Duration::from_secs(10),
            "{d:?}"
        );
    }
}
