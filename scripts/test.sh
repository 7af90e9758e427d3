#!/usr/bin/env bash
# Runs the whole test suite: installs the Debian packages the tests need (QEMU 7.2 as the
# reference, SeaBIOS, socat, ...), builds the test kernel, runs every cargo test, then prints
# how many tests used /dev/kvm and one closing summary line.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

"$top/scripts/setup-debian.sh" || exit 1

kvm_log="$top/target/kvm-tests.log"
mkdir -p "$top/target"
rm -f "$kvm_log"
export VMSCOPE_KVM_LOG="$kvm_log"

output="$top/target/test-output.log"
# One test at a time: the scenarios time guests under emulation on 2 cores.
cargo test --all-targets --no-fail-fast -- --test-threads=1 2>&1 | tee "$output"
status=${PIPESTATUS[0]}

passed=0
failed=0
ignored=0
while read -r p f i; do
    passed=$((passed + p)); failed=$((failed + f)); ignored=$((ignored + i))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$output")

kvm_tests=0
[ -f "$kvm_log" ] && kvm_tests=$(sort -u "$kvm_log" | wc -l)
echo
echo "KVM: $kvm_tests tests used /dev/kvm"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "cargo test failed before running every test (exit status $status)"
    failed=1
fi
echo "vmscope: $passed passed, $failed failed, $ignored skipped"
exit "$status"
