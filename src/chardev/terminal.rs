//! The terminal mode of a stdio chardev whose stdin is a tty.
//!
//! QEMU 7.2 turns off echo, canonical mode and input translation but keeps output
//! post-processing (so a `\n` still reaches the screen as `\r\n`), and keeps `ISIG` only
//! with `signal=on`. The original settings are restored on every exit path we can see:
//! the chardev being dropped, `exit()` (an `atexit` handler), a panic (a panic hook), and
//! termination signals (they end the process through the main loop, then `exit()`).

use std::io;
use std::sync::{Mutex, Once};

/// The settings to restore, present while raw mode is on.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);
static INSTALL_HOOKS: Once = Once::new();

/// Puts stdin's terminal in QEMU's raw mode. Returns `Ok(false)` when stdin is not a tty.
pub(crate) fn enter_raw_mode(allow_signals: bool) -> io::Result<bool> {
    // SAFETY: isatty only inspects the fd.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Ok(false);
    }
    // SAFETY: termios is plain data; tcgetattr fills it in.
    let mut original: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a termios.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut original) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut raw = original;
    raw.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    raw.c_oflag |= libc::OPOST;
    raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
    if !allow_signals {
        raw.c_lflag &= !libc::ISIG;
    }
    raw.c_cflag &= !(libc::CSIZE | libc::PARENB);
    raw.c_cflag |= libc::CS8;
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;

    {
        let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
        if saved.is_none() {
            *saved = Some(original);
        }
    }
    INSTALL_HOOKS.call_once(install_restore_hooks);
    // SAFETY: valid fd and pointer to a fully initialised termios.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Restores the terminal if raw mode is on; idempotent and safe to call from any thread.
pub(crate) fn restore() {
    // try_lock: this also runs from a panic hook, possibly while the lock is held.
    let saved = match SAVED.try_lock() {
        Ok(mut guard) => guard.take(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().take(),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some(original) = saved {
        // SAFETY: valid fd and pointer to the termios saved by enter_raw_mode.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &original) };
    }
}

extern "C" fn restore_at_exit() {
    restore();
}

fn install_restore_hooks() {
    // SAFETY: registering a plain extern "C" function without arguments.
    unsafe { libc::atexit(restore_at_exit) };
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}
