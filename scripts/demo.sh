#!/usr/bin/env bash
# The main job: builds vmscope and the bundled test kernel, then boots the kernel under KVM
# with -nographic, i.e. COM1 and the HMP monitor multiplexed on stdio as with QEMU
# (Ctrl-a c switches to the monitor, Ctrl-a x quits). The kernel brings up all 4 vCPUs,
# prints what it found and powers the VM off.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$top/Cargo.toml" --bin vmscope
kernel=$("$top/tests/guest/build.sh" | tail -n 1)
exec "$top/target/release/vmscope" -nographic -smp 4 -m 512M -kernel "$kernel" -append "${1:-smp}"
