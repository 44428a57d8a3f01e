#!/usr/bin/env bash
# pktpath's benchmarks in one command, as root:
#
#   bash bench/run.sh            # every part: classify forward update trace latency
#   bash bench/run.sh forward    # one part (or several)
#   bash bench/run.sh table      # merge bench/results/*.json and print the table only
#
# Builds pktpath and pktpath-bench in release mode, installs trafgen (netsniff-ng),
# bpftrace and perf when missing, runs the parts, writes bench/results/<part>.json and the merged
# bench/results/latest.json, and prints the table. Everything the run creates (network
# namespaces, links, pins, nftables tables, tc filters, processes) is removed when it ends,
# also on failure or Ctrl-C; `pktpath-bench cleanup` then sweeps what a killed run left.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh: run as root (network namespaces, eBPF): sudo bash bench/run.sh" >&2
    exit 1
fi

need() { # need COMMAND DEBIAN-PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "bench/run.sh: installing $2 (for $1)" >&2
        apt-get install -y "$2" >/dev/null || {
            apt-get update >/dev/null && apt-get install -y "$2" >/dev/null
        }
    fi
}
need trafgen netsniff-ng
need bpftrace bpftrace
need nft nftables
need perf linux-perf
need objdump binutils

cargo build --release -p pktpath -p pktpath-bench

bench=./target/release/pktpath-bench
status=0
# Ctrl-C reaches the whole foreground group, pktpath-bench included, which unwinds through
# its guards; a TERM sent to this script is passed on as INT.
"$bench" "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" && status=0 || status=$?
done
trap - INT TERM
"$bench" cleanup
exit "$status"
