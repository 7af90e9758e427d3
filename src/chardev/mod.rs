//! Character devices (stdio, file, pipe, unix/tcp sockets, telnet, mux) and the epoll main loop.
