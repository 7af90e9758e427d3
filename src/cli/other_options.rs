//! Options whose subsystems vmscope does not have yet: they get the syntax and key checks
//! QEMU makes while it reads the command line (so a malformed one gets QEMU's message), and
//! are then refused by the caller as "not supported yet".

use super::error::{CliError, ErrorKind, Location};
use super::keyval;
use super::qemu_opts::{desc, OptType, OptsList, OptsStore, Parsed};
use super::Console;
use crate::config::{RtcBase, RtcClock, RtcConfig};

use OptType::{Bool, Number, Str};

const fn list(
    name: &'static str,
    implied: Option<&'static str>,
    merge: bool,
    descs: &'static [super::qemu_opts::OptDesc],
) -> OptsList {
    OptsList {
        name,
        implied,
        merge,
        descs,
    }
}

static RTC_OPTS: OptsList = list(
    "rtc",
    None,
    true,
    &[desc("base", Str), desc("clock", Str), desc("driftfix", Str)],
);
static GLOBAL_OPTS: OptsList = list(
    "global",
    None,
    false,
    &[
        desc("driver", Str),
        desc("property", Str),
        desc("value", Str),
    ],
);
static NUMA_OPTS: OptsList = list("numa", Some("type"), false, &[]);
static NETDEV_OPTS: OptsList = list("netdev", Some("type"), false, &[]);
static NIC_OPTS: OptsList = list("nic", Some("type"), false, &[]);
static NET_OPTS: OptsList = list("net", Some("type"), false, &[]);
static OBJECT_OPTS: OptsList = list("object", Some("qom-type"), false, &[]);
static ACTION_OPTS: OptsList = list(
    "action",
    None,
    true,
    &[
        desc("shutdown", Str),
        desc("reboot", Str),
        desc("panic", Str),
        desc("watchdog", Str),
    ],
);
static OVERCOMMIT_OPTS: OptsList = list(
    "overcommit",
    None,
    false,
    &[desc("mem-lock", Bool), desc("cpu-pm", Bool)],
);
static MSG_OPTS: OptsList = list(
    "msg",
    None,
    false,
    &[
        desc("timestamp", Bool),
        super::qemu_opts::OptDesc {
            name: "guest-name",
            ty: Bool,
            help: Some(
                "Prepends guest name for error messages but only if -name guest is set otherwise option is ignored\n",
            ),
        },
    ],
);
static ADD_FD_OPTS: OptsList = list(
    "add-fd",
    None,
    false,
    &[desc("fd", Number), desc("set", Number), desc("opaque", Str)],
);
static FW_CFG_OPTS: OptsList = list(
    "fw_cfg",
    Some("name"),
    false,
    &[
        desc("name", Str),
        desc("file", Str),
        desc("string", Str),
        desc("gen_id", Str),
    ],
);
static OPTION_ROM_OPTS: OptsList = list(
    "option-rom",
    Some("romfile"),
    false,
    &[desc("bootindex", Number), desc("romfile", Str)],
);
static ICOUNT_OPTS: OptsList = list(
    "icount",
    Some("shift"),
    true,
    &[
        desc("shift", Str),
        desc("align", Bool),
        desc("sleep", Bool),
        desc("rr", Str),
        desc("rrfile", Str),
        desc("rrsnapshot", Str),
    ],
);
static TRACE_OPTS: OptsList = list(
    "trace",
    Some("enable"),
    false,
    &[desc("enable", Str), desc("events", Str), desc("file", Str)],
);
static SANDBOX_OPTS: OptsList = list(
    "sandbox",
    Some("enable"),
    true,
    &[
        desc("enable", Bool),
        desc("obsolete", Str),
        desc("elevateprivileges", Str),
        desc("spawn", Str),
        desc("resourcecontrol", Str),
    ],
);

/// `-boot` keys (a keyval option; listed for `-boot help`).
pub static BOOT_OPTS: OptsList = list(
    "boot-opts",
    Some("order"),
    true,
    &[
        desc("order", Str),
        desc("once", Str),
        desc("menu", Bool),
        desc("splash", Str),
        desc("splash-time", Number),
        desc("reboot-timeout", Number),
        desc("strict", Bool),
    ],
);

/// Network backend types QEMU 7.2 (Debian) knows.
const NETDEV_TYPES: &[&str] = &[
    "user",
    "tap",
    "l2tpv3",
    "socket",
    "stream",
    "dgram",
    "vde",
    "bridge",
    "hubport",
    "vhost-user",
    "vhost-vdpa",
];

/// Members of QEMU 7.2's `NetdevUserOptions` (the slirp backend the seeds use).
const USER_NET_KEYS: &[&str] = &[
    "hostname",
    "restrict",
    "ipv4",
    "ipv6",
    "ip",
    "net",
    "host",
    "tftp",
    "bootfile",
    "dhcpstart",
    "dns",
    "dnssearch",
    "domainname",
    "ipv6-prefix",
    "ipv6-prefixlen",
    "ipv6-host",
    "ipv6-dns",
    "smb",
    "smbserver",
    "hostfwd",
    "guestfwd",
    "tftp-server-name",
];

/// `-object help`: the object types QEMU 7.2 (Debian) can create.
const OBJECT_TYPES: &[&str] = &[
    "authz-list",
    "authz-list-file",
    "authz-simple",
    "can-bus",
    "can-host-socketcan",
    "colo-compare",
    "cryptodev-backend",
    "cryptodev-backend-builtin",
    "cryptodev-vhost-user",
    "dbus-vmstate",
    "filter-buffer",
    "filter-dump",
    "filter-mirror",
    "filter-redirector",
    "filter-replay",
    "filter-rewriter",
    "input-barrier",
    "input-linux",
    "iothread",
    "main-loop",
    "memory-backend-file",
    "memory-backend-memfd",
    "memory-backend-ram",
    "pr-manager-helper",
    "qtest",
    "rng-builtin",
    "rng-egd",
    "rng-random",
    "secret",
    "secret_keyring",
    "sev-guest",
    "thread-context",
    "throttle-group",
    "tls-cipher-suites",
    "tls-creds-anon",
    "tls-creds-psk",
    "tls-creds-x509",
    "x-remote-object",
];

/// Properties of the object types the seeds create: (type, [(name, is boolean)]).
const OBJECT_PROPERTIES: &[(&str, &[(&str, bool)])] = &[
    (
        "iothread",
        &[
            ("poll-max-ns", false),
            ("poll-grow", false),
            ("poll-shrink", false),
            ("aio-max-batch", false),
            ("thread-pool-min", false),
            ("thread-pool-max", false),
        ],
    ),
    ("rng-random", &[("filename", false), ("opened", true)]),
];

/// Parses `arg` against `list` like `qemu_opts_parse_noisily`; `Some(1)` when `help` was
/// printed (QEMU then exits with status 1).
fn group(
    list: &'static OptsList,
    arg: &str,
    permit_abbrev: bool,
    location: &Location,
    console: &mut Console,
) -> Result<Option<super::qemu_opts::Opts>, CliError> {
    let mut store = OptsStore::new(list);
    match store.parse_noisily(arg, permit_abbrev, location, console) {
        Ok(Parsed::Opts(i)) => Ok(Some(store.entries.swap_remove(i))),
        Ok(Parsed::HelpWanted) => {
            console.print(&list.help_text());
            Ok(None)
        }
        Err(kind) => Err(CliError::at(location, kind)),
    }
}

/// Checks a network option's type and id the way QEMU's netdev code does.
fn check_net(
    opts: &super::qemu_opts::Opts,
    option: &str,
    location: &Location,
) -> Result<(), CliError> {
    let at = |kind| CliError::at(location, kind);
    let kind = opts.get("type").unwrap_or_default();
    let mut valid: Vec<&str> = NETDEV_TYPES.to_vec();
    if option != "netdev" {
        valid.push("none");
    }
    if option == "net" {
        valid.push("nic");
    }
    if !valid.contains(&kind) {
        return Err(at(ErrorKind::ValueNotAccepted {
            name: "type".into(),
            value: kind.to_string(),
        }));
    }
    if option == "netdev" && opts.id.is_none() {
        return Err(at(ErrorKind::MissingParameter("id".into())));
    }
    if kind == "user" && option != "net" {
        for (key, _) in opts.items() {
            let nic_key = option == "nic" && matches!(key, "model" | "mac");
            if key != "type" && !nic_key && !USER_NET_KEYS.contains(&key) {
                return Err(at(ErrorKind::InvalidParameter(key.to_string())));
            }
        }
    }
    Ok(())
}

/// The checks QEMU's `ObjectOptions` visitor makes: the type, the id, and (for the types
/// the seeds use) the properties.
fn check_object(opts: &super::qemu_opts::Opts, location: &Location) -> Result<(), CliError> {
    let at = |kind| CliError::at(location, kind);
    let Some(kind) = opts.get("qom-type") else {
        return Err(at(ErrorKind::MissingParameter("qom-type".into())));
    };
    if !OBJECT_TYPES.contains(&kind) {
        return Err(at(ErrorKind::ValueNotAccepted {
            name: "qom-type".into(),
            value: kind.to_string(),
        }));
    }
    if opts.id.is_none() {
        return Err(at(ErrorKind::MissingParameter("id".into())));
    }
    if let Some((_, props)) = OBJECT_PROPERTIES.iter().find(|(t, _)| *t == kind) {
        for (key, value) in opts.items() {
            if key == "qom-type" {
                continue;
            }
            match props.iter().find(|(name, _)| *name == key) {
                None => return Err(at(ErrorKind::InvalidParameter(key.to_string()))),
                Some((_, true)) if super::qemu_opts::parse_bool(value).is_err() => {
                    return Err(at(ErrorKind::invalid_value(key, "'on' or 'off'")))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// `-rtc` in the option loop: checks the keys and returns them (`Ok(None)` after help
/// was printed). QEMU merges every `-rtc` into one set and reads it after the loop
/// ([`configure_rtc`]).
pub fn read_rtc(
    arg: &str,
    location: &Location,
    console: &mut Console,
) -> Result<Option<Vec<(String, String)>>, CliError> {
    let Some(opts) = group(&RTC_OPTS, arg, false, location, console)? else {
        return Ok(None);
    };
    Ok(Some(
        opts.items()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

/// What the merged `-rtc` options ask for.
pub enum RtcRequest {
    Settings(RtcConfig),
    /// Valid, but vmscope lacks it (the text of the refusal).
    Unsupported(String),
}

/// QEMU's `configure_rtc`, after the option loop (its errors name no option). `items` are
/// the keys of every `-rtc`, in order; the last value of a key wins.
pub fn configure_rtc(items: &[(String, String)]) -> Result<RtcRequest, CliError> {
    let last = |key: &str| {
        items
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let invalid = |value: &str| {
        CliError::new(ErrorKind::message(format!(
            "invalid option value '{value}'"
        )))
    };
    let mut rtc = RtcConfig::default();
    if let Some(base) = last("base") {
        rtc.base = match base {
            "utc" => RtcBase::Utc,
            "localtime" => RtcBase::LocalTime,
            date => RtcBase::Date(
                parse_rtc_date(date)
                    .ok_or_else(|| CliError::new(ErrorKind::message(RTC_DATE_ERROR)))?,
            ),
        };
    }
    if let Some(clock) = last("clock") {
        rtc.clock = match clock {
            "host" => RtcClock::Host,
            "rt" => RtcClock::Realtime,
            "vm" => RtcClock::Virtual,
            other => return Err(invalid(other)),
        };
    }
    match last("driftfix") {
        None | Some("none") => Ok(RtcRequest::Settings(rtc)),
        Some("slew") => Ok(RtcRequest::Unsupported("RTC driftfix=slew".to_string())),
        Some(other) => Err(invalid(other)),
    }
}

/// QEMU's message for a `base=` it cannot read (its hint follows, see `ErrorKind`).
pub const RTC_DATE_ERROR: &str = "invalid datetime format";

/// `YYYY-MM-DDThh:mm:ss` or `YYYY-MM-DD` read as QEMU's `sscanf("%d-%d-%dT%d:%d:%d")`
/// does: leading blanks and signs allowed in numbers, anything after the last matched
/// field ignored; then converted with QEMU's arithmetic (`mktimegm`).
fn parse_rtc_date(text: &str) -> Option<i64> {
    let mut rest = text;
    let mut fields = [0i64; 6];
    let separators = ['-', '-', 'T', ':', ':'];
    let mut matched = 0;
    for (i, field) in fields.iter_mut().enumerate() {
        if i > 0 {
            let Some(after) = rest.strip_prefix(separators[i - 1]) else {
                break;
            };
            rest = after;
        }
        let Some((value, after)) = scan_int(rest) else {
            break;
        };
        *field = value;
        rest = after;
        matched += 1;
    }
    if matched != 6 {
        if matched < 3 {
            return None;
        }
        fields[3..].fill(0);
    }
    let [y, mo, d, h, mi, s] = fields;
    Some(crate::hw::pc::rtc_clock::seconds_from_utc_date(
        y, mo, d, h, mi, s,
    ))
}

/// One `%d`: optional blanks, an optional sign, digits (saturating, as far as matters).
fn scan_int(text: &str) -> Option<(i64, &str)> {
    let trimmed = text.trim_start();
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let magnitude = unsigned[..digits]
        .bytes()
        .fold(0i64, |acc, b| {
            acc.saturating_mul(10).saturating_add(i64::from(b - b'0'))
        })
        .min(i64::from(i32::MAX));
    Some((
        if negative { -magnitude } else { magnitude },
        &unsigned[digits..],
    ))
}

/// Reads one not-yet-supported option. `Ok(Some(code))`: exit with `code` (help printed).
pub fn read(
    name: &str,
    arg: &str,
    location: &Location,
    console: &mut Console,
) -> Result<Option<i32>, CliError> {
    let at = |kind| CliError::at(location, kind);
    let help_exit = |opts: Option<super::qemu_opts::Opts>| opts.is_none().then_some(1);
    match name {
        "global" => {
            // `DRIVER.PROPERTY=VALUE`, or the QemuOpts form.
            if let Some((lhs, _)) = arg.split_once('=') {
                if let Some((driver, property)) = lhs.split_once('.') {
                    if !driver.is_empty() && !property.is_empty() && driver.len() < 64 {
                        return Ok(None);
                    }
                }
            }
            let Some(opts) = group(&GLOBAL_OPTS, arg, false, location, console)? else {
                return Ok(Some(1));
            };
            if !(opts.has("driver") && opts.has("property") && opts.has("value")) {
                return Err(at(ErrorKind::message(
                    "options 'driver', 'property', and 'value' are required",
                )));
            }
        }
        "numa" => {
            let Some(opts) = group(&NUMA_OPTS, arg, true, location, console)? else {
                return Ok(Some(1));
            };
            let kind = opts.get("type").unwrap_or_default();
            if !matches!(kind, "node" | "dist" | "cpu" | "hmat-lb" | "hmat-cache") {
                return Err(at(ErrorKind::ValueNotAccepted {
                    name: "type".into(),
                    value: kind.to_string(),
                }));
            }
        }
        "netdev" | "nic" | "net" => {
            if arg.starts_with('{') {
                return Ok(None);
            }
            let list = match name {
                "netdev" => &NETDEV_OPTS,
                "nic" => &NIC_OPTS,
                _ => &NET_OPTS,
            };
            let Some(opts) = group(list, arg, true, location, console)? else {
                return Ok(Some(1));
            };
            check_net(&opts, name, location)?;
        }
        "object" => {
            if arg.starts_with('{') {
                return Ok(None);
            }
            let Some(opts) = group(&OBJECT_OPTS, arg, true, location, console)? else {
                return Ok(Some(1));
            };
            match opts.get("qom-type") {
                // vmscope can create no object yet.
                Some("help") | Some("?") => {
                    console.print("List of user creatable objects:\n");
                    return Ok(Some(0));
                }
                // Help on a type vmscope lacks: refused like the type itself.
                _ if opts.has("help") || opts.has("?") => {}
                _ => check_object(&opts, location)?,
            }
        }
        "action" => {
            return Ok(help_exit(group(
                &ACTION_OPTS,
                arg,
                false,
                location,
                console,
            )?))
        }
        "overcommit" => {
            return Ok(help_exit(group(
                &OVERCOMMIT_OPTS,
                arg,
                false,
                location,
                console,
            )?))
        }
        "msg" => return Ok(help_exit(group(&MSG_OPTS, arg, false, location, console)?)),
        "add-fd" => {
            return Ok(help_exit(group(
                &ADD_FD_OPTS,
                arg,
                false,
                location,
                console,
            )?))
        }
        "fw_cfg" => {
            return Ok(help_exit(group(
                &FW_CFG_OPTS,
                arg,
                true,
                location,
                console,
            )?))
        }
        "option-rom" => {
            let Some(opts) = group(&OPTION_ROM_OPTS, arg, true, location, console)? else {
                return Ok(Some(1));
            };
            if !opts.has("romfile") {
                return Err(at(ErrorKind::message("Option ROM file is not specified")));
            }
        }
        "icount" => {
            return Ok(help_exit(group(
                &ICOUNT_OPTS,
                arg,
                true,
                location,
                console,
            )?))
        }
        "trace" => return Ok(help_exit(group(&TRACE_OPTS, arg, true, location, console)?)),
        "sandbox" => {
            return Ok(help_exit(group(
                &SANDBOX_OPTS,
                arg,
                true,
                location,
                console,
            )?))
        }
        "blockdev" => {
            let (dict, _) = keyval::parse(arg, Some("driver")).map_err(at)?;
            if dict.get("driver").is_none() {
                return Err(at(ErrorKind::MissingParameter("driver".into())));
            }
        }
        "uuid" if !is_uuid(arg) => {
            return Err(at(ErrorKind::message(
                "failed to parse UUID string: wrong format",
            )));
        }
        "set" => {
            let parts: Vec<&str> = arg.splitn(3, '.').collect();
            let ok = parts.len() == 3
                && parts.iter().all(|p| !p.is_empty())
                && parts[2].contains('=')
                && !parts[2].starts_with('=');
            if !ok {
                return Err(at(ErrorKind::message(format!("can't parse: \"{arg}\""))));
            }
        }
        "rotate" => {
            let digits: String = arg
                .trim_start()
                .chars()
                .enumerate()
                .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && (*c == '-' || *c == '+')))
                .map(|(_, c)| c)
                .collect();
            let degrees = digits.parse::<i64>().unwrap_or(0);
            if ![0, 90, 180, 270].contains(&degrees) {
                return Err(at(ErrorKind::message(
                    "only 90, 180, 270 deg rotation is available",
                )));
            }
        }
        _ => {}
    }
    Ok(None)
}

/// QEMU's `qemu_uuid_parse` format: 8-4-4-4-12 hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_err(name: &str, arg: &str) -> String {
        let mut console = Console::capture("q");
        let loc = Location::words([format!("-{name}"), arg.to_string()]);
        read(name, arg, &loc, &mut console).unwrap_err().to_string()
    }

    #[test]
    fn qemu_messages() {
        assert_eq!(
            read_err("nic", "bogus"),
            "-nic bogus: Parameter 'type' does not accept value 'bogus'"
        );
        assert_eq!(
            read_err("netdev", "user"),
            "-netdev user: Parameter 'id' is missing"
        );
        assert_eq!(
            read_err("global", "driver=a,property=b"),
            "-global driver=a,property=b: options 'driver', 'property', and 'value' are required"
        );
        assert_eq!(
            read_err("object", "foo=bar"),
            "-object foo=bar: Parameter 'qom-type' is missing"
        );
        assert_eq!(
            read_err("uuid", "xyz"),
            "-uuid xyz: failed to parse UUID string: wrong format"
        );
        assert_eq!(read_err("set", "foo"), "-set foo: can't parse: \"foo\"");
        assert_eq!(
            read_err("rotate", "45"),
            "-rotate 45: only 90, 180, 270 deg rotation is available"
        );
        assert_eq!(
            read_err("blockdev", "foo=bar"),
            "-blockdev foo=bar: Parameter 'driver' is missing"
        );
    }

    #[test]
    fn rtc_options_become_settings() {
        let mut console = Console::capture("q");
        let mut rtc = |args: &[&str]| {
            let mut items = Vec::new();
            for arg in args {
                let loc = Location::words(["-rtc", arg]);
                match read_rtc(arg, &loc, &mut console) {
                    Ok(Some(more)) => items.extend(more),
                    Ok(None) => return Err("help".to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            }
            match configure_rtc(&items) {
                Ok(RtcRequest::Settings(c)) => Ok(c),
                Ok(RtcRequest::Unsupported(what)) => Err(what),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(rtc(&["base=utc,clock=host"]), Ok(RtcConfig::default()));
        assert_eq!(
            rtc(&["base=localtime,clock=vm"]),
            Ok(RtcConfig {
                base: RtcBase::LocalTime,
                clock: RtcClock::Virtual
            })
        );
        assert_eq!(
            rtc(&["base=2006-06-17T16:01:21,clock=rt"]),
            Ok(RtcConfig {
                base: RtcBase::Date(1_150_560_081),
                clock: RtcClock::Realtime
            })
        );
        // Later options override earlier keys and keep the others.
        assert_eq!(
            rtc(&["base=2006-06-17,clock=vm", "base=utc"]),
            Ok(RtcConfig {
                base: RtcBase::Utc,
                clock: RtcClock::Virtual
            })
        );
        assert_eq!(rtc(&["driftfix=slew"]), Err("RTC driftfix=slew".into()));
        assert_eq!(
            rtc(&["base=yesterday"]),
            Err("invalid datetime format\n\
                 valid formats: '2006-06-17T16:01:21' or '2006-06-17'"
                .into())
        );
        assert_eq!(
            rtc(&["clock=wall"]),
            Err("invalid option value 'wall'".into())
        );
        assert_eq!(
            rtc(&["foo=bar"]),
            Err("-rtc foo=bar: Invalid parameter 'foo'".into())
        );
    }

    #[test]
    fn seed_lines_of_unsupported_options_pass_validation() {
        let mut console = Console::capture("q");
        for (name, arg) in [
            ("nic", "user,hostfwd=tcp::10022-:22"),
            ("object", "iothread,id=iothread0"),
            ("object", "rng-random,filename=/dev/urandom,id=rng0"),
            ("global", "virtio-blk-pci.scsi=off"),
            ("global", "kvm-pit.lost_tick_policy=discard"),
            ("netdev", "user,id=usernet,net=169.254.0.0/16"),
        ] {
            let loc = Location::words([name, arg]);
            assert_eq!(
                read(name, arg, &loc, &mut console),
                Ok(None),
                "{name} {arg}"
            );
        }
    }
}
