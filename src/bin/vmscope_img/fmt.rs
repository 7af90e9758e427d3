//! Number formatting the way qemu-img prints it.

/// QEMU's `size_to_str`: three significant digits and a binary unit ("1 GiB", "324 KiB",
/// "1.5 MiB"); values from 1000 of a unit move to the next unit.
pub fn size_to_str(v: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let f = v as f64;
    // frexp(f / 0.9765625) -> exponent e with f/0.9765625 = m * 2^e, m in [0.5, 1).
    let scaled = f / (1000.0 / 1024.0);
    let i = if scaled < 1.0 {
        0
    } else {
        let e = scaled.log2().floor() as i64 + 1;
        ((e - 1) / 10).clamp(0, 6) as usize
    };
    let val = f / (1u64 << (10 * i)) as f64;
    format!("{} {}", fmt_g3(val), UNITS[i])
}

/// C's `%0.3g` for values below 1e4.
pub fn fmt_g3(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits_before = if v >= 1.0 {
        (v.log10().floor() as i32) + 1
    } else {
        0
    };
    let decimals = (3 - digits_before).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    // Rounding may add a digit (9.996 -> 10.00); %g then shows one fewer decimal.
    let int_len = s.split('.').next().map(|p| p.len()).unwrap_or(0) as i32;
    if int_len > digits_before.max(1) && decimals > 0 {
        let d = decimals - 1;
        s = format!("{v:.d$}");
    }
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s
}

/// `%#x` of C: "0" for zero, "0x..." otherwise.
pub fn hex_alt(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_qemu() {
        assert_eq!(size_to_str(0), "0 B");
        assert_eq!(size_to_str(1 << 30), "1 GiB");
        assert_eq!(size_to_str(331776), "324 KiB");
        assert_eq!(size_to_str(397312), "388 KiB");
        assert_eq!(size_to_str(3 << 19), "1.5 MiB");
        assert_eq!(size_to_str(1000), "0.977 KiB");
        assert_eq!(size_to_str(196624), "192 KiB");
        assert_eq!(size_to_str(10 << 30), "10 GiB");
    }
}
