//! `vmscope` / `qemu-system-x86_64` entry point.

fn main() {
    eprintln!("vmscope: the command line front end is being built; nothing to run yet");
    std::process::exit(1);
}
