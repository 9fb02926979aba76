#!/usr/bin/env bash
# In-path engine throughput with real stacks: iperf3 TCP from a client namespace through a
# router namespace to a server namespace, first with plain kernel forwarding, then through
# `blocklab serve` with an `[inpath]` section (the TUN device, policy routing sending both
# directions of the client traffic into it, the shipped RU rules at 2026-03-01), in the same
# run and the same topology. Prints both rates and their ratio (issue 11's target: the engine
# >= 30% of kernel forwarding and >= 1 Gbit/s on 2 cores).
#
# Run as root from the repository root, after `cargo build --release`:
#
#   benches/inpath-live.sh                  # 10 s per run, one TCP stream
#   SECS=20 STREAMS=4 benches/inpath-live.sh
#   BLOCKLAB=path/to/blocklab benches/inpath-live.sh
#   OFFLOAD=false benches/inpath-live.sh    # `[inpath] offload = false`: no GSO/GRO
#
# Everything it creates (three namespaces named blbench<pid>-{c,r,s}, their veth pairs, the
# TUN device inside the router namespace, the iperf3 servers and blocklab) is removed on exit,
# also on error or Ctrl-C. No traffic leaves the namespaces.
set -euo pipefail

SECS=${SECS:-10}
STREAMS=${STREAMS:-1}
DATE=${DATE:-2026-03-01}
OFFLOAD=${OFFLOAD:-}
BLOCKLAB=${BLOCKLAB:-target/release/blocklab}

for tool in ip iperf3 python3; do
    command -v "$tool" >/dev/null || { echo "inpath-live: needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "inpath-live: run as root (namespaces, TUN)" >&2; exit 2; }
[ -x "$BLOCKLAB" ] || { echo "inpath-live: no $BLOCKLAB (cargo build --release)" >&2; exit 2; }

ID=blbench$$
C=$ID-c R=$ID-r S=$ID-s
DIR=$(mktemp -d)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "$C" "$R" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

for ns in "$C" "$R" "$S"; do ip netns add "$ns"; done
ip -n "$C" link add eth0 type veth peer name rc netns "$R"
ip -n "$R" link add ro type veth peer name eth0 netns "$S"
ip -n "$C" addr add 10.88.1.2/24 dev eth0
ip -n "$R" addr add 10.88.1.1/24 dev rc
ip -n "$R" addr add 10.88.2.1/24 dev ro
ip -n "$S" addr add 10.88.2.2/24 dev eth0
for ns in "$C" "$R" "$S"; do ip -n "$ns" link set lo up; done
ip -n "$C" link set eth0 up
ip -n "$R" link set rc up
ip -n "$R" link set ro up
ip -n "$S" link set eth0 up
ip -n "$C" route add default via 10.88.1.1
ip -n "$S" route add default via 10.88.2.1
ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0

# One iperf3 run from the client (a fresh one-shot server each time): sets RATE (Gbit/s)
# and RETR (the sender's retransmissions).
measure() {
    ip netns exec "$S" iperf3 -s -1 >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 0.5
    ip netns exec "$C" iperf3 -c 10.88.2.2 -t "$SECS" -P "$STREAMS" -J >"$DIR/run.json"
    python3 - "$DIR/run.json" >"$DIR/rate" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
print("%.3f %d" % (e["sum_received"]["bits_per_second"] / 1e9, e["sum_sent"].get("retransmits", 0)))
EOF
    read -r RATE RETR <"$DIR/rate"
}

measure
KERNEL=$RATE
echo "kernel forwarding:   $KERNEL Gbit/s ($RETR retransmits; ${SECS}s, $STREAMS stream(s))"

cat >"$DIR/blocklab.toml" <<EOF
date = "$DATE"

[[clients]]
networks = ["10.88.1.0/24"]
jurisdiction = "ru"

[inpath]
device = "bl0"
clients = ["10.88.1.0/24"]
${OFFLOAD:+offload = $OFFLOAD}
EOF
ip netns exec "$R" "$BLOCKLAB" serve --config "$DIR/blocklab.toml" >"$DIR/blocklab.log" 2>&1 &
PIDS+=($!)
BL=$!
for _ in $(seq 100); do
    grep -qs "listening.*inpath" "$DIR/blocklab.log" && break
    sleep 0.1
done
grep -q "listening.*inpath" "$DIR/blocklab.log" || { cat "$DIR/blocklab.log" >&2; exit 1; }
ip -n "$R" rule add iif rc lookup 100
ip -n "$R" rule add iif ro lookup 100
ip -n "$R" route add default dev bl0 table 100

# CPU seconds blocklab used (user + system; `ip netns exec` execs it, so $BL is blocklab).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$BL/stat"; }
before=$(ip netns exec "$R" cat /sys/class/net/bl0/statistics/tx_bytes)
cpu0=$(cpu)
measure
ENGINE=$RATE
cpu1=$(cpu)
after=$(ip netns exec "$R" cat /sys/class/net/bl0/statistics/tx_bytes)
echo "in-path engine:      $ENGINE Gbit/s ($RETR retransmits; $(( (after - before) / 1000000 )) MB through the TUN device; blocklab used $(python3 -c "print('%.1f' % ($cpu1 - $cpu0))") CPU s${OFFLOAD:+; offload = $OFFLOAD})"
python3 -c "k, e = $KERNEL, $ENGINE; print('engine / kernel:     %.1f%%' % (100 * e / k if k else 0))"
