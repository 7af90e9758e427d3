//! A small getopt_long with GNU argument permutation, enough for qemu-img's grammar
//! (options may follow the file names, as in `qemu-img create X -b Y -f qcow2 -F qcow2`).

/// One option of a command's grammar.
pub struct OptSpec {
    /// Short letter, if any.
    pub short: Option<char>,
    /// Long name (without `--`), if any.
    pub long: Option<&'static str>,
    pub takes_value: bool,
    /// Canonical key reported in [`Parsed::opts`].
    pub key: &'static str,
}

pub const fn opt(short: char, key: &'static str, takes_value: bool) -> OptSpec {
    OptSpec {
        short: Some(short),
        long: None,
        takes_value,
        key,
    }
}

pub const fn long(name: &'static str, key: &'static str, takes_value: bool) -> OptSpec {
    OptSpec {
        short: None,
        long: Some(name),
        takes_value,
        key,
    }
}

/// Parsed command line of one sub-command.
#[derive(Debug, Default)]
pub struct Parsed {
    pub opts: Vec<(&'static str, String)>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn has(&self, key: &str) -> bool {
        self.opts.iter().any(|(k, _)| *k == key)
    }
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.opts
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Parses `args` (without the program and command names).
pub fn parse(args: &[String], spec: &[OptSpec]) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(rest) = a.strip_prefix("--") {
            let (name, inline) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (rest, None),
            };
            let s = spec
                .iter()
                .find(|s| s.long == Some(name))
                .ok_or_else(|| format!("unrecognized option '--{name}'"))?;
            let v = if s.takes_value {
                match inline {
                    Some(v) => v,
                    None => {
                        let v = args
                            .get(i)
                            .cloned()
                            .ok_or_else(|| format!("option '--{name}' requires an argument"))?;
                        i += 1;
                        v
                    }
                }
            } else {
                if inline.is_some() {
                    return Err(format!("option '--{name}' doesn't allow an argument"));
                }
                String::new()
            };
            p.opts.push((s.key, v));
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let s = spec
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or_else(|| format!("invalid option -- '{c}'"))?;
                if s.takes_value {
                    let v: String = if j < chars.len() {
                        chars[j..].iter().collect()
                    } else {
                        let v = args
                            .get(i)
                            .cloned()
                            .ok_or_else(|| format!("option requires an argument -- '{c}'"))?;
                        i += 1;
                        v
                    };
                    p.opts.push((s.key, v));
                    break;
                }
                p.opts.push((s.key, String::new()));
            }
            continue;
        }
        p.positional.push(a.clone());
    }
    Ok(p)
}

/// Splits a `-o` option string (`a=b,c=d`, `,,` escapes a comma).
pub fn split_kv(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut parts = Vec::new();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    for part in parts {
        match part.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => out.push((part, "on".to_string())),
        }
    }
    out
}
