#!/usr/bin/env bash
# benches/soak.sh — a long DNS + proxy load against one `blocklab serve`, sampling its RSS.
#
#   benches/soak.sh                       # 10 minutes
#   DURATION=60 benches/soak.sh           # a short run
#   DURATION=120 QPS=3000 PROFILE=debug benches/soak.sh
#
# DNS: dnsperf at a fixed rate (QPS, default 2000) over 1000 allowed names (a dnsmasq upstream)
# and linkedin.com (blocked at DNS by the shipped ru rules at 2022-03-10). Proxy: wrk (CONNS
# connections, default 4) through the [http] listener to benches/bench_origin.rs. The gateway's
# RSS is read from /proc every 10 s. Prints the QPS held, the proxy's requests/s, errors, RSS
# after warm-up (the first sample at or after WARMUP s, default 20) and at the end; exits
# non-zero if the end RSS is more than 10% above the warm-up RSS, or on any error.
# Needs: dnsperf, dnsmasq, dig, wrk, python3 (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
QPS=${QPS:-2000}
CONNS=${CONNS:-4}
WARMUP=${WARMUP:-20}
PROFILE=${PROFILE:-release}

for tool in dnsperf dnsmasq dig wrk python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is required" >&2; exit 1; }
done
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin blocklab --example bench_origin
else
  cargo build --quiet --bin blocklab --example bench_origin
fi
BIN=target/$PROFILE/blocklab
ORIGIN_BIN=target/$PROFILE/examples/bench_origin

. benches/lib.sh
bench_workdir soak

# --- upstream and origin
UP=$(free_port)
for i in $(seq 1 1000); do echo "198.51.$(( i / 250 )).$(( i % 250 + 1 )) allowed-$i.soak.lab"; done >"$WORK/hosts"
dnsmasq --keep-in-foreground --conf-file=/dev/null --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --local=/lab/ --local-ttl=5 --user=root --pid-file= \
  --port="$UP" --addn-hosts="$WORK/hosts" 2>/dev/null &
PIDS+=($!)
wait_dns "$UP" allowed-1.soak.lab
"$ORIGIN_BIN" 127.0.0.1:0 >"$WORK/origin.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/origin.out" 2>/dev/null && break; sleep 0.1; done
ORIGIN=$(sed -n 's/.*addr=//p' "$WORK/origin.out")

# --- the gateway (short upstream TTLs keep the cache churning)
DNS=$(free_port)
HTTP=$(free_port)
cat >"$WORK/blocklab.toml" <<CONF
date = "2022-03-10"
[[clients]]
networks = ["127.0.0.0/8"]
jurisdiction = "ru"
[dns]
listen = ["127.0.0.1:$DNS"]
upstream = ["127.0.0.1:$UP"]
# One dnsperf client: the per-client rate limit would cap the load.
rate_limit_qps = 0
[http]
listen = ["127.0.0.1:$HTTP"]
[log]
path = "$WORK/decisions.jsonl"
max_bytes = 10000000
keep = 2
CONF
RUST_LOG=warn "$BIN" serve --config "$WORK/blocklab.toml" 2>"$WORK/blocklab.log" &
BL=$!
PIDS+=($BL)
wait_dns "$DNS" allowed-1.soak.lab

python3 - >"$WORK/queries" <<'EOF'
for i in range(1, 1001):
    print("allowed-%d.soak.lab A" % i)
    if i % 4 == 0:
        print("linkedin.com A")
EOF

# --- load
dnsperf -s 127.0.0.1 -p "$DNS" -d "$WORK/queries" -l "$DURATION" -Q "$QPS" -c 4 -t 3 >"$WORK/dnsperf.out" 2>&1 &
DP=$!
PIDS+=($DP)
cat >"$WORK/req.lua" <<'LUA'
wrk.headers["Host"] = os.getenv("WRK_HOST")
local url = os.getenv("WRK_URL")
request = function() return wrk.format("GET", url) end
LUA
WRK_URL="http://$ORIGIN/bytes/1000" WRK_HOST=$ORIGIN wrk -t 1 -c "$CONNS" -d "${DURATION}s" \
  --timeout 5s -s "$WORK/req.lua" "http://127.0.0.1:$HTTP" >"$WORK/wrk.out" 2>&1 &
WK=$!
PIDS+=($WK)

rss() { awk '/VmRSS/ {print $2}' "/proc/$BL/status"; }
echo "soak: ${DURATION}s, DNS at $QPS qps (dnsperf), proxy with wrk x$CONNS; RSS every 10 s"
start=$(date +%s)
warm=""
last=""
while kill -0 "$DP" 2>/dev/null || kill -0 "$WK" 2>/dev/null; do
  sleep 10
  kill -0 "$BL" 2>/dev/null || { echo "soak: the gateway died" >&2; cat "$WORK/blocklab.log" >&2; exit 1; }
  t=$(( $(date +%s) - start ))
  last=$(rss)
  if [ -z "$warm" ] && [ "$t" -ge "$WARMUP" ]; then warm=$last; fi
  echo "  t=${t}s rss=${last} kB"
done
wait "$DP" || true
wait "$WK" || true

qps=$(awk '/Queries per second/ {print $4}' "$WORK/dnsperf.out")
lost=$(awk '/Queries lost/ {print $3}' "$WORK/dnsperf.out")
completed=$(awk '/Queries completed/ {print $3}' "$WORK/dnsperf.out")
rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.out")
sockerr=$(awk '/Socket errors/ {print}' "$WORK/wrk.out")
echo "dns:   ${qps:-?} qps held (target $QPS), ${completed:-?} completed, ${lost:-?} lost"
echo "proxy: ${rps:-?} req/s, non-2xx ${non2xx:-0}${sockerr:+, $sockerr}"
echo "rss:   warm-up ${warm:-?} kB, end ${last:-?} kB"
logged=$(cat "$WORK"/decisions.jsonl* 2>/dev/null | wc -l)
echo "log:   $logged lines in the kept decision-log files (rotated at 10 MB, 2 kept; older ones deleted)"
status=0
[ -n "$warm" ] && [ -n "$last" ] || { echo "soak: run too short for a warm-up sample (WARMUP=$WARMUP)" >&2; exit 1; }
if [ $(( last * 10 )) -gt $(( warm * 11 )) ]; then
  echo "soak: FAIL: end RSS ${last} kB is more than 10% above warm-up RSS ${warm} kB" >&2
  status=1
fi
if [ "${lost:-0}" != "0" ] && [ "${lost%% *}" != "0" ]; then
  echo "soak: FAIL: dnsperf lost queries: $lost" >&2
  status=1
fi
if [ -n "$sockerr" ] || [ "${non2xx:-0}" != "0" ]; then
  echo "soak: FAIL: proxy errors" >&2
  status=1
fi
exit $status
