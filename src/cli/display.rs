//! Display options (`-display`, `-vnc`, `-vga`). vmscope emulates no display: the options
//! are validated as QEMU validates them and then have no effect beyond one warning.

use super::error::{CliError, ErrorKind, Location};
use super::keyval::{self, Node};
use super::qemu_opts::{desc, parse_bool, OptType, OptsList};
use super::Console;

use OptType::{Bool, Number, Str};

/// What `-display` asked for.
pub enum DisplayChoice {
    /// `-display none`: nothing to warn about.
    None,
    /// Any real display.
    Other,
    /// Help was printed.
    Exit(i32),
}

/// Display types of QEMU 7.2's Debian build (`-display help` plus `default`).
const DISPLAY_TYPES: &[&str] = &[
    "default",
    "none",
    "gtk",
    "sdl",
    "egl-headless",
    "curses",
    "spice-app",
    "dbus",
];

/// Members of QEMU's `DisplayOptions` common to every type: (name, is boolean).
const COMMON_MEMBERS: &[(&str, bool)] = &[
    ("full-screen", true),
    ("window-close", true),
    ("show-cursor", true),
    ("gl", false),
];

/// Members of the per-type branches.
fn type_members(kind: &str) -> &'static [(&'static str, bool)] {
    match kind {
        "gtk" => &[
            ("grab-on-hover", true),
            ("zoom-to-fit", true),
            ("show-tabs", true),
        ],
        "curses" => &[("charset", false)],
        "egl-headless" => &[("rendernode", false)],
        "dbus" => &[
            ("rendernode", false),
            ("addr", false),
            ("p2p", true),
            ("audiodev", false),
        ],
        "sdl" => &[("grab-mod", false)],
        _ => &[],
    }
}

/// `-display help` output.
const DISPLAY_HELP: &str = "Available display backend types:\nnone\n";

/// QEMU's `parse_display`.
pub fn parse_display(
    arg: &str,
    location: &Location,
    console: &mut Console,
) -> Result<DisplayChoice, CliError> {
    let at = |kind| CliError::at(location, kind);
    if arg == "help" || arg == "?" {
        console.print(DISPLAY_HELP);
        return Ok(DisplayChoice::Exit(0));
    }
    if let Some(rest) = arg.strip_prefix("vnc") {
        let Some(_display) = rest.strip_prefix('=') else {
            return Err(at(ErrorKind::message(
                "VNC requires a display argument vnc=<display>",
            )));
        };
        return Ok(DisplayChoice::Other);
    }
    let (dict, _help) = keyval::parse(arg, Some("type")).map_err(at)?;
    let Some(kind) = dict.get_str("type").map(str::to_string) else {
        return Err(at(ErrorKind::MissingParameter("type".into())));
    };
    if !DISPLAY_TYPES.contains(&kind.as_str()) {
        return Err(at(ErrorKind::ValueNotAccepted {
            name: "type".into(),
            value: kind,
        }));
    }
    for (key, node) in dict.iter() {
        if key == "type" {
            continue;
        }
        let member = COMMON_MEMBERS
            .iter()
            .chain(type_members(&kind))
            .find(|(name, _)| *name == key);
        let Some((_, is_bool)) = member else {
            return Err(at(ErrorKind::UnexpectedParameter(key.to_string())));
        };
        let Node::Str(value) = node else {
            return Err(at(ErrorKind::invalid_value(key, "a string")));
        };
        if *is_bool && parse_bool(value).is_err() {
            return Err(at(ErrorKind::invalid_value(key, "'on' or 'off'")));
        }
        if key == "gl" && !matches!(value.as_str(), "off" | "on" | "core" | "es") {
            return Err(at(ErrorKind::ValueNotAccepted {
                name: "gl".into(),
                value: value.clone(),
            }));
        }
    }
    Ok(if kind == "none" {
        DisplayChoice::None
    } else {
        DisplayChoice::Other
    })
}

/// Whether a (valid) `-display` argument asks for OpenGL.
pub fn wants_gl(arg: &str) -> bool {
    keyval::parse(arg, Some("type"))
        .ok()
        .and_then(|(dict, _)| dict.get_str("gl").map(|gl| gl != "off"))
        .unwrap_or(false)
}

/// `-vnc` keys (`qemu_vnc_opts`).
pub static VNC_OPTS: OptsList = OptsList {
    name: "vnc",
    implied: Some("vnc"),
    merge: false,
    descs: &[
        desc("vnc", Str),
        desc("websocket", Str),
        desc("tls-creds", Str),
        desc("share", Str),
        desc("display", Str),
        desc("head", Number),
        desc("connections", Number),
        desc("to", Number),
        desc("ipv4", Bool),
        desc("ipv6", Bool),
        desc("password", Bool),
        desc("password-secret", Str),
        desc("reverse", Bool),
        desc("lock-key-sync", Bool),
        desc("key-delay-ms", Number),
        desc("sasl", Bool),
        desc("sasl-authz", Str),
        desc("tls-authz", Str),
        desc("lossy", Bool),
        desc("non-adaptive", Bool),
        desc("audiodev", Str),
        desc("power-control", Bool),
    ],
};

/// `-vga` models QEMU 7.2 x86_64 offers, with their `-vga help` descriptions.
const VGA_MODELS: &[(&str, &str, bool)] = &[
    ("none", "no graphic card", true),
    ("std", "standard VGA", true),
    ("cirrus", "Cirrus VGA", true),
    ("vmware", "VMWare SVGA", true),
    ("qxl", "QXL VGA", true),
    ("tcx", "TCX framebuffer", false),
    ("cg3", "CG3 framebuffer", false),
    ("virtio", "Virtio VGA", true),
];

/// QEMU's `select_vgahw`: `Ok(Some(code))` when help was printed.
pub fn select_vga(model: &str, console: &mut Console) -> Result<Option<i32>, CliError> {
    if model == "help" {
        let mut out = String::new();
        for (name, text, available) in VGA_MODELS {
            if *available {
                let default = if *name == "std" { " (default)" } else { "" };
                out.push_str(&format!("{name:<20} {text}{default}\n"));
            }
        }
        console.print(&out);
        return Ok(Some(0));
    }
    let unknown = || CliError::new(ErrorKind::message(format!("unknown vga type: {model}")));
    let Some((name, text, available)) = VGA_MODELS.iter().find(|(n, _, _)| model.starts_with(n))
    else {
        return Err(unknown());
    };
    if !available {
        return Err(CliError::new(ErrorKind::message(format!(
            "{text} not available"
        ))));
    }
    // Only ",retrace=dumb|precise" may follow the model name.
    let mut rest = &model[name.len()..];
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix(",retrace=") else {
            return Err(unknown());
        };
        rest = if let Some(r) = after.strip_prefix("dumb") {
            r
        } else if let Some(r) = after.strip_prefix("precise") {
            r
        } else {
            return Err(unknown());
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn display(arg: &str) -> Result<&'static str, String> {
        let mut console = Console::capture("q");
        let loc = Location::words(["-display", arg]);
        match parse_display(arg, &loc, &mut console) {
            Ok(DisplayChoice::None) => Ok("none"),
            Ok(DisplayChoice::Other) => Ok("other"),
            Ok(DisplayChoice::Exit(_)) => Ok("exit"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn display_validation_matches_qemu() {
        assert_eq!(display("none"), Ok("none"));
        assert_eq!(display("gtk,full-screen=on"), Ok("other"));
        assert_eq!(display("vnc=localhost:1"), Ok("other"));
        assert_eq!(
            display("bogus"),
            Err("-display bogus: Parameter 'type' does not accept value 'bogus'".into())
        );
        assert_eq!(
            display("none,foo=1"),
            Err("-display none,foo=1: Parameter 'foo' is unexpected".into())
        );
        assert_eq!(
            display("gtk,full-screen=maybe"),
            Err(
                "-display gtk,full-screen=maybe: Parameter 'full-screen' expects 'on' or 'off'"
                    .into()
            )
        );
        assert_eq!(
            display("gl=on"),
            Err("-display gl=on: Parameter 'type' is missing".into())
        );
        assert_eq!(
            display("vnc"),
            Err("-display vnc: VNC requires a display argument vnc=<display>".into())
        );
    }

    #[test]
    fn vga_selection() {
        let mut console = Console::capture("q");
        assert_eq!(select_vga("std", &mut console), Ok(None));
        assert_eq!(select_vga("cirrus,retrace=dumb", &mut console), Ok(None));
        assert_eq!(
            select_vga("bogus", &mut console).unwrap_err().to_string(),
            "unknown vga type: bogus"
        );
        assert_eq!(
            select_vga("tcx", &mut console).unwrap_err().to_string(),
            "TCX framebuffer not available"
        );
        assert_eq!(select_vga("help", &mut console), Ok(Some(0)));
        assert!(console
            .captured_stdout()
            .starts_with("none                 no graphic card\n"));
    }
}
