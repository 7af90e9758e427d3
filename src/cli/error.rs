//! Command-line errors and warnings, worded and laid out exactly as QEMU 7.2 prints them.
//!
//! QEMU's `error_report()` prints `PROG: LOCATION: MESSAGE`, where LOCATION is the argv words
//! of the option being processed (`-drive foo=bar`) and is absent for errors found after the
//! option loop (`unsupported machine type`). A hint (`error_append_hint`) follows on its own
//! lines without any prefix. Some failures print two `error_report()` lines at the same
//! location (`-serial bogus`), which [`CliError::then`] models.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

/// Hint QEMU appends to an invalid identifier.
pub(crate) const ID_HINT: &str =
    "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.";
/// Hint QEMU appends to an invalid size.
pub(crate) const SIZE_HINT: &str = "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.";
/// Hint QEMU appends to an unknown machine type.
pub(crate) const MACHINE_HINT: &str = "Use -machine help to list supported machines";

/// What went wrong, as QEMU words it (the text after the location).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("invalid option")]
    InvalidOption,
    #[error("requires an argument")]
    RequiresArgument,
    #[error("Option not supported for this target")]
    NotForTarget,
    #[error("Invalid parameter '{0}'")]
    InvalidParameter(String),
    #[error("Parameter '{name}' expects {expected}")]
    InvalidValue { name: String, expected: String },
    #[error("Parameter '{name}' does not accept value '{value}'")]
    ValueNotAccepted { name: String, value: String },
    #[error("Parameter '{0}' is missing")]
    MissingParameter(String),
    #[error("Parameter '{0}' is unexpected")]
    UnexpectedParameter(String),
    #[error("Value '{value}' is too large for parameter '{name}'")]
    NumberTooLarge { name: String, value: String },
    #[error("Value '{value}' is out of range for parameter '{name}'")]
    SizeOutOfRange { name: String, value: String },
    #[error("Duplicate ID '{id}' for {group}")]
    DuplicateId { id: String, group: String },
    #[error("Expected '=' after parameter '{0}'")]
    ExpectedEquals(String),
    #[error("Parameters '{0}.*' used inconsistently")]
    InconsistentKey(String),
    /// Any other QEMU message, verbatim.
    #[error("{0}")]
    Message(String),
    /// A valid QEMU option or value that vmscope does not implement (yet).
    #[error("not supported yet by vmscope ({0})")]
    Unsupported(String),
}

impl ErrorKind {
    pub(crate) fn message(text: impl Into<String>) -> Self {
        ErrorKind::Message(text.into())
    }

    pub(crate) fn invalid_value(name: &str, expected: &str) -> Self {
        ErrorKind::InvalidValue {
            name: name.to_string(),
            expected: expected.to_string(),
        }
    }

    /// Lines QEMU prints after the message, unprefixed.
    fn hint(&self) -> Option<&'static str> {
        match self {
            ErrorKind::InvalidValue { expected, .. } if expected == "an identifier" => {
                Some(ID_HINT)
            }
            ErrorKind::InvalidValue { expected, .. }
                if expected == "a non-negative number below 2^64" =>
            {
                Some(SIZE_HINT)
            }
            ErrorKind::Message(text) if text == "unsupported machine type" => Some(MACHINE_HINT),
            ErrorKind::Message(text) if text == "invalid datetime format" => {
                Some("valid formats: '2006-06-17T16:01:21' or '2006-06-17'")
            }
            _ => None,
        }
    }
}

/// A fatal command-line error: the process prints it and exits with status 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError {
    /// argv index of the option, to report the first of several refusals.
    position: usize,
    /// The `error_report()` lines QEMU prints before exiting: (location, message).
    lines: Vec<(Option<String>, ErrorKind)>,
}

impl CliError {
    /// An error with no location (QEMU reports it after the option loop).
    pub fn new(kind: ErrorKind) -> Self {
        CliError {
            position: usize::MAX,
            lines: vec![(None, kind)],
        }
    }

    /// An error located at the given argv words.
    pub fn at(location: &Location, kind: ErrorKind) -> Self {
        CliError {
            position: location.position,
            lines: vec![(location.text(), kind)],
        }
    }

    /// Adds a follow-up line QEMU prints after this error, at the same location.
    pub fn then(mut self, kind: ErrorKind) -> Self {
        let location = self.lines[0].0.clone();
        self.lines.push((location, kind));
        self
    }

    /// Adds a follow-up line at another location.
    pub fn then_at(mut self, location: &Location, kind: ErrorKind) -> Self {
        self.lines.push((location.text(), kind));
        self
    }

    /// Gives an unlocated error the location of the option it came from.
    pub(crate) fn located(mut self, location: &Location) -> Self {
        if self.lines[0].0.is_none() {
            self.position = location.position;
            for line in &mut self.lines {
                if line.0.is_none() {
                    line.0 = location.text();
                }
            }
        }
        self
    }

    /// argv index of the option it is about (`usize::MAX` when unlocated).
    pub fn position(&self) -> usize {
        self.position
    }

    /// The first message.
    pub fn kind(&self) -> &ErrorKind {
        &self.lines[0].1
    }

    /// The location text (`-drive foo=bar`) of the first message, if QEMU prints one.
    pub fn location(&self) -> Option<&str> {
        self.lines[0].0.as_deref()
    }

    /// The complete message as QEMU prints it to stderr, each reported line prefixed with
    /// the basename of `argv0` (QEMU's `error_init()` strips everything up to the last `/`).
    pub fn report(&self, argv0: &OsStr) -> String {
        render(Some(&program_name(argv0)), &self.lines)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = render(None, &self.lines);
        f.write_str(text.trim_end_matches('\n'))
    }
}

impl std::error::Error for CliError {}

fn render(program: Option<&str>, lines: &[(Option<String>, ErrorKind)]) -> String {
    let mut out = String::new();
    for (location, kind) in lines {
        out.push_str(&prefix(program, location.as_deref()));
        out.push_str(&kind.to_string());
        out.push('\n');
        if let Some(hint) = kind.hint() {
            out.push_str(hint);
            out.push('\n');
        }
    }
    out
}

/// `PROG: LOCATION: ` as QEMU's `print_loc()` writes it.
fn prefix(program: Option<&str>, location: Option<&str>) -> String {
    match (program, location) {
        (Some(p), Some(l)) => format!("{p}: {l}: "),
        (Some(p), None) => format!("{p}: "),
        (None, Some(l)) => format!("{l}: "),
        (None, None) => String::new(),
    }
}

/// QEMU's program name: the part of `argv[0]` after the last `/`.
pub fn program_name(argv0: &OsStr) -> String {
    let text = argv0.to_string_lossy();
    match text.rfind('/') {
        Some(i) => text[i + 1..].to_string(),
        None => text.into_owned(),
    }
}

/// A warning QEMU prints and carries on after (`PROG: LOCATION: warning: MESSAGE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    location: Option<String>,
    message: String,
    /// Unprefixed lines after the warning (`Please use server=on instead`).
    hint: Option<String>,
}

impl Warning {
    pub fn new(location: &Location, message: impl Into<String>) -> Self {
        Warning {
            location: location.text(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn report(&self, program: &str) -> String {
        let mut out = prefix(Some(program), self.location.as_deref());
        out.push_str("warning: ");
        out.push_str(&self.message);
        out.push('\n');
        if let Some(hint) = &self.hint {
            out.push_str(hint);
            out.push('\n');
        }
        out
    }
}

/// The argv words an error is reported at: one word (`-foo`) or an option and its argument
/// (`-m 4G`); [`Location::none`] for errors found after the option loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    words: Vec<String>,
    /// Index of the first word in argv (`usize::MAX` for none).
    position: usize,
}

impl Default for Location {
    fn default() -> Self {
        Location {
            words: Vec::new(),
            position: usize::MAX,
        }
    }
}

impl Location {
    pub fn none() -> Self {
        Location::default()
    }

    /// Records where in argv these words start.
    pub fn at(mut self, position: usize) -> Self {
        self.position = position;
        self
    }

    pub fn words<I, S>(words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Location {
            words: words
                .into_iter()
                .map(|w| w.as_ref().to_string_lossy().into_owned())
                .collect(),
            position: usize::MAX,
        }
    }

    pub fn is_none(&self) -> bool {
        self.words.is_empty()
    }

    /// The words as QEMU prints them before a message (`-drive file=x`).
    pub fn text(&self) -> Option<String> {
        if self.words.is_empty() {
            None
        } else {
            Some(self.words.join(" "))
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::words([path.as_os_str()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prefixes_program_basename_and_location() {
        let loc = Location::words(["-drive", "foo=bar"]);
        let err = CliError::at(&loc, ErrorKind::InvalidParameter("foo".into()));
        assert_eq!(
            err.report(OsStr::new("/usr/bin/qemu-system-x86_64")),
            "qemu-system-x86_64: -drive foo=bar: Invalid parameter 'foo'\n"
        );
        assert_eq!(err.to_string(), "-drive foo=bar: Invalid parameter 'foo'");
    }

    #[test]
    fn hints_are_not_prefixed_and_follow_up_lines_are() {
        let loc = Location::words(["-m", "x"]);
        let err = CliError::at(
            &loc,
            ErrorKind::invalid_value("size", "a non-negative number below 2^64"),
        );
        assert_eq!(
            err.report(OsStr::new("q")),
            format!(
                "q: -m x: Parameter 'size' expects a non-negative number below 2^64\n{SIZE_HINT}\n"
            )
        );
        let loc = Location::words(["-serial", "bogus"]);
        let err = CliError::at(
            &loc,
            ErrorKind::message("'bogus' is not a valid char driver"),
        )
        .then(ErrorKind::message(
            "could not connect serial device to character backend 'bogus'",
        ));
        assert_eq!(
            err.report(OsStr::new("q")),
            "q: -serial bogus: 'bogus' is not a valid char driver\n\
             q: -serial bogus: could not connect serial device to character backend 'bogus'\n"
        );
    }

    #[test]
    fn unlocated_errors_have_only_the_program_prefix() {
        let err = CliError::new(ErrorKind::message("unsupported machine type"));
        assert_eq!(
            err.report(OsStr::new("./x/qemu-system-x86_64")),
            format!("qemu-system-x86_64: unsupported machine type\n{MACHINE_HINT}\n")
        );
    }

    #[test]
    fn empty_argument_keeps_its_separator() {
        let loc = Location::words(["-m", ""]);
        let err = CliError::at(&loc, ErrorKind::RequiresArgument);
        assert_eq!(
            err.report(OsStr::new("q")),
            "q: -m : requires an argument\n"
        );
    }
}
