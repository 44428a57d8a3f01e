#!/usr/bin/env bash
# Scrape cost and resident memory of `pktpath agent` with N policies (issue 15), as root:
#
#   bash bench/agent-scrape.sh              # 100, 10000 and 100000 policies
#   bash bench/agent-scrape.sh 100000       # one size
#
# Builds pktpath in release mode, makes a scratch network namespace with one veth, runs the
# agent there with N policies (one /32 destination each, forwarded to the veth's peer),
# scrapes /metrics five times with curl and prints the time, the exposition's size, the
# agent's own read time and RSS. Removes the namespaces, pins and files on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "bench/agent-scrape.sh: run as root" >&2; exit 1; }
cargo build --locked --release -p pktpath >&2
BIN=$PWD/target/release/pktpath
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100 10000 100000)

tag=pktpath-agentscrape-$$
ns=$tag-r; peer=$tag-p; pin=/sys/fs/bpf/$tag
dir=$(mktemp -d); pid=
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$peer" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"; ip netns add "$peer"; ip -n "$ns" link set lo up
ip -n "$ns" link add as0 type veth peer name as1 netns "$peer"
ip -n "$ns" addr add 10.250.0.1/24 dev as0; ip -n "$ns" link set as0 up
ip -n "$peer" addr add 10.250.0.2/24 dev as1; ip -n "$peer" link set as1 up
cat > "$dir/configuration.json" <<'JSON'
{ "version": 1,
  "interfaces": [ { "name": "as0" } ],
  "next_hops": [ { "name": "peer", "interface": "as0", "gateway4": "10.250.0.2" } ],
  "tables": [ { "name": "main", "id": 254 } ] }
JSON
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }
for n in "${sizes[@]}"; do
    python3 - "$n" > "$dir/runtime.json" <<'PY'
import json, sys
n = int(sys.argv[1])
rows = (json.dumps({"id": f"p-{i}", "priority": i + 1,
                    "match": {"dst": f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}/32"},
                    "action": {"type": "forward", "next_hop": "peer"}}) for i in range(n))
print('{ "version": 1, "policies": [\n' + ",\n".join(rows) + "\n] }")
PY
    # nsenter itself in the background (not a function: $! would be a subshell's pid).
    nsenter --net="/run/netns/$ns" "$BIN" agent --config "$dir/configuration.json" --runtime "$dir/runtime.json" \
        --pin-dir "$pin" --metrics-listen 127.0.0.1:9471 --detach-on-exit 2> "$dir/agent.log" &
    pid=$!
    for _ in $(seq 600); do
        [ "$(in_ns curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9471/readyz)" = 200 ] && break
        sleep 0.2
    done
    grep -o 'applied.*' "$dir/agent.log"
    for k in 1 2 3 4 5; do
        t=$(in_ns curl -s -o "$dir/metrics.txt" -w '%{time_total}' http://127.0.0.1:9471/metrics)
        echo "N=$n scrape $k: ${t}s, $(wc -c < "$dir/metrics.txt") bytes," \
            "$(grep -c '^pktpath_policy_packets_total' "$dir/metrics.txt") policy series," \
            "$(grep -E '^(process_resident_memory_bytes|pktpath_scrape_read_seconds)' "$dir/metrics.txt" | tr '\n' ' ')"
    done
    kill -TERM "$pid"
    wait "$pid" || echo "agent exit status $?"
    pid=
done
