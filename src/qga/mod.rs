//! Guest-agent protocol: the vmscope-ga agent and the host-side client.
