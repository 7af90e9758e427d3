#!/bin/sh
# Assembles the boot programs of this directory into flat binaries loaded at 0x7c00 and
# prints the path of the one named by $1 (default diskprobe): tests/guest/build/NAME.bin.
# Needs only binutils (GNU as and ld), which the Rust toolchain's linker already requires.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
name=${1:-diskprobe}
out_dir="$here/../build"
mkdir -p "$out_dir"
obj="$out_dir/$name.o.$$"
bin="$out_dir/$name.bin"

as --32 -o "$obj" "$here/$name.S"
ld -m elf_i386 -Ttext=0x7c00 -e _start --oformat binary -o "$bin.tmp.$$" "$obj"
rm -f "$obj"
size=$(wc -c <"$bin.tmp.$$")
if [ "$size" -ne 8192 ]; then
    echo "build.sh: $name.bin is $size bytes, expected 8192 (16 sectors)" >&2
    rm -f "$bin.tmp.$$"
    exit 1
fi
mv "$bin.tmp.$$" "$bin"
echo "$bin"
