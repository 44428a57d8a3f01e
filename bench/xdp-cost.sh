#!/usr/bin/env bash
# Per-packet cost of the XDP program against the TC program's on the same tables (issue 18:
# within 10%), as root:
#
#   bash bench/xdp-cost.sh          # 1000 policies ahead of the match
#   bash bench/xdp-cost.sh 10000
#
# Builds pktpath in release mode, makes a scratch network namespace with two veths,
# attaches the data path with --hook xdp (generic: the test runs need no driver), applies N
# policies that do not match (a source /32 each) ahead of one that drops the frame, and
# times both pinned programs with `bpftool prog run ... repeat` on the same 60-byte UDP
# frame, five times each. A drop, because a repeated run reuses its frame: a forwarded one
# would come back rewritten. Removes the namespace, pins and files on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "bench/xdp-cost.sh: run as root" >&2; exit 1; }
command -v bpftool >/dev/null || { echo "bench/xdp-cost.sh: needs bpftool (apt-get install bpftool)" >&2; exit 1; }
cargo build --locked --release -p pktpath >&2
BIN=$PWD/target/release/pktpath
n=${1:-1000}

tag=pktpath-xdpcost-$$
ns=$tag
dir=$(mktemp -d)
pins=/sys/fs/bpf/$tag
in_ns="nsenter --net=/run/netns/$ns"
route="$in_ns $BIN route --pin-dir $pins --state-dir $dir/state"
cleanup() {
    $route detach >/dev/null 2>&1 || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add xc-in type veth peer name xc-in-p
ip -n "$ns" link add xc-out type veth peer name xc-out-p
for l in xc-in xc-in-p xc-out xc-out-p; do ip -n "$ns" link set "$l" up; done
cat > "$dir/configuration.json" <<J
{ "version": 1, "interfaces": [ { "name": "xc-in" }, { "name": "xc-out" } ],
  "next_hops": [ { "name": "up", "interface": "xc-out", "mac": "02:00:00:00:00:02" } ] }
J
python3 - "$dir" "$n" <<'P'
import json, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
pol = [{"id": f"p{i}", "priority": i + 1,
        "match": {"src": f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}/32", "proto": "udp"},
        "action": {"type": "forward", "next_hop": "up"}} for i in range(n)]
pol.append({"id": "hit", "priority": n + 1, "match": {"dst": "10.9.0.0/24"},
            "action": {"type": "drop"}})
json.dump({"version": 1, "policies": pol}, open(f"{d}/runtime.json", "w"))
eth = bytes.fromhex("020000000001020000000003") + b"\x08\x00"
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0x4000, 64, 17, 0,
                           bytes([10, 1, 0, 2]), bytes([10, 9, 0, 1])))
s = sum(struct.unpack("!10H", bytes(ip)))
s = (s & 0xffff) + (s >> 16)
s = (s & 0xffff) + (s >> 16)
ip[10:12] = struct.pack("!H", ~s & 0xffff)
udp = struct.pack("!HHHH", 40000, 5000, 26, 0) + b"x" * 18
open(f"{d}/frame", "wb").write(eth + bytes(ip) + udp)
P
$route attach --config "$dir/configuration.json" --hook xdp --xdp-mode generic >/dev/null 2>&1
$route apply "$dir/runtime.json"
for round in 1 2 3 4 5; do
    for prog in prog prog_xdp; do
        out=$($in_ns bpftool prog run pinned "$pins/$prog" data_in "$dir/frame" repeat 2000000)
        echo "round $round $prog: $(echo "$out" | grep -E 'Return value|duration' | tr '\n' ' ')"
    done
done
