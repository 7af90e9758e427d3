//! Errors of chardev creation and attachment, worded as QEMU 7.2 words them.
//!
//! The messages carry no `qemu-system-x86_64: -monitor ...:` prefix: the caller knows
//! which option created the chardev and prefixes it, as QEMU's error location does.
//! OS errors are rendered as `strerror` text (no "(os error N)" suffix) because QEMU
//! prints them that way; they are therefore part of the message, not a `#[source]`.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ChardevError {
    #[error("Duplicate ID '{0}' for chardev")]
    DuplicateId(String),
    #[error("chardev \"{0}\" not found")]
    NotFound(String),
    #[error("Device '{0}' is in use")]
    InUse(String),
    #[error("too many uses of multiplexed chardev '{0}' (maximum is {max})", max = super::MAX_MUX_FRONTENDS)]
    TooManyMuxUsers(String),
    #[error("cannot use stdio by multiple character devices")]
    StdioInUse,
    #[error("Could not open '{}': {}", .path.display(), os_error_text(.error))]
    Open { path: PathBuf, error: io::Error },
    #[error("Unable to open logfile {}: {}", .path.display(), os_error_text(.error))]
    Logfile { path: PathBuf, error: io::Error },
    #[error("Failed to connect to '{address}': {}", os_error_text(.error))]
    Connect { address: String, error: io::Error },
    #[error("Failed to unlink socket {}: {}", .path.display(), os_error_text(.error))]
    Unlink { path: PathBuf, error: io::Error },
    #[error("Failed to bind socket to {}: {}", .path.display(), os_error_text(.error))]
    BindUnix { path: PathBuf, error: io::Error },
    #[error("Failed to find an available port: {}", os_error_text(.error))]
    BindTcp { error: io::Error },
    #[error("address resolution failed for {host}:{port}: {reason}")]
    Resolve {
        host: String,
        port: u16,
        reason: String,
    },
    /// A host facility the chardev layer needs (epoll, eventfd, a thread, the terminal)
    /// failed; `what` names it.
    #[error("{what}: {}", os_error_text(.error))]
    Host {
        what: &'static str,
        error: io::Error,
    },
}

impl ChardevError {
    pub(crate) fn host(what: &'static str) -> impl FnOnce(io::Error) -> ChardevError {
        move |error| ChardevError::Host { what, error }
    }
}

/// `strerror` text of an OS error ("No such file or directory"), or the error's own text.
pub(crate) fn os_error_text(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(errno) => {
            let mut buf = [0u8; 256];
            // SAFETY: the buffer is valid for its length; the XSI strerror_r that libc binds
            // writes a NUL-terminated string into it when it returns 0.
            let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
            if rc != 0 {
                return error.to_string();
            }
            match std::ffi::CStr::from_bytes_until_nul(&buf) {
                Ok(text) => text.to_string_lossy().into_owned(),
                Err(_) => error.to_string(),
            }
        }
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_qemu_wording() {
        let e = ChardevError::Open {
            path: "/nonexistdir/x".into(),
            error: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "Could not open '/nonexistdir/x': No such file or directory"
        );
        let e = ChardevError::Connect {
            address: "127.0.0.1:1".into(),
            error: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            e.to_string(),
            "Failed to connect to '127.0.0.1:1': Connection refused"
        );
        assert_eq!(
            ChardevError::TooManyMuxUsers("m".into()).to_string(),
            "too many uses of multiplexed chardev 'm' (maximum is 4)"
        );
        assert_eq!(
            ChardevError::NotFound("nope".into()).to_string(),
            "chardev \"nope\" not found"
        );
    }
}
