//! QEMU's JSON serialisation (qobject/json-writer.c, 7.2): `", "` and `": "` separators,
//! pure-ASCII strings with upper-case `\uXXXX` escapes, `%.17g` doubles, QDict key order,
//! and the `pretty=on` layout.

use std::fmt::Write;

use super::qobject::QObject;
use super::utf8::mod_utf8_codepoint;

/// Serialises `value` as QEMU does (no trailing newline).
pub fn to_json(value: &QObject, pretty: bool) -> String {
    let mut writer = Writer {
        out: String::new(),
        pretty,
        depth: 0,
    };
    writer.value(value);
    writer.out
}

struct Writer {
    out: String,
    pretty: bool,
    depth: usize,
}

impl Writer {
    fn newline(&mut self) {
        if self.pretty {
            self.out.push('\n');
            for _ in 0..self.depth {
                self.out.push_str("    ");
            }
        }
    }

    /// Between members: `, ` compact, `,` + newline pretty.
    fn separator(&mut self) {
        self.out.push(',');
        if self.pretty {
            self.newline();
        } else {
            self.out.push(' ');
        }
    }

    fn value(&mut self, value: &QObject) {
        match value {
            QObject::Null => self.out.push_str("null"),
            QObject::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            QObject::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            QObject::Uint(u) => {
                let _ = write!(self.out, "{u}");
            }
            QObject::Double(d) => self.out.push_str(&format_g17(*d)),
            QObject::String(s) => quoted_str(&mut self.out, s.as_bytes()),
            QObject::List(items) => {
                self.out.push('[');
                self.depth += 1;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.separator();
                    } else {
                        self.newline();
                    }
                    self.value(item);
                }
                self.depth -= 1;
                // QEMU breaks the line before a closing bracket even when it is empty.
                self.newline();
                self.out.push(']');
            }
            QObject::Dict(dict) => {
                self.out.push('{');
                self.depth += 1;
                for (i, (key, item)) in dict.iter_qemu_order().enumerate() {
                    if i > 0 {
                        self.separator();
                    } else {
                        self.newline();
                    }
                    quoted_str(&mut self.out, key.as_bytes());
                    self.out.push_str(": ");
                    self.value(item);
                }
                self.depth -= 1;
                // QEMU breaks the line before a closing bracket even when it is empty.
                self.newline();
                self.out.push('}');
            }
        }
    }
}

/// A string as QEMU quotes it: the short escapes for `"` `\` and five control characters,
/// `\uXXXX` (upper-case hex, surrogate pairs beyond the BMP) for everything else outside
/// printable ASCII, `\uFFFD` for bytes that are not (modified) UTF-8. `/` stays as is.
pub fn quoted_str(out: &mut String, bytes: &[u8]) {
    out.push('"');
    let mut pos = 0;
    while pos < bytes.len() {
        let (cp, len) = mod_utf8_codepoint(&bytes[pos..]);
        pos += len;
        let cp = cp.unwrap_or(0xFFFD);
        match cp {
            0x22 => out.push_str("\\\""),
            0x5C => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x0C => out.push_str("\\f"),
            0x0A => out.push_str("\\n"),
            0x0D => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            _ if cp > 0xFFFF => {
                let v = cp - 0x10000;
                let _ = write!(
                    out,
                    "\\u{:04X}\\u{:04X}",
                    0xD800 | (v >> 10),
                    0xDC00 | (v & 0x3FF)
                );
            }
            _ if !(0x20..0x7F).contains(&cp) => {
                let _ = write!(out, "\\u{cp:04X}");
            }
            _ => out.push(cp as u8 as char),
        }
    }
    out.push('"');
}

/// C's `printf("%.17g", d)`, which QEMU uses for doubles.
pub fn format_g17(d: f64) -> String {
    const PRECISION: i32 = 17;
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    // The exponent %e would print, after rounding to 17 significant digits.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, d);
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if (-4..PRECISION).contains(&exp) {
        let fixed = format!("{:.*}", (PRECISION - 1 - exp) as usize, d);
        strip_fraction_zeros(&fixed).to_string()
    } else {
        format!(
            "{}e{}{:02}",
            strip_fraction_zeros(mantissa),
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

fn strip_fraction_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::super::qobject::QDict;
    use super::*;

    #[test]
    fn doubles_print_like_printf_g17() {
        // QEMU 7.2 echoed these ids this way.
        assert_eq!(format_g17(1e300), "1.0000000000000001e+300");
        assert_eq!(format_g17(0.1), "0.10000000000000001");
        assert_eq!(format_g17(-0.0), "-0");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(
            format_g17(-9223372036854775809.0),
            "-9.2233720368547758e+18"
        );
        assert_eq!(format_g17(1.0), "1");
        assert_eq!(format_g17(1.5), "1.5");
        assert_eq!(format_g17(0.0001), "0.0001");
        assert_eq!(format_g17(0.00001), "1.0000000000000001e-05");
        assert_eq!(format_g17(f64::INFINITY), "inf");
    }

    #[test]
    fn strings_are_pure_ascii_with_upper_case_escapes() {
        let mut out = String::new();
        quoted_str(&mut out, "nopé\t\0/😀\"\\\u{7f}".as_bytes());
        assert_eq!(out, r#""nop\u00E9\t\u0000/\uD83D\uDE00\"\\\u007F""#);
        let mut out = String::new();
        quoted_str(&mut out, b"a\xffb");
        assert_eq!(out, r#""a\uFFFDb""#);
    }

    #[test]
    fn compact_and_pretty_layouts() {
        let value = QObject::Dict(
            QDict::new()
                .with("return", QDict::new())
                .with("id", QObject::List(vec![1i64.into(), "x".into()])),
        );
        assert_eq!(to_json(&value, false), r#"{"return": {}, "id": [1, "x"]}"#);
        assert_eq!(
            to_json(&value, true),
            "{\n    \"return\": {\n    },\n    \"id\": [\n        1,\n        \"x\"\n    ]\n}"
        );
        // QEMU 7.2 prints `"return": {\n    }` for an empty object.
        assert_eq!(to_json(&QObject::List(vec![]), true), "[\n]");
        assert_eq!(
            to_json(
                &QObject::Dict(QDict::new().with("return", QDict::new())),
                true
            ),
            "{\n    \"return\": {\n    }\n}"
        );
        assert_eq!(to_json(&QObject::Dict(QDict::new()), false), "{}");
    }
}
