#!/usr/bin/env bash
# Prints the kernel state tests could leave behind, one sorted line each: network namespaces,
# links, TC filters and qdiscs, ip rules and the routes of numbered tables (the slow path's)
# of the root namespace, bpffs pins, mounts of bpffs/tracefs, and pktpath's state and lock
# files under /run/pktpath.
set -uo pipefail
ip netns list 2>/dev/null | awk '{print "netns " $1}'
ip -o link show 2>/dev/null | awk -F': ' '{print "link " $2}' | sed 's/@.*//'
for dev in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'); do
    tc qdisc show dev "$dev" 2>/dev/null | grep -v -E 'noqueue|pfifo_fast|fq_codel|mq ' | sed "s/^/qdisc $dev /"
    for dir in ingress egress; do
        tc filter show dev "$dev" "$dir" 2>/dev/null | sed "s/^/filter $dev $dir /"
    done
done
for fam in -4 -6; do
    ip "$fam" rule show 2>/dev/null | sed "s/^/rule $fam /"
    ip "$fam" route show table all 2>/dev/null | grep -E ' table [0-9]+' | sed "s/^/route $fam /"
done
if command -v bpftool >/dev/null; then
    bpftool net show 2>/dev/null | grep -E 'tcx|xdp|clsact' | sed 's/^/bpf-net /'
fi
[ -d /sys/fs/bpf ] && find /sys/fs/bpf -mindepth 1 2>/dev/null | sed 's/^/pin /'
[ -d /run/pktpath ] && find /run/pktpath 2>/dev/null | sed 's/^/state /'
grep -E ' (bpf|tracefs) ' /proc/self/mounts | awk '{print "mount " $2 " " $3}'
exit 0
