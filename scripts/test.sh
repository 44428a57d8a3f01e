#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root): bootstrap, format, lints (user-space crates
# and the eBPF crates, warnings are errors), unit tests and privileged integration tests,
# then a check that the suite left no kernel state behind.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/bootstrap.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the privileged tests need root; run: sudo bash scripts/test.sh" >&2
    exit 1
fi

echo "== rustfmt"
cargo fmt --all --check
echo "== clippy (user space)"
cargo clippy --locked --all-targets -- -D warnings
echo "== clippy (eBPF)"
for crate in crates/pktpath-ebpf crates/pktpath-ebpf-test; do
    (cd "$crate" && cargo +nightly clippy --locked --target bpfel-unknown-none -Z build-std=core --release -- -D warnings)
done

# bpffs is where `route attach` pins the data path; it mounts bpffs when missing and leaves
# it mounted (as every BPF host has it). Mount it first so the state comparison below sees
# only what the tests leave.
mounted_bpffs=""
if ! grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts; then
    mount -t bpf bpf /sys/fs/bpf
    mounted_bpffs=1
fi

before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$before" "$after" "${log:-}"' EXIT
bash scripts/kernel-state.sh > "$before"

echo "== tests"
log=$(mktemp)
set +e
cargo nextest run --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

bash scripts/kernel-state.sh > "$after"
if ! diff -u "$before" "$after" >&2; then
    echo "test.sh: the tests left kernel state behind (diff above)" >&2
    status=1
fi
# Put bpffs back as it was (the tests left nothing in it: checked above).
# (progs.debug and maps.debug are the kernel's own, present in every bpffs.)
if [ -n "$mounted_bpffs" ] && [ -z "$(ls -A /sys/fs/bpf | grep -v -x -e progs.debug -e maps.debug)" ]; then
    umount /sys/fs/bpf
fi
# The runner's summary is the last line.
grep -E '^ *Summary ' "$log" | tail -n1
rm -f "$log"
exit "$status"
