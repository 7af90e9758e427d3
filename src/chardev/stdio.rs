//! The terminal side of the stdio backend: raw mode while the VM runs, restored on exit.

use std::sync::Mutex;

/// Terminal settings to restore, saved when raw mode was entered.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Puts stdin's terminal into raw mode as QEMU's stdio chardev does: no echo, no line
/// buffering, no output post-processing; Ctrl-C still raises SIGINT unless `signal` is off.
/// Does nothing when stdin is not a terminal.
pub fn enter_raw_mode(signal: bool) {
    // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a termios owned here.
    unsafe {
        if libc::isatty(0) != 1 {
            return;
        }
        let mut tty: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut tty) != 0 {
            return;
        }
        SAVED.lock().unwrap().get_or_insert(tty);
        tty.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        tty.c_oflag |= libc::OPOST;
        tty.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
        if !signal {
            tty.c_lflag &= !libc::ISIG;
        }
        tty.c_cflag &= !(libc::CSIZE | libc::PARENB);
        tty.c_cflag |= libc::CS8;
        tty.c_cc[libc::VMIN] = 1;
        tty.c_cc[libc::VTIME] = 0;
        libc::tcsetattr(0, libc::TCSANOW, &tty);
    }
}

/// Restores the terminal if raw mode was entered. Safe to call more than once.
pub fn restore_terminal() {
    if let Some(tty) = SAVED.lock().unwrap().take() {
        // SAFETY: restores settings read from the same descriptor.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &tty) };
    }
}
