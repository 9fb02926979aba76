#!/usr/bin/env bash
# benches/proxy.sh — blocklab as a forward proxy against tinyproxy and squid, in one run, with
# the same block list, on loopback. Reports requests/s and p99 latency (wrk) for allowed
# requests over keep-alive and over new connections, for blocked requests, and the
# throughput of one CONNECT tunnel (curl -p, 1 GB).
#
#   benches/proxy.sh                 # DUR=5 CONNS=32 THREADS=2 by default
#   DUR=10 CONNS=64 benches/proxy.sh
#   NO_BUILD=1 BIN=/path/to/other/blocklab benches/proxy.sh   # another build, same harness
#                                     (the origin, target/release/examples/bench_origin, must exist)
#
# Needs: wrk, curl, tinyproxy, squid, python3 (Debian: apt-get install wrk curl tinyproxy squid).
# The origin is benches/bench_origin.rs. Allowed requests go to the origin by address
# (127.0.0.1), so no proxy resolves names; blocked requests name facebook.com, which all three
# refuse by name (blocklab: the shipped ru rules at 2022-03-10 -> 302 to the RU blockpage;
# tinyproxy and squid: 403 from a domain filter of the same names).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${DUR:-5}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
CONNECT_BYTES=${CONNECT_BYTES:-1000000000}
BLOCKED_NAMES=(facebook.com fb.com twitter.com x.com instagram.com linkedin.com)

for tool in wrk curl tinyproxy squid python3; do
  command -v "$tool" >/dev/null || { echo "benches/proxy.sh: $tool is required" >&2; exit 1; }
done

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --example bench_origin --bin blocklab
BIN=${BIN:-target/release/blocklab}
ORIGIN_BIN=target/release/examples/bench_origin

. benches/lib.sh
bench_workdir bench
chmod 777 "$WORK"

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "benches/proxy.sh: nothing listens on port $1" >&2
  exit 1
}

# --- origin
"$ORIGIN_BIN" 127.0.0.1:0 >"$WORK/origin.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/origin.out" 2>/dev/null && break; sleep 0.1; done
ORIGIN=$(sed -n 's/.*addr=//p' "$WORK/origin.out")

# --- blocklab
BL_PORT=$(free_port)
cat >"$WORK/blocklab.toml" <<CONF
date = "2022-03-10"
[[clients]]
networks = ["127.0.0.0/8"]
jurisdiction = "ru"
[http]
listen = ["127.0.0.1:$BL_PORT"]
CONF
RUST_LOG=warn "$BIN" serve --config "$WORK/blocklab.toml" 2>"$WORK/blocklab.log" &
PIDS+=($!)

# --- tinyproxy
TP_PORT=$(free_port)
: >"$WORK/filter"
for n in "${BLOCKED_NAMES[@]}"; do echo "(^|\\.)${n//./\\.}\$" >>"$WORK/filter"; done
cat >"$WORK/tinyproxy.conf" <<CONF
User nobody
Group nogroup
Port $TP_PORT
Listen 127.0.0.1
Timeout 600
MaxClients 1024
LogLevel Critical
DisableViaHeader Yes
Filter "$WORK/filter"
FilterExtended On
FilterDefaultDeny No
CONF
tinyproxy -d -c "$WORK/tinyproxy.conf" >"$WORK/tinyproxy.log" 2>&1 &
PIDS+=($!)

# --- squid
SQ_PORT=$(free_port)
cat >"$WORK/squid.conf" <<CONF
http_port 127.0.0.1:$SQ_PORT
acl blocked dstdomain $(printf '.%s ' "${BLOCKED_NAMES[@]}")
http_access deny blocked
http_access allow all
cache deny all
cache_mem 0 MB
access_log none
cache_log $WORK/squid-cache.log
pid_filename $WORK/squid.pid
coredump_dir $WORK
via off
forwarded_for delete
shutdown_lifetime 0 seconds
CONF
squid -N -f "$WORK/squid.conf" >"$WORK/squid.out" 2>&1 &
PIDS+=($!)

wait_port "$BL_PORT"; wait_port "$TP_PORT"; wait_port "$SQ_PORT"

cat >"$WORK/req.lua" <<'LUA'
wrk.headers["Host"] = os.getenv("WRK_HOST")
if os.getenv("WRK_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
local url = os.getenv("WRK_URL")
request = function() return wrk.format("GET", url) end
LUA

# Sanity: every proxy passes the allowed URL and refuses the blocked one.
for p in "blocklab $BL_PORT" "tinyproxy $TP_PORT" "squid $SQ_PORT"; do
  set -- $p
  ok=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$2" "http://$ORIGIN/")
  blk=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$2" "http://facebook.com/")
  echo "# $1: allowed -> $ok, blocked -> $blk"
  [ "$ok" = 200 ] || { echo "benches/proxy.sh: $1 does not pass allowed requests" >&2; exit 1; }
done

# wrk_run PORT URL HOST CLOSE -> "req/s p99"
wrk_run() {
  local out
  out=$(WRK_URL=$2 WRK_HOST=$3 WRK_CLOSE=$4 wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency \
    -s "$WORK/req.lua" "http://127.0.0.1:$1" 2>&1)
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $p99"
}

printf '\nmachine: %s, %s CPUs; wrk -t%s -c%s -d%ss; %s\n\n' "$(uname -srm)" "$(nproc)" "$THREADS" "$CONNS" "$DUR" "$(date -u +%FT%TZ)"
printf '| proxy | allowed keep-alive req/s (p99) | allowed new conn req/s (p99) | blocked req/s (p99) | CONNECT MB/s |\n'
printf '|---|---|---|---|---|\n'
for p in "blocklab $BL_PORT" "tinyproxy $TP_PORT" "squid $SQ_PORT"; do
  set -- $p
  read -r ka ka99 < <(wrk_run "$2" "http://$ORIGIN/" "$ORIGIN" 0)
  read -r nc nc99 < <(wrk_run "$2" "http://$ORIGIN/" "$ORIGIN" 1)
  read -r bl bl99 < <(wrk_run "$2" "http://facebook.com/" "facebook.com" 0)
  bps=$(curl -s -p -x "http://127.0.0.1:$2" -o /dev/null -w '%{speed_download}' "http://$ORIGIN/bytes/$CONNECT_BYTES")
  mbs=$(python3 -c "print(f'{float($bps)/1e6:.0f}')")
  printf '| %s | %s (%s) | %s (%s) | %s (%s) | %s |\n' "$1" "$ka" "$ka99" "$nc" "$nc99" "$bl" "$bl99" "$mbs"
done
