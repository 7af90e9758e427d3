//! QEMU's QemuOpts option groups (`-chardev socket,path=x,server=on`, `-m 4G`, `-drive ...`):
//! the grammar, parsed with nom, and the per-group schemas QEMU validates keys and values
//! against while it reads the command line.
//!
//! Grammar (QEMU's `get_opt_name_value`): items separated by `,`; an item is `name=value`,
//! a bare `name` (a flag: `name=on`, or `noname` for `name=off`), or, for the first item of
//! a group with an implied name, a bare value (`-m 4G` is `size=4G`). In values `,,` stands
//! for one comma. The `id` item names the group instance.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till};
use nom::character::complete::{char, none_of};
use nom::combinator::{opt, value};
use nom::multi::fold_many0;
use nom::sequence::preceded;
use nom::{IResult, Parser};

use super::error::{ErrorKind, Location, Warning};
use super::numbers::{self, NumberError};
use super::Console;

/// The type QEMU checks a value against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptType {
    Str,
    Bool,
    Number,
    Size,
}

impl OptType {
    /// The type name `-OPT help` prints.
    fn help_name(self) -> &'static str {
        match self {
            OptType::Str => "str",
            OptType::Bool => "bool (on/off)",
            OptType::Number => "num",
            OptType::Size => "size",
        }
    }
}

/// One accepted key of a group.
#[derive(Clone, Copy, Debug)]
pub struct OptDesc {
    pub name: &'static str,
    pub ty: OptType,
    pub help: Option<&'static str>,
}

/// Shorthand for schema tables.
pub const fn desc(name: &'static str, ty: OptType) -> OptDesc {
    OptDesc {
        name,
        ty,
        help: None,
    }
}

/// A group's schema (QEMU's `QemuOptsList`).
#[derive(Debug)]
pub struct OptsList {
    /// Used in `Duplicate ID 'x' for NAME` and help captions.
    pub name: &'static str,
    /// The key of a bare first item (`-m 4G`).
    pub implied: Option<&'static str>,
    /// Several occurrences merge into one group (`-m`, `-name`, `-rtc`).
    pub merge: bool,
    /// Accepted keys; empty means any key is accepted (checked later by the consumer).
    pub descs: &'static [OptDesc],
}

impl OptsList {
    fn accepts_any(&self) -> bool {
        self.descs.is_empty()
    }

    fn find(&self, name: &str) -> Option<&OptDesc> {
        self.descs.iter().find(|d| d.name == name)
    }

    /// The text QEMU prints for `-OPT ...,help` (`qemu_opts_print_help`).
    pub fn help_text(&self) -> String {
        let mut lines: Vec<String> = self
            .descs
            .iter()
            .map(|d| {
                let mut line = format!("  {}=<{}>", d.name, d.ty.help_name());
                if let Some(help) = d.help {
                    if line.len() < 24 {
                        line.push_str(&" ".repeat(24 - line.len()));
                    }
                    line.push_str(" - ");
                    line.push_str(help);
                }
                line
            })
            .collect();
        lines.sort();
        let mut out = String::new();
        if lines.is_empty() {
            out.push_str(&format!("There are no options for {}.\n", self.name));
        } else {
            out.push_str(&format!("{} options:\n", self.name));
        }
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// One parsed group instance, its items in command-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opts {
    pub id: Option<String>,
    items: Vec<(String, String)>,
    /// Where it came from, for errors QEMU reports later at this option.
    pub location: Location,
}

impl Opts {
    pub fn new(id: Option<String>, location: Location) -> Self {
        Opts {
            id,
            items: Vec::new(),
            location,
        }
    }

    /// The last value given for `name` (QEMU's `qemu_opt_get`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A boolean already validated by the schema; `default` when absent.
    pub fn get_bool(&self, name: &str, default: bool) -> bool {
        self.get(name)
            .and_then(|v| parse_bool(v).ok())
            .unwrap_or(default)
    }

    /// A number already validated by the schema; `default` when absent.
    pub fn get_number(&self, name: &str, default: u64) -> u64 {
        self.get(name)
            .and_then(|v| numbers::strtou64(v, 0).ok())
            .unwrap_or(default)
    }

    /// A size already validated by the schema; `default` when absent.
    pub fn get_size(&self, name: &str, default: u64) -> u64 {
        self.get(name)
            .and_then(|v| numbers::strtosz(v).ok())
            .map(|s| s.bytes)
            .unwrap_or(default)
    }

    /// Every item in order.
    pub fn items(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Adds an item without validation (QEMU's `qemu_opt_set` from its own code).
    pub fn set(&mut self, name: &str, value: &str) {
        self.items.push((name.to_string(), value.to_string()));
    }
}

/// A parsed item before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// `name=value`
    Pair(String, String),
    /// A bare first item of a group with an implied key.
    Implied(String),
    /// A bare `name` or `noname`.
    Flag { name: String, negated: bool },
}

/// `get_opt_value`: up to the next single comma; `,,` is a literal comma.
fn opt_value(input: &str) -> IResult<&str, String> {
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

/// One item and the separator after it.
fn item(input: &str, implied: bool) -> IResult<&str, Item> {
    let (after_name, name) = take_till(|c| c == '=' || c == ',')(input)?;
    let (rest, item) = if after_name.starts_with('=') {
        let (rest, value) = preceded(char('='), opt_value).parse(after_name)?;
        (rest, Item::Pair(name.to_string(), value))
    } else if implied {
        // The implied value is read from the start, so `a,,b` is the value "a,b".
        let (rest, value) = opt_value(input)?;
        (rest, Item::Implied(value))
    } else {
        let item = match name.strip_prefix("no") {
            Some(stripped) => Item::Flag {
                name: stripped.to_string(),
                negated: true,
            },
            None => Item::Flag {
                name: name.to_string(),
                negated: false,
            },
        };
        (after_name, item)
    };
    let (rest, _) = opt(char(',')).parse(rest)?;
    Ok((rest, item))
}

/// Splits a parameter string into items.
fn items(params: &str, implied: bool) -> Vec<Item> {
    let mut out = Vec::new();
    let mut rest = params;
    let mut first = implied;
    while !rest.is_empty() {
        // `item` consumes at least one character of a non-empty input or fails on none.
        match item(rest, first) {
            Ok((next, parsed)) if next.len() < rest.len() => {
                out.push(parsed);
                rest = next;
            }
            _ => break,
        }
        first = false;
    }
    out
}

fn is_help(name: &str) -> bool {
    name == "help" || name == "?"
}

/// QEMU's boolean spellings (`qapi_bool_parse`).
pub fn parse_bool(value: &str) -> Result<bool, ()> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(()),
    }
}

/// QEMU's `id_wellformed`.
pub fn id_wellformed(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Checks a value against its declared type (`qemu_opt_parse`).
pub fn validate_value(name: &str, ty: OptType, value: &str) -> Result<(), ErrorKind> {
    match ty {
        OptType::Str => Ok(()),
        OptType::Bool => parse_bool(value)
            .map(|_| ())
            .map_err(|_| ErrorKind::invalid_value(name, "'on' or 'off'")),
        OptType::Number => match numbers::strtou64(value, 0) {
            Ok(_) => Ok(()),
            Err(NumberError::Range) => Err(ErrorKind::NumberTooLarge {
                name: name.to_string(),
                value: value.to_string(),
            }),
            Err(NumberError::Invalid) => Err(ErrorKind::invalid_value(name, "a number")),
        },
        OptType::Size => match numbers::strtosz(value) {
            Ok(_) => Ok(()),
            Err(NumberError::Range) => Err(ErrorKind::SizeOutOfRange {
                name: name.to_string(),
                value: value.to_string(),
            }),
            Err(NumberError::Invalid) => Err(ErrorKind::invalid_value(
                name,
                "a non-negative number below 2^64",
            )),
        },
    }
}

/// What parsing a group produced.
#[derive(Debug)]
pub enum Parsed {
    /// Index of the (possibly merged) instance in the store.
    Opts(usize),
    /// A `help` flag: QEMU prints the group's keys and exits with status 1.
    HelpWanted,
}

/// All instances of one group given on the command line (QEMU keeps one list per group).
#[derive(Debug)]
pub struct OptsStore {
    pub list: &'static OptsList,
    pub entries: Vec<Opts>,
}

impl OptsStore {
    pub fn new(list: &'static OptsList) -> Self {
        OptsStore {
            list,
            entries: Vec::new(),
        }
    }

    /// `qemu_opts_parse_noisily`: short-form flags warn, `help` is recognised.
    pub fn parse_noisily(
        &mut self,
        params: &str,
        permit_abbrev: bool,
        location: &Location,
        console: &mut Console,
    ) -> Result<Parsed, ErrorKind> {
        self.parse(params, permit_abbrev, true, location, console)
    }

    /// `qemu_opts_parse` family: `warn_on_flag` selects QEMU's deprecation warning for
    /// short-form booleans (`server` instead of `server=on`).
    pub fn parse(
        &mut self,
        params: &str,
        permit_abbrev: bool,
        warn_on_flag: bool,
        location: &Location,
        console: &mut Console,
    ) -> Result<Parsed, ErrorKind> {
        let implied = if permit_abbrev {
            self.list.implied
        } else {
            None
        };
        let id = first_id(params);
        let before = self.entries.len();
        let index = self.create(id, location)?;
        let result = self.fill(index, params, implied, warn_on_flag, location, console);
        match result {
            Ok(Some(())) => Ok(Parsed::Opts(index)),
            Ok(None) => {
                self.discard_new(before);
                Ok(Parsed::HelpWanted)
            }
            Err(e) => {
                self.discard_new(before);
                Err(e)
            }
        }
    }

    /// `qemu_opts_create`: checks the id and finds or makes the instance.
    pub fn create(&mut self, id: Option<String>, location: &Location) -> Result<usize, ErrorKind> {
        if let Some(id) = &id {
            if !id_wellformed(id) {
                return Err(ErrorKind::invalid_value("id", "an identifier"));
            }
            if let Some(i) = self.entries.iter().position(|o| o.id.as_ref() == Some(id)) {
                if !self.list.merge {
                    return Err(ErrorKind::DuplicateId {
                        id: id.clone(),
                        group: self.list.name.to_string(),
                    });
                }
                return Ok(i);
            }
        } else if self.list.merge {
            // QEMU keeps the location of the first occurrence.
            if let Some(i) = self.entries.iter().position(|o| o.id.is_none()) {
                return Ok(i);
            }
        }
        self.entries.push(Opts::new(id, location.clone()));
        Ok(self.entries.len() - 1)
    }

    /// Drops an instance this parse created (QEMU deletes it on failure).
    fn discard_new(&mut self, before: usize) {
        self.entries.truncate(before);
    }

    /// `opts_do_parse`: adds the items of `params` to instance `index`, validating each;
    /// a bare first item is the value of `implied`. `Ok(None)` means a `help` flag.
    pub fn fill(
        &mut self,
        index: usize,
        params: &str,
        implied: Option<&str>,
        warn_on_flag: bool,
        location: &Location,
        console: &mut Console,
    ) -> Result<Option<()>, ErrorKind> {
        let list = self.list;
        for item in items(params, implied.is_some()) {
            let (name, value) = match item {
                Item::Pair(n, v) => (n, v),
                Item::Implied(v) => (implied.unwrap_or_default().to_string(), v),
                Item::Flag { name, negated } => {
                    let help = !negated && is_help(&name);
                    if help && !list.accepts_any() {
                        return Ok(None);
                    }
                    if !help && warn_on_flag {
                        let prefix = if negated { "no" } else { "" };
                        let value = if negated { "off" } else { "on" };
                        let advice = if name == "delay" {
                            format!("Please use nodelay={}", if negated { "on" } else { "off" })
                        } else {
                            format!("Please use {name}={value}")
                        };
                        console.warn(
                            Warning::new(
                                location,
                                format!("short-form boolean option '{prefix}{name}' deprecated"),
                            )
                            .with_hint(format!("{advice} instead")),
                        );
                    }
                    let value = if negated { "off" } else { "on" };
                    (name, value.to_string())
                }
            };
            if name == "id" {
                continue;
            }
            if !list.accepts_any() {
                let desc = list
                    .find(&name)
                    .ok_or_else(|| ErrorKind::InvalidParameter(name.clone()))?;
                validate_value(&name, desc.ty, &value)?;
                if desc.ty == OptType::Size
                    && numbers::strtosz(&value).is_ok_and(|s| s.hex_with_suffix)
                {
                    console.warn(Warning::new(
                        location,
                        format!("Using a multiplier suffix on hex numbers is deprecated: {value}"),
                    ));
                }
            }
            self.entries[index].items.push((name, value));
        }
        Ok(Some(()))
    }
}

/// `opts_parse_id`: the value of the first `id` item (a bare first item counts as a flag).
fn first_id(params: &str) -> Option<String> {
    items(params, false)
        .into_iter()
        .find_map(|item| match item {
            Item::Pair(n, v) if n == "id" => Some(v),
            Item::Flag { name, negated } if name == "id" => {
                Some(if negated { "off" } else { "on" }.to_string())
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST_LIST: OptsList = OptsList {
        name: "chardev",
        implied: Some("backend"),
        merge: false,
        descs: &[
            desc("backend", OptType::Str),
            desc("path", OptType::Str),
            desc("server", OptType::Bool),
            desc("wait", OptType::Bool),
            desc("delay", OptType::Bool),
            desc("debug", OptType::Number),
            desc("size", OptType::Size),
        ],
    };

    static ANY_LIST: OptsList = OptsList {
        name: "drive",
        implied: None,
        merge: false,
        descs: &[],
    };

    fn parse(
        store: &mut OptsStore,
        params: &str,
        warn: bool,
    ) -> (Result<Parsed, ErrorKind>, Vec<String>) {
        let mut console = Console::capture("qemu-system-x86_64");
        let loc = Location::words(["-chardev", params]);
        let r = store.parse(params, true, warn, &loc, &mut console);
        (r, console.captured_warnings())
    }

    #[test]
    fn splits_items_and_unescapes_commas() {
        assert_eq!(
            items("file=a,,b,if=none", false),
            vec![
                Item::Pair("file".into(), "a,b".into()),
                Item::Pair("if".into(), "none".into())
            ]
        );
        assert_eq!(
            items("a,,b=c,x=1", true),
            vec![
                Item::Implied("a,b=c".into()),
                Item::Pair("x".into(), "1".into())
            ]
        );
        assert_eq!(
            items("server,nowait", false),
            vec![
                Item::Flag {
                    name: "server".into(),
                    negated: false
                },
                Item::Flag {
                    name: "wait".into(),
                    negated: true
                }
            ]
        );
        assert_eq!(items("", true), vec![]);
        assert_eq!(
            items("a=1,", false),
            vec![Item::Pair("a".into(), "1".into())]
        );
        assert_eq!(
            items(",a=1", false),
            vec![
                Item::Flag {
                    name: "".into(),
                    negated: false
                },
                Item::Pair("a".into(), "1".into())
            ]
        );
    }

    #[test]
    fn validates_against_schema_with_qemu_messages() {
        let mut store = OptsStore::new(&TEST_LIST);
        let (r, w) = parse(&mut store, "socket,path=x,server,nowait,id=qga0", true);
        assert!(matches!(r, Ok(Parsed::Opts(0))));
        let opts = &store.entries[0];
        assert_eq!(opts.id.as_deref(), Some("qga0"));
        assert_eq!(opts.get("backend"), Some("socket"));
        assert!(opts.get_bool("server", false));
        assert!(!opts.get_bool("wait", true));
        assert_eq!(w, vec![
            "qemu-system-x86_64: -chardev socket,path=x,server,nowait,id=qga0: warning: short-form boolean option 'server' deprecated\nPlease use server=on instead\n".to_string(),
            "qemu-system-x86_64: -chardev socket,path=x,server,nowait,id=qga0: warning: short-form boolean option 'nowait' deprecated\nPlease use wait=off instead\n".to_string(),
        ]);

        let (r, _) = parse(&mut store, "null,id=qga0", true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "Duplicate ID 'qga0' for chardev"
        );
        let (r, _) = parse(&mut store, "null,id=1x", true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "Parameter 'id' expects an identifier"
        );
        let (r, _) = parse(&mut store, "null,id=a,bogus=1", true);
        assert_eq!(r.unwrap_err().to_string(), "Invalid parameter 'bogus'");
        let (r, _) = parse(&mut store, "null,id=b,server=1", true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "Parameter 'server' expects 'on' or 'off'"
        );
        let (r, _) = parse(&mut store, "null,id=c,debug=5 ", true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "Parameter 'debug' expects a number"
        );
        let (r, _) = parse(&mut store, "null,id=c,debug=18446744073709551616", true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "Value '18446744073709551616' is too large for parameter 'debug'"
        );
        let (r, _) = parse(&mut store, "null,id=c,size=16E", true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "Value '16E' is out of range for parameter 'size'"
        );
        let (r, w) = parse(&mut store, "null,id=d,nodelay", true);
        assert!(r.is_ok());
        assert!(w[0].ends_with("'nodelay' deprecated\nPlease use nodelay=on instead\n"));
        let (r, _) = parse(&mut store, "null,id=e,help", true);
        assert!(matches!(r, Ok(Parsed::HelpWanted)));
    }

    #[test]
    fn accept_any_lists_take_unknown_keys_and_no_flags_warning_when_quiet() {
        let mut store = OptsStore::new(&ANY_LIST);
        let (r, w) = parse(
            &mut store,
            "file=x,hack=on,itime=on,l2-cache-size=2M",
            false,
        );
        assert!(r.is_ok());
        assert!(w.is_empty());
        assert_eq!(store.entries[0].get("hack"), Some("on"));
    }

    #[test]
    fn help_text_matches_qemu_layout() {
        assert_eq!(
            TEST_LIST.help_text().lines().take(3).collect::<Vec<_>>(),
            vec!["chardev options:", "  backend=<str>", "  debug=<num>"]
        );
    }
}
