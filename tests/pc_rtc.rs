//! `-rtc base=...,clock=...`: the test kernel's `rtc` scenario reads the CMOS date and time
//! (to the minute) under QEMU 7.2 and under vmscope with the same options and time zone;
//! the lines must match. A fixed date shows that date; `base=localtime` in a time zone far
//! from UTC shows another hour (or day) than `base=utc`, so each case fails without the
//! option implemented.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::guest_kernel::{kernel_lines, test_kernel};
use common::machine_run::run_with_env;
use common::{kvm, qemu};

const TIMEOUT: Duration = Duration::from_secs(60);

fn args(rtc: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "-nographic",
        "-no-user-config",
        "-m",
        "64",
        "-kernel",
        &test_kernel().display().to_string(),
        "-append",
        "rtc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !rtc.is_empty() {
        args.extend(["-rtc".to_string(), rtc.to_string()]);
    }
    args
}

/// The scenario's lines on (QEMU, vmscope).
fn both(test: &str, rtc: &str, tz: &str) -> Option<(Vec<String>, Vec<String>)> {
    if !kvm::require(test) {
        return None;
    }
    let env = [("TZ", tz)];
    let mut qemu_args = vec!["-accel".to_string(), qemu::accel()];
    qemu_args.extend(args(rtc));
    let q = run_with_env(qemu::binary(), &qemu_args, &env, None, TIMEOUT);
    assert_eq!(q.exit(), Ok(0), "QEMU failed\n{}", q.describe());
    let vmscope = PathBuf::from(env!("CARGO_BIN_EXE_vmscope"));
    let v = run_with_env(&vmscope, &args(rtc), &env, None, TIMEOUT);
    assert_eq!(v.exit(), Ok(0), "vmscope failed\n{}", v.describe());
    kvm::record_use(test);
    Some((kernel_lines(&q.stdout), kernel_lines(&v.stdout)))
}

fn date_line(lines: &[String]) -> String {
    lines
        .iter()
        .find(|l| l.starts_with("tk: rtc: ") && !l.contains("register"))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_fixed_base_date_is_what_the_guest_reads() {
    for clock in ["host", "rt", "vm"] {
        let Some((q, v)) = both(
            "a_fixed_base_date_is_what_the_guest_reads",
            &format!("base=2006-06-17T16:01:21,clock={clock}"),
            "UTC",
        ) else {
            return;
        };
        assert_eq!(
            date_line(&q),
            "tk: rtc: 2006-06-17 16:01",
            "QEMU, clock={clock}"
        );
        assert_eq!(v, q, "clock={clock}");
    }
}

#[test]
fn a_date_only_base_starts_at_midnight() {
    let Some((q, v)) = both(
        "a_date_only_base_starts_at_midnight",
        "base=1999-12-31",
        "UTC",
    ) else {
        return;
    };
    assert_eq!(date_line(&q), "tk: rtc: 1999-12-31 00:00");
    assert_eq!(v, q);
}

#[test]
fn localtime_follows_the_time_zone_and_utc_does_not() {
    // Fourteen hours ahead of UTC: the local date or hour always differs from UTC's.
    let tz = "Pacific/Kiritimati";
    let Some((q_local, v_local)) = both(
        "localtime_follows_the_time_zone_and_utc_does_not",
        "base=localtime",
        tz,
    ) else {
        return;
    };
    let Some((q_utc, v_utc)) = both(
        "localtime_follows_the_time_zone_and_utc_does_not",
        "base=utc",
        tz,
    ) else {
        return;
    };
    assert_ne!(date_line(&q_local), date_line(&q_utc));
    // The minute may tick between the two runs; compare each machine with QEMU's run.
    assert_eq!(v_local, q_local);
    assert_eq!(v_utc, q_utc);
}
