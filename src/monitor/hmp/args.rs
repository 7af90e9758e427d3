//! Argument parsing for HMP commands beyond "no arguments" and "rest of the line": QEMU's
//! `-x` flags and its integer expressions (`1`, `0x10`, `(2+3)*4`), with its error texts.

use super::readline::is_space;

/// `info registers [-a] [vcpu]`: (all vCPUs, the vCPU asked for). Errors are QEMU's first
/// error line (the caller adds the `Try "help ..."` line).
pub(crate) fn registers(rest: &[u8]) -> Result<(bool, Option<i64>), String> {
    let mut p = Cursor {
        text: rest,
        pos: 0,
        depth: 0,
    };
    p.skip_spaces();
    let mut all = false;
    if p.peek() == Some(b'-') {
        match p.text.get(p.pos + 1) {
            Some(b'a') => {
                all = true;
                p.pos += 2;
            }
            Some(&c) => return Err(format!("registers: unsupported option -{}", c as char)),
            None => return Err("registers: unsupported option -".to_string()),
        }
    }
    p.skip_spaces();
    let vcpu = if p.peek().is_none() {
        None
    } else {
        let value = p.sum()?;
        if !(i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&value) {
            return Err("integer is for 32-bit values".to_string());
        }
        // QEMU keeps the low 32 bits as a signed int.
        Some(i64::from(value as i32))
    };
    p.skip_spaces();
    if p.peek().is_some() {
        return Err("registers: extraneous characters at the end of line".to_string());
    }
    Ok((all, vcpu))
}

/// The flags of `info mtree [-f][-d][-o][-D]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MtreeFlags {
    pub(crate) flatview: bool,
    pub(crate) dispatch_tree: bool,
    pub(crate) owner: bool,
    pub(crate) disabled: bool,
}

/// `info mtree`'s `flatview:-f,dispatch_tree:-d,owner:-o,disabled:-D`, by QEMU's rules:
/// each flag is looked for in that order and only where the previous one stopped, so
/// `-D -f` leaves `-f` as extraneous text; a letter that is none of the flags still to come
/// is an unsupported option. Errors are QEMU's first error line.
pub(crate) fn mtree_flags(rest: &[u8]) -> Result<MtreeFlags, String> {
    const KEYS: [u8; 4] = [b'f', b'd', b'o', b'D'];
    let mut p = Cursor {
        text: rest,
        pos: 0,
        depth: 0,
    };
    let mut set = [false; 4];
    for (i, &key) in KEYS.iter().enumerate() {
        p.skip_spaces();
        if p.peek() != Some(b'-') {
            continue;
        }
        match p.text.get(p.pos + 1).copied() {
            Some(c) if c == key => {
                set[i] = true;
                p.pos += 2;
            }
            // QEMU looks the letter up among the flags after this one (a line ending in
            // `-` matches any of them); a later key will take it.
            other => {
                let later = &KEYS[i + 1..];
                let valid = match other {
                    Some(c) => later.contains(&c),
                    None => !later.is_empty(),
                };
                if !valid {
                    let shown = other.map_or(String::new(), |c| (c as char).to_string());
                    return Err(format!("mtree: unsupported option -{shown}"));
                }
            }
        }
    }
    p.skip_spaces();
    if p.peek().is_some() {
        return Err("mtree: extraneous characters at the end of line".to_string());
    }
    Ok(MtreeFlags {
        flatview: set[0],
        dispatch_tree: set[1],
        owner: set[2],
        disabled: set[3],
    })
}

/// Nesting allowed in an expression: as much as a terminal line (4095 bytes) can hold, so
/// HMP sockets behave as QEMU's; only longer lines, through QMP's `human-monitor-command`,
/// meet the limit (QEMU 7.2 overflows its stack there).
const MAX_EXPRESSION_DEPTH: usize = 4096;

struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
    /// Unary operators and parentheses open around the current position.
    depth: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    /// Consumes `c` and the blanks after it.
    fn next_token(&mut self) {
        self.pos += 1;
        self.skip_spaces();
    }

    fn sum(&mut self) -> Result<i64, String> {
        let mut value = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.next_token();
            let rhs = self.product()?;
            value = if op == b'+' {
                value.wrapping_add(rhs)
            } else {
                value.wrapping_sub(rhs)
            };
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<i64, String> {
        let mut value = self.logic()?;
        while let Some(op @ (b'*' | b'/' | b'%')) = self.peek() {
            self.next_token();
            let rhs = self.logic()?;
            value = match op {
                b'*' => value.wrapping_mul(rhs),
                _ if rhs == 0 => return Err("division by zero".to_string()),
                b'/' => value.wrapping_div(rhs),
                _ => value.wrapping_rem(rhs),
            };
        }
        Ok(value)
    }

    fn logic(&mut self) -> Result<i64, String> {
        let mut value = self.unary()?;
        while let Some(op @ (b'&' | b'|' | b'^')) = self.peek() {
            self.next_token();
            let rhs = self.unary()?;
            value = match op {
                b'&' => value & rhs,
                b'|' => value | rhs,
                _ => value ^ rhs,
            };
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<i64, String> {
        if self.depth >= MAX_EXPRESSION_DEPTH {
            return Err("expression nested too deeply".to_string());
        }
        self.depth += 1;
        let value = self.unary_operand();
        self.depth -= 1;
        value
    }

    fn unary_operand(&mut self) -> Result<i64, String> {
        let value = match self.peek() {
            Some(b'+') => {
                self.next_token();
                self.unary()?
            }
            Some(b'-') => {
                self.next_token();
                self.unary()?.wrapping_neg()
            }
            Some(b'~') => {
                self.next_token();
                !self.unary()?
            }
            Some(b'(') => {
                self.next_token();
                let value = self.sum()?;
                if self.peek() != Some(b')') {
                    return Err("')' expected".to_string());
                }
                self.pos += 1;
                value
            }
            None => return Err("unexpected end of expression".to_string()),
            Some(c) if c.is_ascii_digit() => self.number()?,
            Some(c) => return Err(format!("invalid char '{}' in expression", c as char)),
        };
        self.skip_spaces();
        Ok(value)
    }

    /// A C integer literal (`strtoull` with base 0: decimal, `0x` hex, `0` octal).
    fn number(&mut self) -> Result<i64, String> {
        let rest = &self.text[self.pos..];
        let (radix, skip) = if rest.len() > 2
            && rest[0] == b'0'
            && (rest[1] | 0x20) == b'x'
            && rest[2].is_ascii_hexdigit()
        {
            (16, 2)
        } else if rest[0] == b'0' {
            (8, 0)
        } else {
            (10, 0)
        };
        let digits = rest[skip..]
            .iter()
            .take_while(|c| (**c as char).is_digit(radix))
            .count();
        let text = std::str::from_utf8(&rest[skip..skip + digits]).unwrap_or("0");
        let value = u64::from_str_radix(text, radix).map_err(|_| "number too large".to_string())?;
        self.pos += skip + digits;
        Ok(value as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_nest_up_to_a_bound() {
        // A big stack: the point is the bound, not the test thread's 2 MiB.
        let deep = |levels: usize| {
            let text = format!("{}1{}", "(".repeat(levels), ")".repeat(levels));
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn(move || registers(text.as_bytes()))
                .unwrap()
                .join()
                .unwrap()
        };
        assert_eq!(deep(2000), Ok((false, Some(1))));
        assert_eq!(
            deep(300_000),
            Err("expression nested too deeply".to_string())
        );
    }

    #[test]
    fn mtree_flags_as_qemu_7_2() {
        assert_eq!(mtree_flags(b""), Ok(MtreeFlags::default()));
        assert_eq!(
            mtree_flags(b" -D"),
            Ok(MtreeFlags {
                disabled: true,
                ..MtreeFlags::default()
            })
        );
        assert_eq!(
            mtree_flags(b"-f -d -o -D"),
            Ok(MtreeFlags {
                flatview: true,
                dispatch_tree: true,
                owner: true,
                disabled: true,
            })
        );
        let extraneous = Err("mtree: extraneous characters at the end of line".to_string());
        assert_eq!(mtree_flags(b"-D -f"), extraneous);
        assert_eq!(mtree_flags(b"-fd"), extraneous);
        assert_eq!(mtree_flags(b"x"), extraneous);
        assert_eq!(
            mtree_flags(b"-x"),
            Err("mtree: unsupported option -x".to_string())
        );
    }

    /// Texts and values QEMU 7.2 gave for these argument strings.
    #[test]
    fn as_qemu_7_2() {
        assert_eq!(registers(b""), Ok((false, None)));
        assert_eq!(registers(b"  -a"), Ok((true, None)));
        assert_eq!(registers(b"-a 0"), Ok((true, Some(0))));
        assert_eq!(registers(b"0x1"), Ok((false, Some(1))));
        assert_eq!(registers(b"1+0"), Ok((false, Some(1))));
        assert_eq!(registers(b"(0-1)"), Ok((false, Some(-1))));
        assert_eq!(registers(b"010"), Ok((false, Some(8))));
        assert_eq!(
            registers(b"x"),
            Err("invalid char 'x' in expression".to_string())
        );
        assert_eq!(
            registers(b"-b"),
            Err("registers: unsupported option -b".to_string())
        );
        assert_eq!(
            registers(b"-1"),
            Err("registers: unsupported option -1".to_string())
        );
        assert_eq!(
            registers(b"1 2"),
            Err("registers: extraneous characters at the end of line".to_string())
        );
        assert_eq!(registers(b"1/0"), Err("division by zero".to_string()));
    }
}
