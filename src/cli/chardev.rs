//! Character devices: `-chardev` groups, the legacy shorthand of `-serial`/`-monitor`/`-qmp`
//! (`stdio`, `unix:PATH,server,nowait`, `tcp:HOST:PORT`, `mon:stdio`, ...), and creating
//! them in QEMU's order with QEMU's checks (one stdio user, one front end per non-mux
//! chardev).

use std::collections::HashMap;
use std::path::PathBuf;

use super::error::{ErrorKind, Location, Warning};
use super::qemu_opts::{desc, OptType, Opts, OptsList, OptsStore};
use super::Console;
use crate::config::{ChardevBackend, ChardevConfig, SocketAddress, SocketChardev};

use OptType::{Bool, Number, Size, Str};

/// QEMU 7.2's `-chardev` keys (`qemu_chardev_opts`).
pub static CHARDEV_OPTS: OptsList = OptsList {
    name: "chardev",
    implied: Some("backend"),
    merge: false,
    descs: &[
        desc("backend", Str),
        desc("path", Str),
        desc("host", Str),
        desc("port", Str),
        desc("fd", Str),
        desc("localaddr", Str),
        desc("localport", Str),
        desc("to", Number),
        desc("ipv4", Bool),
        desc("ipv6", Bool),
        desc("wait", Bool),
        desc("server", Bool),
        desc("delay", Bool),
        desc("nodelay", Bool),
        desc("reconnect", Number),
        desc("telnet", Bool),
        desc("tn3270", Bool),
        desc("tls-creds", Str),
        desc("tls-authz", Str),
        desc("websocket", Bool),
        desc("width", Number),
        desc("height", Number),
        desc("cols", Number),
        desc("rows", Number),
        desc("mux", Bool),
        desc("signal", Bool),
        desc("name", Str),
        desc("debug", Number),
        desc("size", Size),
        desc("chardev", Str),
        desc("append", Bool),
        desc("logfile", Str),
        desc("logappend", Bool),
        desc("mouse", Bool),
        desc("clipboard", Bool),
        desc("tight", Bool),
        desc("abstract", Bool),
    ],
};

/// Backend driver names QEMU 7.2 (Debian build) knows, with the deprecated aliases.
const QEMU_BACKENDS: &[&str] = &[
    "stdio",
    "ringbuf",
    "mux",
    "pipe",
    "qemu-vdagent",
    "null",
    "msmouse",
    "socket",
    "vc",
    "parallel",
    "udp",
    "memory",
    "file",
    "serial",
    "wctablet",
    "pty",
    "testdev",
    "spicevmc",
    "spiceport",
    "braille",
    "dbus",
    "tty",
    "parport",
];

/// The backends vmscope implements, as `-chardev help` lists them.
pub const VMSCOPE_BACKENDS: &[&str] = &["stdio", "pipe", "null", "socket", "vc", "file"];

/// `-chardev help` output.
pub fn backend_help() -> String {
    let mut out = String::from("Available chardev backend types: ");
    for name in VMSCOPE_BACKENDS {
        out.push_str("\n  ");
        out.push_str(name);
    }
    out.push('\n');
    out
}

/// Why the legacy shorthand failed: with QEMU's message, or silently (the caller then
/// prints only its own "parse error" line).
pub type CompatError = Option<ErrorKind>;

/// `qemu_chr_parse_compat`: turns shorthand `text` into a chardev group named `label` in
/// `store`. Returns the group's index.
pub fn parse_compat(
    store: &mut OptsStore,
    label: &str,
    text: &str,
    permit_mux_mon: bool,
    location: &Location,
    console: &mut Console,
) -> Result<usize, CompatError> {
    let index = store
        .create(Some(label.to_string()), location)
        .map_err(Some)?;
    let result = fill_compat(store, index, text, permit_mux_mon, location, console);
    if result.is_err() {
        store.entries.remove(index);
    }
    result.map(|()| index)
}

fn fill_compat(
    store: &mut OptsStore,
    index: usize,
    text: &str,
    permit_mux_mon: bool,
    location: &Location,
    console: &mut Console,
) -> Result<(), CompatError> {
    let mut filename = text;
    if let Some(rest) = text.strip_prefix("mon:") {
        if !permit_mux_mon {
            return Err(Some(ErrorKind::message(
                "mon: isn't supported in this context",
            )));
        }
        filename = rest;
        store.entries[index].set("mux", "on");
        if filename == "stdio" {
            // Ctrl-C goes to the guest when the monitor is muxed on stdio (QEMU's
            // -nographic behaviour).
            store.entries[index].set("signal", "off");
        }
    }
    let opts = &mut store.entries[index];
    const SIMPLE: &[&str] = &[
        "null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio",
    ];
    if SIMPLE.contains(&filename) {
        opts.set("backend", filename);
        return Ok(());
    }
    if let Some(rest) = filename.strip_prefix("vc") {
        opts.set("backend", "vc");
        if let Some(geometry) = rest.strip_prefix(':') {
            let (keys, dims) = if let Some(d) = parse_geometry(geometry, "x") {
                (("width", "height"), d)
            } else if let Some(d) = parse_geometry(geometry, "Cx") {
                (("cols", "rows"), d)
            } else {
                return Err(None);
            };
            opts.set(keys.0, &dims.0);
            opts.set(keys.1, &dims.1);
        }
        return Ok(());
    }
    if filename == "con:" {
        opts.set("backend", "console");
        return Ok(());
    }
    if filename.starts_with("COM") {
        opts.set("backend", "serial");
        opts.set("path", filename);
        return Ok(());
    }
    if let Some(path) = filename.strip_prefix("file:") {
        opts.set("backend", "file");
        opts.set("path", path);
        return Ok(());
    }
    if let Some(path) = filename.strip_prefix("pipe:") {
        opts.set("backend", "pipe");
        opts.set("path", path);
        return Ok(());
    }
    for scheme in ["tcp:", "telnet:", "tn3270:", "websocket:"] {
        if let Some(rest) = filename.strip_prefix(scheme) {
            let (host, port, after) = split_host_port(rest).ok_or(None)?;
            opts.set("backend", "socket");
            opts.set("host", host);
            opts.set("port", port);
            if let Some(more) = after.strip_prefix(',') {
                store
                    .fill(index, more, None, false, location, console)
                    .map_err(Some)?;
            }
            let opts = &mut store.entries[index];
            match scheme {
                "telnet:" => opts.set("telnet", "on"),
                "tn3270:" => opts.set("tn3270", "on"),
                "websocket:" => opts.set("websocket", "on"),
                _ => {}
            }
            return Ok(());
        }
    }
    if filename.starts_with("udp:") {
        // A valid QEMU backend vmscope does not implement; keep enough to name it.
        opts.set("backend", "udp");
        return Ok(());
    }
    if let Some(rest) = filename.strip_prefix("unix:") {
        opts.set("backend", "socket");
        // `unix:` items: the first bare one is the path.
        store
            .fill(index, rest, Some("path"), false, location, console)
            .map_err(Some)?;
        return Ok(());
    }
    if filename.starts_with("/dev/parport") || filename.starts_with("/dev/ppi") {
        opts.set("backend", "parallel");
        opts.set("path", filename);
        return Ok(());
    }
    if filename.starts_with("/dev/") {
        opts.set("backend", "serial");
        opts.set("path", filename);
        return Ok(());
    }
    Err(Some(ErrorKind::message(format!(
        "'{filename}' is not a valid char driver"
    ))))
}

/// `sscanf(p, "%7[0-9]<sep>%7[0-9]")`: both numbers must match (sscanf ignores the rest,
/// so the trailing `C` of the character form is not checked either).
fn parse_geometry(text: &str, sep: &str) -> Option<(String, String)> {
    let digits =
        |s: &str| -> usize { s.chars().take_while(|c| c.is_ascii_digit()).take(7).count() };
    let w = digits(text);
    if w == 0 {
        return None;
    }
    let rest = text[w..].strip_prefix(sep)?;
    let h = digits(rest);
    if h == 0 {
        return None;
    }
    Some((text[..w].to_string(), rest[..h].to_string()))
}

/// `sscanf(p, "%64[^:]:%32[^,]%n")`, falling back to `":%32[^,]%n"` (empty host).
fn split_host_port(text: &str) -> Option<(&str, &str, &str)> {
    let port_of = |s: &str| -> Option<(usize, usize)> {
        let len = s.find(',').unwrap_or(s.len());
        if len == 0 {
            return None;
        }
        // At most 32 bytes, as sscanf reads them, without splitting a character.
        let mut take = len.min(32);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        Some((take, len))
    };
    let host_len = text.find(':').unwrap_or(text.len());
    if host_len > 0 && host_len <= 64 && host_len < text.len() {
        let rest = &text[host_len + 1..];
        if let Some((take, _)) = port_of(rest) {
            return Some((&text[..host_len], &rest[..take], &rest[take..]));
        }
    }
    let rest = text.strip_prefix(':')?;
    let (take, _) = port_of(rest)?;
    Some(("", &rest[..take], &rest[take..]))
}

/// Chardevs created so far, in QEMU's creation order, and who uses them.
#[derive(Debug, Default)]
pub struct Registry {
    pub created: Vec<ChardevConfig>,
    front_ends: HashMap<String, usize>,
    stdio_in_use: bool,
}

/// The result of creating one chardev.
pub enum Created {
    Ok,
    /// A valid QEMU chardev vmscope cannot provide; `what` names it.
    Unsupported(String),
}

impl Registry {
    pub fn find(&self, id: &str) -> Option<&ChardevConfig> {
        self.created.iter().find(|c| c.id == id)
    }

    /// `qemu_chr_fe_init`: attaches a front end (serial port, monitor) to chardev `id`.
    pub fn attach(&mut self, id: &str) -> Result<(), ErrorKind> {
        let mux = self.find(id).map(|c| c.mux).unwrap_or(false);
        let users = self.front_ends.entry(id.to_string()).or_insert(0);
        if *users > 0 && !mux {
            return Err(ErrorKind::message(format!("Device '{id}' is in use")));
        }
        *users += 1;
        Ok(())
    }

    /// `qemu_chr_new_from_opts`: validates `opts` and records the chardev.
    pub fn create(
        &mut self,
        opts: &Opts,
        daemonize: bool,
        console: &mut Console,
    ) -> Result<Created, ErrorKind> {
        let Some(id) = opts.id.clone() else {
            return Err(ErrorKind::message("chardev: no id specified"));
        };
        let Some(name) = opts.get("backend") else {
            return Err(ErrorKind::message(format!(
                "chardev: \"{id}\" missing backend"
            )));
        };
        if !QEMU_BACKENDS.contains(&name) {
            return Err(ErrorKind::message(format!(
                "'{name}' is not a valid char driver name"
            )));
        }
        let name = match name {
            "tty" => {
                console.warn(Warning::new(
                    &opts.location,
                    "The alias 'tty' is deprecated, use 'serial' instead",
                ));
                "serial"
            }
            "parport" => {
                console.warn(Warning::new(
                    &opts.location,
                    "The alias 'parport' is deprecated, use 'parallel' instead",
                ));
                "parallel"
            }
            other => other,
        };
        let backend = match self.backend(name, opts, daemonize)? {
            Outcome::Backend(backend) => backend,
            Outcome::Unsupported(what) => return Ok(Created::Unsupported(what)),
        };
        if opts.get_bool("logappend", false) {
            return Ok(Created::Unsupported("chardev option 'logappend'".into()));
        }
        self.created.push(ChardevConfig {
            id,
            backend,
            mux: opts.get_bool("mux", false),
            logfile: opts.get("logfile").map(PathBuf::from),
        });
        Ok(Created::Ok)
    }
}

/// A backend vmscope provides, or the name of what it lacks.
enum Outcome {
    Backend(ChardevBackend),
    Unsupported(String),
}

impl Registry {
    fn backend(&mut self, name: &str, opts: &Opts, daemonize: bool) -> Result<Outcome, ErrorKind> {
        let backend = match name {
            // vmscope has no display: a virtual console is what QEMU's is with
            // `-display none`, a sink that nothing reads or writes.
            "null" | "vc" => ChardevBackend::Null,
            "stdio" => {
                if daemonize {
                    return Err(ErrorKind::message("cannot use stdio with -daemonize"));
                }
                if self.stdio_in_use {
                    return Err(ErrorKind::message(
                        "cannot use stdio by multiple character devices",
                    ));
                }
                self.stdio_in_use = true;
                ChardevBackend::Stdio {
                    signal: opts.get_bool("signal", true),
                }
            }
            "file" => file_backend(opts)?,
            "pipe" => match opts.get("path") {
                None => return Err(ErrorKind::message("chardev: pipe: no device path given")),
                Some(path) => ChardevBackend::Pipe {
                    path: PathBuf::from(path),
                },
            },
            "socket" => return socket_backend(opts),
            other => return Ok(Outcome::Unsupported(format!("chardev backend '{other}'"))),
        };
        Ok(Outcome::Backend(backend))
    }
}

fn file_backend(opts: &Opts) -> Result<ChardevBackend, ErrorKind> {
    let Some(path) = opts.get("path") else {
        return Err(ErrorKind::message("chardev: file: no filename given"));
    };
    Ok(ChardevBackend::File {
        path: PathBuf::from(path),
        input_path: None,
        append: opts.get_bool("append", false),
    })
}

/// `qemu_chr_parse_socket` and `qmp_chardev_validate_socket`.
fn socket_backend(opts: &Opts) -> Result<Outcome, ErrorKind> {
    let path = opts.get("path");
    let host = opts.get("host");
    let port = opts.get("port");
    let fd = opts.get("fd");
    if usize::from(path.is_some()) + usize::from(fd.is_some()) + usize::from(host.is_some()) > 1 {
        return Err(ErrorKind::message(
            "None or one of 'path', 'fd' or 'host' option required.",
        ));
    }
    if host.is_some() && port.is_none() {
        return Err(ErrorKind::message("chardev: socket: no port given"));
    }
    if opts.has("delay") && opts.has("nodelay") {
        return Err(ErrorKind::message(
            "'delay' and 'nodelay' are mutually exclusive",
        ));
    }
    let server = opts.get_bool("server", false);
    if server {
        if opts.has("reconnect") {
            return Err(ErrorKind::message(
                "'reconnect' option is incompatible with socket in server listen mode",
            ));
        }
    } else {
        if opts.get_bool("websocket", false) {
            return Err(ErrorKind::message("Websocket client is not implemented"));
        }
        if opts.has("wait") {
            return Err(ErrorKind::message(
                "'wait' option is incompatible with socket in client connect mode",
            ));
        }
    }
    if opts.has("tls-authz") && !opts.has("tls-creds") {
        return Err(ErrorKind::message(
            "'tls_authz' option requires 'tls_creds' option",
        ));
    }
    let address = match (path, host, port) {
        (Some(path), _, _) => SocketAddress::Unix {
            path: PathBuf::from(path),
        },
        (None, Some(host), Some(port)) => match port.parse::<u16>() {
            Ok(port) => SocketAddress::Tcp {
                host: host.to_string(),
                port,
            },
            // QEMU resolves service names and odd numbers with getaddrinfo.
            Err(_) => {
                return Ok(Outcome::Unsupported(format!(
                    "chardev port '{port}', only numbers 0-65535"
                )))
            }
        },
        _ => match fd {
            Some(_) => return Ok(Outcome::Unsupported("chardev socket option 'fd'".into())),
            None => return Err(ErrorKind::message("Unable to parse FD number ")),
        },
    };
    // Options QEMU honours that vmscope's socket chardev does not implement.
    let unsupported = [
        ("tls-creds", opts.has("tls-creds")),
        ("websocket", opts.get_bool("websocket", false)),
        ("tn3270", opts.get_bool("tn3270", false)),
        (
            "nodelay",
            opts.get_bool("nodelay", false) || !opts.get_bool("delay", true),
        ),
        ("ipv4", opts.has("ipv4")),
        ("ipv6", opts.has("ipv6")),
        ("to", opts.has("to")),
        ("abstract", opts.get_bool("abstract", false)),
        ("tight", !opts.get_bool("tight", true)),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, used)| *used) {
        return Ok(Outcome::Unsupported(format!(
            "chardev socket option '{key}'"
        )));
    }
    Ok(Outcome::Backend(ChardevBackend::Socket(SocketChardev {
        address,
        server,
        wait: opts.get_bool("wait", true),
        telnet: opts.get_bool("telnet", false),
        reconnect_secs: opts.get_number("reconnect", 0),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compat(text: &str) -> Result<Opts, CompatError> {
        let mut store = OptsStore::new(&CHARDEV_OPTS);
        let mut console = Console::capture("qemu-system-x86_64");
        let loc = Location::words(["-monitor", text]);
        parse_compat(
            &mut store,
            "compat_monitor0",
            text,
            true,
            &loc,
            &mut console,
        )
        .map(|i| store.entries[i].clone())
    }

    #[test]
    fn shorthand_unix_server_nowait() {
        let o = compat("unix:qemu-monitor-socket,server,nowait").unwrap();
        assert_eq!(o.get("backend"), Some("socket"));
        assert_eq!(o.get("path"), Some("qemu-monitor-socket"));
        assert!(o.get_bool("server", false));
        assert!(!o.get_bool("wait", true));
    }

    #[test]
    fn shorthand_tcp_and_telnet() {
        let o = compat("tcp:localhost:4444,server,nowait").unwrap();
        assert_eq!(
            (o.get("host"), o.get("port")),
            (Some("localhost"), Some("4444"))
        );
        let o = compat("telnet::55555,server,nowait").unwrap();
        assert_eq!((o.get("host"), o.get("port")), (Some(""), Some("55555")));
        assert!(o.get_bool("telnet", false));
        assert_eq!(compat("tcp:localhost"), Err(None));
        assert_eq!(
            compat("tcp:h:1,bogus").unwrap_err().unwrap().to_string(),
            "Invalid parameter 'bogus'"
        );
    }

    #[test]
    fn shorthand_simple_forms() {
        let o = compat("mon:stdio").unwrap();
        assert_eq!(o.get("backend"), Some("stdio"));
        assert!(o.get_bool("mux", false));
        assert!(!o.get_bool("signal", true));
        assert_eq!(compat("file:/tmp/x").unwrap().get("path"), Some("/tmp/x"));
        assert_eq!(compat("pipe:/tmp/p").unwrap().get("backend"), Some("pipe"));
        assert_eq!(compat("vc:80Cx24C").unwrap().get("cols"), Some("80"));
        assert_eq!(
            compat("bogus").unwrap_err().unwrap().to_string(),
            "'bogus' is not a valid char driver"
        );
    }

    fn create(params: &str) -> Result<ChardevConfig, String> {
        let mut store = OptsStore::new(&CHARDEV_OPTS);
        let mut console = Console::capture("q");
        let loc = Location::words(["-chardev", params]);
        store
            .parse_noisily(params, true, &loc, &mut console)
            .map_err(|e| e.to_string())?;
        let mut reg = Registry::default();
        match reg.create(&store.entries[0], false, &mut console) {
            Ok(Created::Ok) => Ok(reg.created.remove(0)),
            Ok(Created::Unsupported(what)) => Err(format!("unsupported {what}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn socket_chardev_validation() {
        let c = create("socket,path=qemu-ga-socket,server=on,wait=off,id=qga0").unwrap();
        assert_eq!(c.id, "qga0");
        assert_eq!(
            c.backend,
            ChardevBackend::Socket(SocketChardev {
                address: SocketAddress::Unix {
                    path: "qemu-ga-socket".into()
                },
                server: true,
                wait: false,
                telnet: false,
                reconnect_secs: 0
            })
        );
        assert_eq!(
            create("socket,id=x").unwrap_err(),
            "Unable to parse FD number "
        );
        assert_eq!(
            create("socket,id=x,host=h").unwrap_err(),
            "chardev: socket: no port given"
        );
        assert_eq!(
            create("socket,id=x,path=p,wait=off").unwrap_err(),
            "'wait' option is incompatible with socket in client connect mode"
        );
        assert_eq!(
            create("socket,id=x,path=p,host=h,port=1").unwrap_err(),
            "None or one of 'path', 'fd' or 'host' option required."
        );
        assert_eq!(
            create("socket,id=x,host=h,port=1,server=on,tn3270=on").unwrap_err(),
            "unsupported chardev socket option 'tn3270'"
        );
        assert_eq!(create("socket").unwrap_err(), "chardev: no id specified");
        assert_eq!(
            create("id=x").unwrap_err(),
            "chardev: \"x\" missing backend"
        );
        assert_eq!(
            create("foo,id=x").unwrap_err(),
            "'foo' is not a valid char driver name"
        );
        assert_eq!(
            create("pty,id=x").unwrap_err(),
            "unsupported chardev backend 'pty'"
        );
    }

    #[test]
    fn stdio_is_single_use_and_mux_shares() {
        let mut reg = Registry::default();
        let mut console = Console::capture("q");
        let mut store = OptsStore::new(&CHARDEV_OPTS);
        let loc = Location::none();
        store
            .parse_noisily("stdio,id=a,mux=on,signal=off", true, &loc, &mut console)
            .unwrap();
        store
            .parse_noisily("stdio,id=b", true, &loc, &mut console)
            .unwrap();
        assert!(matches!(
            reg.create(&store.entries[0], false, &mut console),
            Ok(Created::Ok)
        ));
        assert_eq!(
            reg.create(&store.entries[1], false, &mut console)
                .err()
                .unwrap()
                .to_string(),
            "cannot use stdio by multiple character devices"
        );
        assert_eq!(
            reg.created[0].backend,
            ChardevBackend::Stdio { signal: false }
        );
        reg.attach("a").unwrap();
        reg.attach("a").unwrap();
    }
}
