//! QEMU's keyval syntax (`util/keyval.c`), used by `-machine`, `-smp`, `-boot`, `-display`,
//! `-blockdev` and `-audio`: `key=value,...` where keys are dotted paths of QAPI names
//! (`file.driver=qcow2`), a first bare item is the implied key (`-smp 4`), a bare `help`
//! asks for help, `,,` is a literal comma in values, and a repeated key replaces the earlier
//! value.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while};
use nom::character::complete::{none_of, satisfy};
use nom::combinator::{recognize, value};
use nom::multi::fold_many0;
use nom::{IResult, Parser};

use super::error::ErrorKind;

/// A keyval value: a string or a nested dictionary (`a.b=1` makes `a` a dictionary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Str(String),
    Dict(Dict),
}

/// An insertion-ordered dictionary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dict {
    entries: Vec<(String, Node)>,
}

impl Dict {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Node::Str(s)) => Some(s),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn get_dict(&self, key: &str) -> Option<&Dict> {
        match self.get(key) {
            Some(Node::Dict(d)) => Some(d),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Node> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    pub fn put_str(&mut self, key: &str, value: &str) {
        self.put(key, Node::Str(value.to_string()));
    }

    pub fn put_dict(&mut self, key: &str, dict: Dict) {
        self.put(key, Node::Dict(dict));
    }

    fn put(&mut self, key: &str, node: Node) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = node,
            None => self.entries.push((key.to_string(), node)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `keyval_merge`: merges `other` into `self`, dictionaries recursively, strings
    /// replacing; a string meeting a dictionary is QEMU's "used inconsistently" error.
    pub fn merge(&mut self, other: &Dict, prefix: &str) -> Result<(), ErrorKind> {
        for (key, node) in &other.entries {
            let path = format!("{prefix}{key}");
            match (self.get(key).cloned(), node) {
                (Some(Node::Dict(mut mine)), Node::Dict(theirs)) => {
                    mine.merge(theirs, &format!("{path}."))?;
                    self.put(key, Node::Dict(mine));
                }
                (Some(Node::Dict(_)), Node::Str(_)) | (Some(Node::Str(_)), Node::Dict(_)) => {
                    return Err(ErrorKind::InconsistentKey(path));
                }
                _ => self.put(key, node.clone()),
            }
        }
        Ok(())
    }
}

/// `parse_qapi_name(s, false)`: a letter, then letters, digits, `-` and `_`.
fn qapi_name(input: &str) -> IResult<&str, &str> {
    recognize((
        satisfy(|c| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
    ))
    .parse(input)
}

/// A value after `=`: up to a single comma; `,,` is a comma.
fn escaped_value(input: &str) -> IResult<&str, String> {
    fold_many0(
        alt((value(',', tag(",,")), none_of(","))),
        String::new,
        |mut text, c| {
            text.push(c);
            text
        },
    )
    .parse(input)
}

fn is_help(text: &str) -> bool {
    text == "help" || text == "?"
}

/// Keys longer than this are rejected (QEMU's `key_in_cur[128]`).
const MAX_FRAGMENT: usize = 127;

/// Splits a key into fragments, checking each as QEMU does.
fn key_fragments(key: &str) -> Result<Vec<&str>, ErrorKind> {
    let mut fragments = Vec::new();
    let mut rest = key;
    loop {
        let first = fragments.is_empty();
        let digits_len = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        let len = if !first && digits_len > 0 {
            digits_len
        } else {
            qapi_name(rest).map(|(_, name)| name.len()).unwrap_or(0)
        };
        if len == 0 || (len < rest.len() && !rest[len..].starts_with('.')) {
            return Err(ErrorKind::InvalidParameter(key.to_string()));
        }
        if len > MAX_FRAGMENT {
            let fragment = if first && len == key.len() {
                ""
            } else {
                " fragment"
            };
            return Err(ErrorKind::message(format!(
                "Parameter{fragment} '{}' is too long",
                &rest[..len]
            )));
        }
        fragments.push(&rest[..len]);
        rest = &rest[len..];
        match rest.strip_prefix('.') {
            Some(after) => rest = after,
            None => return Ok(fragments),
        }
    }
}

/// Parses `params` into `dict` (QEMU's `keyval_parse_into`). Returns whether a bare
/// `help` item was present.
pub fn parse_into(dict: &mut Dict, params: &str, implied: Option<&str>) -> Result<bool, ErrorKind> {
    let mut help = false;
    let mut rest = params;
    let mut implied = implied;
    while !rest.is_empty() {
        let (after_key, raw_key) =
            take_till::<_, _, nom::error::Error<&str>>(|c| c == '=' || c == ',')(rest)
                .map_err(|_| ErrorKind::InvalidParameter(String::new()))?;
        let bare = !raw_key.is_empty() && !after_key.starts_with('=');
        if bare && is_help(raw_key) {
            help = true;
            rest = after_key.strip_prefix(',').unwrap_or(after_key);
            implied = None;
            continue;
        }
        let (key, value, next) = match (bare, implied) {
            (true, Some(implied_key)) => {
                // The implied value ends at the first '=' or ',' and is not unescaped.
                let next = after_key.strip_prefix(',').unwrap_or(after_key);
                (implied_key, raw_key.to_string(), next)
            }
            _ => {
                let fragments = key_fragments(raw_key)?;
                debug_assert!(!fragments.is_empty());
                let Some(after_eq) = after_key.strip_prefix('=') else {
                    return Err(ErrorKind::ExpectedEquals(raw_key.to_string()));
                };
                let (next, value) = escaped_value(after_eq)
                    .map_err(|_| ErrorKind::InvalidParameter(raw_key.to_string()))?;
                let next = next.strip_prefix(',').unwrap_or(next);
                (raw_key, value, next)
            }
        };
        put_path(dict, key, value)?;
        rest = next;
        implied = None;
    }
    Ok(help)
}

/// Stores `value` at the dotted `key`, creating dictionaries on the way.
fn put_path(dict: &mut Dict, key: &str, value: String) -> Result<(), ErrorKind> {
    let fragments: Vec<&str> = key.split('.').collect();
    let mut cur = dict;
    let mut consumed = 0;
    for (i, fragment) in fragments.iter().enumerate() {
        consumed += fragment.len();
        let last = i + 1 == fragments.len();
        if last {
            if let Some(Node::Dict(_)) = cur.get(fragment) {
                return Err(ErrorKind::InconsistentKey(key[..consumed].to_string()));
            }
            cur.put(fragment, Node::Str(value));
            return Ok(());
        }
        if let Some(Node::Str(_)) = cur.get(fragment) {
            return Err(ErrorKind::InconsistentKey(key[..consumed].to_string()));
        }
        if cur.get(fragment).is_none() {
            cur.put(fragment, Node::Dict(Dict::default()));
        }
        cur = match cur
            .entries
            .iter_mut()
            .find(|(k, _)| k == fragment)
            .map(|(_, v)| v)
        {
            Some(Node::Dict(d)) => d,
            _ => return Err(ErrorKind::InconsistentKey(key[..consumed].to_string())),
        };
        consumed += 1;
    }
    Ok(())
}

/// Parses `params` into a fresh dictionary.
pub fn parse(params: &str, implied: Option<&str>) -> Result<(Dict, bool), ErrorKind> {
    let mut dict = Dict::default();
    let help = parse_into(&mut dict, params, implied)?;
    Ok((dict, help))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(params: &str, implied: Option<&str>) -> String {
        parse(params, implied).unwrap_err().to_string()
    }

    #[test]
    fn implied_key_and_pairs() {
        let (d, help) = parse("4,sockets=1,cores=4", Some("cpus")).unwrap();
        assert!(!help);
        assert_eq!(d.get_str("cpus"), Some("4"));
        assert_eq!(d.get_str("cores"), Some("4"));
        let (d, _) = parse("accel=kvm:tcg,graphics=off", Some("type")).unwrap();
        assert_eq!(d.get_str("accel"), Some("kvm:tcg"));
        assert_eq!(d.get_str("type"), None);
    }

    #[test]
    fn dotted_keys_nest_and_values_unescape() {
        let (d, _) = parse("file.driver=file,file.filename=a,,b", Some("driver")).unwrap();
        let file = d.get_dict("file").unwrap();
        assert_eq!(file.get_str("filename"), Some("a,b"));
        assert_eq!(
            err("file=x,file.driver=y", None),
            "Parameters 'file.*' used inconsistently"
        );
    }

    #[test]
    fn errors_match_qemu() {
        assert_eq!(
            err("4,foo", Some("cpus")),
            "Expected '=' after parameter 'foo'"
        );
        assert_eq!(err(",pc", Some("type")), "Invalid parameter ''");
        assert_eq!(err("pc,,x", Some("type")), "Invalid parameter ''");
        assert_eq!(err("a b=1", None), "Invalid parameter 'a b'");
        assert_eq!(err("1a=1", None), "Invalid parameter '1a'");
        let long = "a".repeat(128);
        assert_eq!(
            err(&format!("{long}=1"), None),
            format!("Parameter '{long}' is too long")
        );
    }

    #[test]
    fn help_and_replacement() {
        let (_, help) = parse("4,help", Some("cpus")).unwrap();
        assert!(help);
        let (_, help) = parse("help", Some("type")).unwrap();
        assert!(help);
        let (d, _) = parse("cpus=4,cpus=2", Some("cpus")).unwrap();
        assert_eq!(d.get_str("cpus"), Some("2"));
    }

    #[test]
    fn merge_replaces_strings_and_merges_dicts() {
        let (mut a, _) = parse("pc,accel=kvm", Some("type")).unwrap();
        let (b, _) = parse("accel=tcg,memory.size=1G", None).unwrap();
        a.merge(&b, "").unwrap();
        assert_eq!(a.get_str("accel"), Some("tcg"));
        assert_eq!(a.get_str("type"), Some("pc"));
        assert_eq!(a.get_dict("memory").unwrap().get_str("size"), Some("1G"));
    }
}
