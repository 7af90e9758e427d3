//! Where the CMOS clock gets its time, as QEMU's `-rtc base=...,clock=...`:
//! - `clock=host` follows the host's real-time clock (host time changes show up),
//!   `clock=rt` advances with the host's monotonic clock from start-up, and `clock=vm`
//!   advances only while the VM runs ([`VirtualClock`]);
//! - `base=utc` starts from the host's time in UTC, `base=localtime` shows the host's local
//!   time (its UTC offset applied at every reading, as QEMU's `localtime_r`), and a date
//!   starts the clock at that date (UTC) and lets it advance from there.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{RtcBase, RtcClock, RtcConfig};
use crate::hw::virtual_clock::VirtualClock;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Nanoseconds since the Unix epoch on the host's real-time clock.
fn host_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

/// The host's UTC offset in seconds at Unix time `seconds` (0 if the C library cannot say).
fn local_utc_offset(seconds: i64) -> i64 {
    let time: libc::time_t = seconds;
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live, properly aligned locals for the whole call;
    // localtime_r is the thread-safe variant and keeps no reference to them.
    let result = unsafe { libc::localtime_r(&time, &mut tm) };
    if result.is_null() {
        0
    } else {
        tm.tm_gmtoff
    }
}

/// The time the RTC shows, in nanoseconds on its own timeline (broken down as UTC by the
/// RTC itself).
pub struct RtcTimeSource {
    config: RtcConfig,
    /// The clock's value at start-up: the host time then, or the `base=` date.
    start_ns: i64,
    /// Host time at start-up minus `start_ns` (non-zero only for a `base=` date).
    host_offset_ns: i64,
    started: Instant,
    virtual_clock: Arc<VirtualClock>,
}

impl RtcTimeSource {
    pub fn new(config: RtcConfig, virtual_clock: Arc<VirtualClock>) -> RtcTimeSource {
        let host_now = host_ns();
        let start_ns = match config.base {
            RtcBase::Date(seconds) => seconds.saturating_mul(NANOS_PER_SECOND),
            RtcBase::Utc | RtcBase::LocalTime => host_now,
        };
        RtcTimeSource {
            config,
            start_ns,
            host_offset_ns: host_now - start_ns,
            started: Instant::now(),
            virtual_clock,
        }
    }

    pub fn now_ns(&self) -> i64 {
        let elapsed = |d: std::time::Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        let timeline = match self.config.clock {
            RtcClock::Host => host_ns() - self.host_offset_ns,
            RtcClock::Realtime => self.start_ns + elapsed(self.started.elapsed()),
            RtcClock::Virtual => self.start_ns + elapsed(self.virtual_clock.elapsed()),
        };
        match self.config.base {
            RtcBase::LocalTime => {
                timeline + local_utc_offset(timeline / NANOS_PER_SECOND) * NANOS_PER_SECOND
            }
            RtcBase::Utc | RtcBase::Date(_) => timeline,
        }
    }
}

/// QEMU's `mktimegm`: seconds since the epoch of a UTC date, out-of-range fields carried
/// over arithmetically as QEMU's formula does (month 13 is January of the next year).
pub fn seconds_from_utc_date(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64) -> i64 {
    let (mut y, mut mo) = (year, month);
    if mo < 3 {
        mo += 12;
        y -= 1;
    }
    let days = day + (153 * mo - 457) / 5 + 365 * y + y.div_euclid(4) - y.div_euclid(100)
        + y.div_euclid(400)
        - 719_469;
    days * 86_400 + h * 3_600 + m * 60 + s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_like_qemus_mktimegm() {
        assert_eq!(seconds_from_utc_date(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(seconds_from_utc_date(2006, 6, 17, 16, 1, 21), 1_150_560_081);
        assert_eq!(seconds_from_utc_date(2000, 3, 1, 0, 0, 0), 951_868_800);
        // Month 13 carries into the next year.
        assert_eq!(
            seconds_from_utc_date(2005, 13, 1, 0, 0, 0),
            seconds_from_utc_date(2006, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn a_date_base_starts_there_and_a_vm_clock_stands_still_while_stopped() {
        let vm = Arc::new(VirtualClock::new());
        let source = RtcTimeSource::new(
            RtcConfig {
                base: RtcBase::Date(1_150_560_081),
                clock: RtcClock::Virtual,
            },
            vm.clone(),
        );
        assert_eq!(source.now_ns(), 1_150_560_081 * NANOS_PER_SECOND);
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert_eq!(source.now_ns(), 1_150_560_081 * NANOS_PER_SECOND);
        vm.run();
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(source.now_ns() > 1_150_560_081 * NANOS_PER_SECOND);
    }

    #[test]
    fn utc_on_the_host_clock_is_host_time() {
        let source = RtcTimeSource::new(RtcConfig::default(), Arc::new(VirtualClock::new()));
        assert!((source.now_ns() - host_ns()).abs() < NANOS_PER_SECOND);
    }
}
