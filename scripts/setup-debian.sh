#!/usr/bin/env bash
# Installs the Debian 12 packages vmscope's tests need: QEMU 7.2 (the reference the tests
# compare against), SeaBIOS, socat, telnet, acpica-tools, binutils (GNU as/ld for the test boot
# programs) and a Debian kernel image for the bzImage loader test; and QEMU's Python QMP library from PyPI. Idempotent: does nothing when everything is present.
#
# qemu-system-x86 and qemu-utils are pinned to the same bookworm version and installed
# together: some machine images ship a newer qemu-utils from backports, and installing
# qemu-system-x86 alone would remove it and leave no qemu-img.
set -euo pipefail

packages_present() {
    command -v qemu-system-x86_64 >/dev/null &&
        qemu-system-x86_64 --version | grep -q 'version 7\.2' &&
        command -v qemu-img >/dev/null && qemu-img --version | grep -q 'version 7\.2' &&
        [ -e /usr/share/seabios/bios-256k.bin ] &&
        command -v socat >/dev/null && command -v telnet >/dev/null &&
        command -v iasl >/dev/null &&
        command -v as >/dev/null && command -v ld >/dev/null &&
        compgen -G '/boot/vmlinuz-*' >/dev/null
}

# QEMU's own Python QMP client library, one of the real clients the monitor tests use.
if ! python3 -c 'import qemu.qmp' 2>/dev/null; then
    python3 -m pip install --quiet qemu.qmp ||
        { echo "setup-debian.sh: pip install qemu.qmp failed" >&2; exit 1; }
fi

if packages_present; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-debian.sh: missing packages and not root; run as root (or with sudo)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
case "$qemu_version" in
    1:7.2*) ;;
    *) echo "setup-debian.sh: expected QEMU 7.2 from Debian 12, apt offers '$qemu_version'" >&2
       exit 1 ;;
esac
apt-get install -y -qq --allow-downgrades \
    "qemu-system-x86=$qemu_version" "qemu-utils=$qemu_version" \
    seabios socat telnet acpica-tools binutils linux-image-amd64 >/dev/null
packages_present || { echo "setup-debian.sh: packages still missing after install" >&2; exit 1; }
