#!/bin/sh
# Builds the test kernel and prints the path of the ELF: tests/guest/build/test-kernel.elf,
# or $1 when given. `build.sh --check` instead runs rustfmt and clippy on the kernel.
#
# The kernel is a no_std Rust binary for the host target (no other target or rust-src is
# available), linked static at 1 MiB with our own linker script and compiled without SSE:
# the KVM on the project's machines emulates guest kernel code and cannot execute SSE
# instructions (see spec/environment.md). The script refuses an image that contains any.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
kernel="$here/kernel"
out=${1:-"$here/build/test-kernel.elf"}
target_dir="$here/build/target"
log="$here/build/cargo.log"
mkdir -p "$here/build"

export CARGO_TARGET_DIR="$target_dir"
unset CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER CARGO_BUILD_TARGET RUSTC_WORKSPACE_WRAPPER
export RUSTFLAGS="-C link-arg=-nostartfiles -C link-arg=-static -C link-arg=-T$kernel/link.ld \
-C link-arg=-Wl,--build-id=none -C relocation-model=static \
-C target-feature=-sse,-sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2"

# rustc warns that turning SSE2 off is being phased out; that is the point here, so drop
# that one warning (a paragraph ending with a blank line) and show anything else.
show_log() {
    awk '/^warning: target feature `sse2` must be enabled/ { skip = 1 } !skip { print } /^$/ { skip = 0 }' "$log" >&2
}

if [ "${1:-}" = "--check" ]; then
    status=0
    (cd "$kernel" && cargo fmt --check && cargo clippy --release --quiet -- -D warnings) >"$log" 2>&1 || status=$?
    show_log
    exit "$status"
fi

status=0
(cd "$kernel" && cargo build --release --quiet) >"$log" 2>&1 || status=$?
show_log
if [ "$status" -ne 0 ]; then
    echo "build.sh: cargo build of the test kernel failed" >&2
    exit 1
fi
elf="$target_dir/release/vmscope-test-kernel"

if objdump -d "$elf" | grep -q '%[xy]mm'; then
    echo "build.sh: $elf contains SSE/AVX instructions:" >&2
    objdump -d "$elf" | grep '%[xy]mm' | head -20 >&2
    exit 1
fi

cp "$elf" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "$out"
