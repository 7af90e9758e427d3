//! QEMU's number syntaxes: `qemu_strtou64`/`qemu_strtoi64` (C `strtoull` rules: leading
//! blanks, a sign, `0x` hex and `0` octal with base 0, negative values wrap) and
//! `qemu_strtosz` (sizes with an optional fraction and a K/M/G/T/P/E binary suffix).

use nom::bytes::complete::{tag_no_case, take_while, take_while1};
use nom::character::complete::one_of;
use nom::combinator::{opt, recognize};
use nom::{IResult, Parser};

/// Why a number did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    /// Not a number, or trailing characters (`EINVAL`).
    Invalid,
    /// Does not fit (`ERANGE`).
    Range,
}

/// The result of a C `strtoull`/`strtoll` scan: value, bytes consumed (0 = no conversion),
/// and whether it overflowed.
struct Scan {
    value: u64,
    consumed: usize,
    overflow: bool,
    negative: bool,
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Sign and radix prefix, the way `strtoull(s, &end, base)` reads them.
fn prefix(input: &str, base: u32) -> IResult<&str, (bool, u32)> {
    let (rest, _) = take_while(is_c_space)(input)?;
    let (rest, sign) = opt(one_of("+-")).parse(rest)?;
    let negative = sign == Some('-');
    if base == 16 || base == 0 {
        // "0x" counts as a prefix only when a hex digit follows it.
        let hex: IResult<&str, &str> = recognize(tag_no_case("0x")).parse(rest);
        if let Ok((after, _)) = hex {
            if after.starts_with(|c: char| c.is_ascii_hexdigit()) {
                return Ok((after, (negative, 16)));
            }
        }
    }
    if base == 0 {
        if rest.starts_with('0') {
            return Ok((rest, (negative, 8)));
        }
        return Ok((rest, (negative, 10)));
    }
    Ok((rest, (negative, base)))
}

fn scan_unsigned(input: &str, base: u32) -> Scan {
    let none = Scan {
        value: 0,
        consumed: 0,
        overflow: false,
        negative: false,
    };
    let Ok((rest, (negative, radix))) = prefix(input, base) else {
        return none;
    };
    let digits: IResult<&str, &str> = take_while1(|c: char| c.is_digit(radix)).parse(rest);
    let Ok((after, digits)) = digits else {
        return none;
    };
    let mut value: u64 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let d = u64::from(c.to_digit(radix).unwrap_or(0));
        match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(d))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
    }
    Scan {
        value,
        consumed: input.len() - after.len(),
        overflow,
        negative,
    }
}

/// The integer part of a size: an overflow counts as out of range only when nothing
/// follows the digits (QEMU checks for trailing characters last).
fn size_prefix(text: &str, base: u32) -> Result<(u64, usize), NumberError> {
    let scan = scan_unsigned(text, base);
    if scan.overflow && scan.consumed != text.len() {
        return Err(NumberError::Invalid);
    }
    strtou64_prefix(text, base)
}

/// `qemu_strtou64(text, NULL, base, &out)`: the whole text must be one number; a leading
/// `-` wraps modulo 2^64 as in C.
pub fn strtou64(text: &str, base: u32) -> Result<u64, NumberError> {
    let (value, consumed) = strtou64_prefix(text, base)?;
    if consumed != text.len() {
        return Err(NumberError::Invalid);
    }
    Ok(value)
}

/// `qemu_strtou64(text, &end, base, &out)`: a number at the start of `text`; returns the
/// value and the bytes consumed.
fn strtou64_prefix(text: &str, base: u32) -> Result<(u64, usize), NumberError> {
    let scan = scan_unsigned(text, base);
    if scan.consumed == 0 {
        return Err(NumberError::Invalid);
    }
    if scan.overflow {
        // With no end pointer, QEMU reports trailing junk before the overflow.
        return Err(NumberError::Range);
    }
    let value = if scan.negative {
        scan.value.wrapping_neg()
    } else {
        scan.value
    };
    Ok((value, scan.consumed))
}

/// `qemu_strtoi64(text, NULL, base, &out)`.
pub fn strtoi64(text: &str, base: u32) -> Result<i64, NumberError> {
    let scan = scan_unsigned(text, base);
    if scan.consumed == 0 || scan.consumed != text.len() {
        return Err(NumberError::Invalid);
    }
    let limit = if scan.negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if scan.overflow || scan.value > limit {
        return Err(NumberError::Range);
    }
    Ok(if scan.negative {
        (scan.value as i64).wrapping_neg()
    } else {
        scan.value as i64
    })
}

/// A parsed size and whether QEMU warns about it (a hex number with a suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub hex_with_suffix: bool,
}

fn suffix_multiplier(c: Option<char>) -> Option<u64> {
    let shift = match c? {
        'B' | 'b' => 0,
        'K' | 'k' => 10,
        'M' | 'm' => 20,
        'G' | 'g' => 30,
        'T' | 't' => 40,
        'P' | 'p' => 50,
        'E' | 'e' => 60,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// The part of C `strtod` that QEMU's size parser uses: a fraction starting at `.`, with an
/// optional exponent. Returns the bytes consumed (0 = no conversion) and the value.
fn scan_fraction(text: &str) -> (usize, f64, bool) {
    let digits: IResult<&str, &str> = recognize((
        nom::character::complete::char('.'),
        take_while(|c: char| c.is_ascii_digit()),
    ))
    .parse(text);
    let Ok((rest, mantissa)) = digits else {
        return (0, 0.0, false);
    };
    if mantissa.len() == 1 {
        // "." alone is no number for strtod.
        return (0, 0.0, false);
    }
    let exponent: IResult<&str, &str> = recognize((
        one_of("eE"),
        opt(one_of("+-")),
        take_while1(|c: char| c.is_ascii_digit()),
    ))
    .parse(rest);
    let (end, has_exponent) = match exponent {
        Ok((after, _)) => (text.len() - after.len(), true),
        Err(_) => (text.len() - rest.len(), false),
    };
    let value = text[..end].parse::<f64>().unwrap_or(0.0);
    (end, value, has_exponent)
}

/// `qemu_strtosz(text, NULL, &out)`: bytes by default, binary suffixes, decimal fractions
/// with a suffix (`1.5G`), hex integers (`0x1000`; a suffix on hex is deprecated).
pub fn strtosz(text: &str) -> Result<Size, NumberError> {
    strtosz_with_default(text, 'B')
}

/// `do_strtosz` with a default suffix, as used for `-m` where a bare number means MiB.
pub fn strtosz_with_default(text: &str, default_suffix: char) -> Result<Size, NumberError> {
    let (mut value, mut end) = size_prefix(text, 10)?;
    if text[..end].contains('-') {
        return Err(NumberError::Invalid);
    }
    let mut fraction: u64 = 0;
    let mut hex = false;
    let rest = &text[end..];
    if value == 0 && (rest.starts_with('x') || rest.starts_with('X')) {
        let (hex_value, hex_end) = size_prefix(text, 16)?;
        if text[hex_end..].starts_with('.') {
            return Err(NumberError::Invalid);
        }
        value = hex_value;
        end = hex_end;
        hex = true;
    } else if rest.starts_with('.') {
        let (consumed, frac, has_exponent) = scan_fraction(rest);
        if consumed == 0 {
            // strtod failed: QEMU skips the '.' and carries on (so "1.k" is 1K).
            end += 1;
        } else if has_exponent {
            return Err(NumberError::Invalid);
        } else {
            // 64-bit fixed-point fraction, truncated like QEMU's (uint64_t) cast.
            fraction = (frac * 18_446_744_073_709_551_616.0) as u64;
            end += consumed;
        }
    }
    let mut hex_with_suffix = false;
    let multiplier = match suffix_multiplier(text[end..].chars().next()) {
        Some(m) => {
            hex_with_suffix = hex;
            end += 1;
            m
        }
        None => suffix_multiplier(Some(default_suffix)).unwrap_or(1),
    };
    if end != text.len() {
        return Err(NumberError::Invalid);
    }
    let bytes = if multiplier == 1 {
        if fraction != 0 {
            return Err(NumberError::Invalid);
        }
        value
    } else {
        let whole = u128::from(value) * u128::from(multiplier);
        let part = u128::from(fraction) * u128::from(multiplier);
        // Integer part of the fraction, rounded half up on the first dropped bit.
        let total = whole + (part >> 64) + ((part >> 63) & 1);
        u64::try_from(total).map_err(|_| NumberError::Range)?
    };
    Ok(Size {
        bytes,
        hex_with_suffix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtou64_follows_c_rules() {
        assert_eq!(strtou64("10", 0), Ok(10));
        assert_eq!(strtou64("0x10", 0), Ok(16));
        assert_eq!(strtou64("010", 0), Ok(8));
        assert_eq!(strtou64(" 5", 0), Ok(5));
        assert_eq!(strtou64("-1", 0), Ok(u64::MAX));
        assert_eq!(strtou64("5 ", 0), Err(NumberError::Invalid));
        assert_eq!(strtou64("", 0), Err(NumberError::Invalid));
        assert_eq!(strtou64("1e3", 0), Err(NumberError::Invalid));
        assert_eq!(strtou64("0x", 0), Err(NumberError::Invalid));
        assert_eq!(strtou64("18446744073709551615", 0), Ok(u64::MAX));
        assert_eq!(strtou64("18446744073709551616", 0), Err(NumberError::Range));
        assert_eq!(strtou64("08", 0), Err(NumberError::Invalid));
    }

    #[test]
    fn strtoi64_limits() {
        assert_eq!(strtoi64("-4", 0), Ok(-4));
        assert_eq!(strtoi64("foo", 0), Err(NumberError::Invalid));
        assert_eq!(strtoi64("9223372036854775808", 0), Err(NumberError::Range));
        assert_eq!(strtoi64("-9223372036854775808", 0), Ok(i64::MIN));
    }

    fn sz(text: &str) -> Result<u64, NumberError> {
        strtosz(text).map(|s| s.bytes)
    }

    #[test]
    fn sizes() {
        assert_eq!(sz("4G"), Ok(4 << 30));
        assert_eq!(sz("512"), Ok(512));
        assert_eq!(sz("2M"), Ok(2 << 20));
        assert_eq!(sz("1792K"), Ok(1792 << 10));
        assert_eq!(sz("1.5G"), Ok(3 << 29));
        assert_eq!(sz("1.k"), Ok(1024));
        assert_eq!(sz("0x1000"), Ok(4096));
        assert_eq!(
            strtosz("0x10M"),
            Ok(Size {
                bytes: 16 << 20,
                hex_with_suffix: true
            })
        );
        assert_eq!(sz("1.5"), Err(NumberError::Invalid));
        assert_eq!(sz("1.5e3K"), Err(NumberError::Invalid));
        assert_eq!(sz("-1"), Err(NumberError::Invalid));
        assert_eq!(sz("512x"), Err(NumberError::Invalid));
        assert_eq!(sz(""), Err(NumberError::Invalid));
        assert_eq!(sz("16E"), Err(NumberError::Range));
        assert_eq!(sz("99999999999999999999"), Err(NumberError::Range));
        assert_eq!(sz("15E"), Ok(15 << 60));
        assert_eq!(sz("99999999999999999999K"), Err(NumberError::Invalid));
    }

    #[test]
    fn default_suffix_applies_to_bare_numbers() {
        assert_eq!(
            strtosz_with_default("512", 'M').map(|s| s.bytes),
            Ok(512 << 20)
        );
        assert_eq!(
            strtosz_with_default("1G", 'M').map(|s| s.bytes),
            Ok(1 << 30)
        );
    }
}
