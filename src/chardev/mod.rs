//! Character devices (stdio, file, pipe, unix/tcp sockets, telnet, mux) and the epoll main loop.

pub mod backends;
pub mod device;
pub mod mainloop;
pub mod stdio;
pub mod telnet;

pub use backends::{ChardevError, Chardevs};
pub use device::{Chardev, ChardevWriter, Frontend};
pub use mainloop::{LoopHandle, MainLoop};
