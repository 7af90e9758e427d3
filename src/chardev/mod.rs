//! Character devices (null, stdio, file, pipe, unix/tcp sockets with telnet, mux) and the
//! epoll main loop they run on.
//!
//! # Model
//!
//! * [`MainLoop`] runs on the main thread; everything here lives on it. Other threads use
//!   a [`LoopHandle`] (post a closure, request exit) or a [`ChardevWriter`].
//! * [`Chardevs`] opens the chardevs of a [`ChardevConfig`](crate::config::ChardevConfig)
//!   list and attaches front ends (the 16550, a monitor) to them. A front end implements
//!   [`ChardevFrontend`]: it is asked how much input it can take
//!   ([`ChardevFrontend::can_receive`]), given input ([`ChardevFrontend::receive`]) and
//!   told about connections ([`ChardevEvent`]), always on the loop thread.
//! * Output goes through the [`ChardevWriter`] that `attach` returns: `std::io::Write`,
//!   cloneable, non-blocking, usable from any thread (see its docs for what happens while
//!   nobody is connected or the peer stalls).
//! * Flow control: when `can_receive` returns 0 the chardev holds input back (and stops
//!   reading the backend once its buffer is full). The front end calls
//!   [`ChardevWriter::accept_input`] when it has room again.
//!
//! # QEMU 7.2 behaviour reproduced
//!
//! Socket servers take one client at a time and accept the next one when it leaves; a
//! `wait` server blocks start-up with QEMU's `QEMU waiting for connection on: ...` notice;
//! a client half-close still gets every byte it sent processed and the replies sent;
//! telnet sends QEMU's 12 negotiation bytes and strips IAC sequences; a mux shares one
//! backend between up to four front ends with Ctrl-a c/x/h/b/t (Ctrl-a s prints that
//! vmscope cannot commit `-snapshot` data unless a handler is installed); stdio puts a
//! terminal in QEMU's raw mode and restores it on exit, panic and signals.

mod device;
mod error;
mod main_loop;
mod mux;
mod output;
mod registry;
mod signals;
mod socket;
mod status;
mod telnet;
mod terminal;

pub use error::ChardevError;
pub use main_loop::{Interest, LoopHandle, MainLoop, Readiness, TimerId, WatchId};
pub use mux::MAX_MUX_FRONTENDS;
pub use output::{ChardevWriter, OUTPUT_QUEUE_LIMIT};
pub use registry::Chardevs;
pub use signals::TerminationSignal;
pub use status::{ChardevInfo, ChardevInfoSource};

/// Something a front end is told about, always on the loop thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChardevEvent {
    /// The backend has a peer: a socket client connected, or (for stdio, file, pipe,
    /// null) the chardev started. A monitor prints its banner on this.
    Opened,
    /// The peer left (socket client disconnected, input reached end of file). Output is
    /// discarded until the next `Opened` for sockets.
    Closed,
    /// A break: telnet `IAC BREAK`, or Ctrl-a b on a mux.
    Break,
    /// Mux only: this front end got the focus (Ctrl-a c, or being attached last).
    FocusIn,
    /// Mux only: another front end got the focus.
    FocusOut,
}

/// A device or monitor reading a chardev. Called on the loop thread only; `Send + Sync`
/// because the same object is usually also driven from a vCPU thread.
pub trait ChardevFrontend: Send + Sync {
    /// How many input bytes the front end can take now; 0 holds input back until it calls
    /// [`ChardevWriter::accept_input`].
    fn can_receive(&self) -> usize;
    /// Input bytes, at most what `can_receive` allowed.
    fn receive(&self, data: &[u8]);
    /// A connection event.
    fn event(&self, _event: ChardevEvent) {}
}

pub(crate) use crate::program_name;
