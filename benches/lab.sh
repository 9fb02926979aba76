#!/usr/bin/env bash
# Lab benchmark: `blocklab lab up` time, then throughput and added latency per mode, all in
# one run, on one machine, inside the lab's own namespaces (no traffic leaves them).
#
#   sudo benches/lab.sh                    # release build, MODES="off proxy inpath", 5 s iperf3
#   NO_BUILD=1 BIN=target/debug/blocklab DURATION=2 sudo -E benches/lab.sh   # a quick look
#
# Per mode it starts a lab with one `ru` group at 2022-03-15 (lab name benchlab-MODE) and
# measures from the client namespace:
#   - up:      ms from `lab up` to its "lab NAME ready" line;
#   - ping:    average RTT of PINGS ICMP echoes to the internet namespace (10.77.0.2);
#   - iperf3:  TCP throughput client -> internet for DURATION s (port 5201, routed in every
#              mode: what the path costs plain traffic);
#   - https:   median `time_appconnect` of REQS HTTPS requests to https://example.org/ (TCP +
#              TLS handshake, through the transparent listener in proxy mode);
#   - download: rate of one https://example.org/bytes/BYTES download (spliced by the gateway in
#              proxy mode).
# A mode whose lab does not come up is reported as skipped, with the start of its error.
# Settings (environment): MODES, DURATION (default 5), PINGS (default 20), REQS (default 20),
# BYTES (default 500000000), NO_BUILD=1, BIN=path of the blocklab binary.
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=${MODES:-"off proxy inpath"}
DURATION=${DURATION:-5}
PINGS=${PINGS:-20}
REQS=${REQS:-20}
BYTES=${BYTES:-500000000}
BIN=${BIN:-target/release/blocklab}
[ "$(id -u)" = 0 ] || { echo "benches/lab.sh needs root (network namespaces)" >&2; exit 2; }
for t in ip nft iperf3 ping curl; do
  command -v "$t" >/dev/null || { echo "benches/lab.sh: $t is missing" >&2; exit 2; }
done
if [ -z "${NO_BUILD:-}" ]; then cargo build --release --quiet; fi

WORK=$(mktemp -d)
LAB_PID=""
NAME=""
cleanup() {
  if [ -n "$LAB_PID" ]; then kill -TERM "$LAB_PID" 2>/dev/null || true; wait "$LAB_PID" 2>/dev/null || true; fi
  if [ -n "$NAME" ]; then "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ex() { "$BIN" lab exec --name "$NAME" "$@"; }

printf '%-7s %8s %10s %12s %12s %14s\n' mode "up(ms)" "ping(ms)" "iperf3" "https(ms)" "download"
for MODE in $MODES; do
  NAME="benchlab-$MODE"
  cat >"$WORK/$MODE.toml" <<EOF
date = "2022-03-15"
[lab]
mode = "$MODE"
[[clients]]
name = "ru"
networks = ["10.7.1.0/24"]
jurisdiction = "ru"
EOF
  start=$(date +%s%N)
  "$BIN" lab up --name "$NAME" --config "$WORK/$MODE.toml" >"$WORK/$MODE.out" 2>"$WORK/$MODE.err" &
  LAB_PID=$!
  ready=""
  for _ in $(seq 1 300); do
    if grep -q "^lab $NAME ready" "$WORK/$MODE.out" 2>/dev/null; then ready=1; break; fi
    if ! kill -0 "$LAB_PID" 2>/dev/null; then break; fi
    sleep 0.05
  done
  if [ -z "$ready" ]; then
    printf '%-7s skipped: %s\n' "$MODE" "$(head -c 200 "$WORK/$MODE.err" | tr '\n' ' ')"
    wait "$LAB_PID" 2>/dev/null || true
    LAB_PID=""
    "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true
    continue
  fi
  up_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  ping_ms=$(ex ru -- ping -q -c "$PINGS" -i 0.05 10.77.0.2 | awk -F/ '/^rtt/ {print $5}')
  ex internet -- iperf3 -s -1 >/dev/null 2>&1 &
  IPERF=$!
  bps=""
  for _ in $(seq 1 50); do
    out=$(ex ru -- iperf3 -c 10.77.0.2 -t "$DURATION" -J 2>/dev/null || true)
    bps=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])
except Exception: pass')
    if [ -n "$bps" ]; then break; fi
    sleep 0.1
  done
  kill "$IPERF" 2>/dev/null || true; wait "$IPERF" 2>/dev/null || true
  https_ms=$(for _ in $(seq 1 "$REQS"); do
      ex ru -- curl -s -o /dev/null -w '%{time_appconnect}\n' https://example.org/
    done | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]*1000}')
  rate=$(ex ru -- curl -s -o /dev/null -w '%{speed_download}' "https://example.org/bytes/$BYTES")
  printf '%-7s %8s %10s %9.2f Gb %12s %11.2f Gb/s\n' "$MODE" "$up_ms" "$ping_ms" \
    "$(echo "${bps:-0} / 1000000000" | bc -l)" "$https_ms" "$(echo "$rate * 8 / 1000000000" | bc -l)"
  kill -TERM "$LAB_PID"; wait "$LAB_PID" || true
  LAB_PID=""
done
NAME=""
