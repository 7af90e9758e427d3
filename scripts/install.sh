#!/usr/bin/env bash
# Usage: scripts/install.sh PREFIX
# Builds vmscope in release mode and installs it into PREFIX/bin together with the names
# QEMU's tools have, so scripts that run `qemu-system-x86_64` (or `qemu-img`) from PATH run
# vmscope. Linux takes a process's name from the file it was started as, so the VM shows up
# as `qemu-system-x86` in `ps -A` like QEMU does.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
prefix=$1
top=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release --manifest-path "$top/Cargo.toml" --bins
mkdir -p "$prefix/bin"
install -m 0755 "$top/target/release/vmscope" "$prefix/bin/vmscope"
ln -sf vmscope "$prefix/bin/qemu-system-x86_64"
if [ -x "$top/target/release/vmscope-img" ]; then
    install -m 0755 "$top/target/release/vmscope-img" "$prefix/bin/vmscope-img"
    ln -sf vmscope-img "$prefix/bin/qemu-img"
fi
echo "installed into $prefix/bin:"
ls -l "$prefix/bin" | awk 'NR > 1 { print "  " $9, $10, $11 }'
