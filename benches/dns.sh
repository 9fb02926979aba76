#!/usr/bin/env bash
# DNS benchmark: blocklab vs unbound, same upstream, same block list, same query mix.
#
#   benches/dns.sh                      # both scenarios, 3 runs of 30 s each per server
#   DURATION=10 RUNS=1 benches/dns.sh   # a quick look
#   SCENARIOS=miss-flood benches/dns.sh # only the flood of one-off names
#
# Scenarios (SCENARIOS, default "cached miss-flood"):
#   cached      the mix below, every allowed name already cached: the cache-hit path;
#   miss-flood  every query a new random subdomain (r<run><server>-<hex>.flood.lab, answered
#               NXDOMAIN by the upstream), so every query is a cache miss that goes upstream
#               (rate limits off on both servers); meanwhile a second dnsperf asks for one
#               popular cached name (allowed-1.bench.lab) at POPULAR_QPS and its latency is
#               reported: a flood must neither slow nor evict it. Reports QPS, p50/p99/max
#               latency, lost queries and CPU per answer for both servers.
#
# What it does, all on loopback:
#   - dnsmasq serves ALLOWED names (allowed-N.bench.lab, TTL 1 h) as the shared upstream;
#   - blocklab (release build) runs with the shipped rules (full RU list: 86k names, 31k CIDRs)
#     at DATE, loopback mapped to `ru`, forwarding to dnsmasq;
#   - unbound runs with the same RU registry names as `local-zone: "<name>." always_nxdomain`
#     and forwards everything else to dnsmasq (num-threads = CPU cores, so-reuseport);
#   - the query file is 30% names from rules/ru/registry.lst (checked to be DNS-blocked in
#     blocklab at DATE) and 70% allowed names; both servers are warmed so allowed names are
#     cached; then dnsperf runs DURATION seconds per run, RUNS runs per server, alternating.
# It prints QPS, p50/p99 latency and server CPU time per query (user+system, from /proc) per
# run, the medians, and the ratios. CPU per query is the steadier number on a shared machine.
# Note: blocklab answers blocked names with the RU blockpage address (the registry rule's
# technique is dns-blockpage), unbound with NXDOMAIN; both answer locally, without upstream.
#
# Settings (environment): DURATION (s, default 30), RUNS (default 3), CLIENTS (dnsperf -c,
# default 8), THREADS (dnsperf -T, default 1), OUTSTANDING (dnsperf -q, default 200),
# BLOCKED (distinct blocked names, default 1000), ALLOWED (distinct allowed names, default
# 1000), DATE (default 2026-08-01), UDP_SOCKETS (blocklab `[dns] udp_sockets`, default: cores),
# NO_BUILD=1 to skip `cargo build --release`, BIN=path to benchmark another blocklab binary,
# SCENARIOS (above), FLOOD_NAMES (names per flood run, default DURATION x 60000; a run that
# asks more than that says so, as later names repeat), POPULAR_QPS (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-1}
OUTSTANDING=${OUTSTANDING:-200}
BLOCKED=${BLOCKED:-1000}
ALLOWED=${ALLOWED:-1000}
DATE=${DATE:-2026-08-01}
CORES=$(nproc)
UDP_SOCKETS=${UDP_SOCKETS:-$CORES}
SCENARIOS=${SCENARIOS:-cached miss-flood}
FLOOD_NAMES=${FLOOD_NAMES:-$((DURATION * 60000))}
POPULAR_QPS=${POPULAR_QPS:-200}

for tool in dnsperf unbound dnsmasq dig; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install dnsperf unbound dnsmasq-base bind9-dnsutils)" >&2; exit 1; }
done
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin blocklab
BIN=${BIN:-target/release/blocklab}

. benches/lib.sh
bench_workdir dns

# --- upstream: dnsmasq with ALLOWED names ----------------------------------------------------
UP=$(free_port)
for i in $(seq 1 "$ALLOWED"); do
  echo "198.51.$(( (i / 250) % 250 )).$(( i % 250 + 1 )) allowed-$i.bench.lab"
done >"$WORK/hosts"
dnsmasq --keep-in-foreground --conf-file=/dev/null --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --local=/lab/ --local-ttl=3600 --user=root --pid-file= \
  --cache-size=10000 --port="$UP" --addn-hosts="$WORK/hosts" 2>/dev/null &
PIDS+=($!)
wait_dns "$UP" allowed-1.bench.lab

# --- blocked names: registry names that blocklab blocks at DNS on DATE -----------------------
shuf -n $((BLOCKED * 2)) --random-source=<(yes) rules/ru/registry.lst >"$WORK/candidates"
xargs -a "$WORK/candidates" "$BIN" check --jurisdiction ru --at "$DATE" --json \
  | python3 -c '
import json, sys
n = int(sys.argv[1])
out = [o["target"] for o in map(json.loads, sys.stdin) if o.get("verdict") == "block" and any(t.startswith("dns-") for t in o.get("techniques", []))]
print("\n".join(out[:n]))' "$BLOCKED" >"$WORK/blocked"
NB=$(wc -l <"$WORK/blocked")
[ "$NB" -gt 0 ] || { echo "bench: no DNS-blocked names found at $DATE" >&2; exit 1; }

# --- query file: 3 blocked : 7 allowed --------------------------------------------------------
python3 - "$WORK/blocked" "$ALLOWED" >"$WORK/queries" <<'EOF'
import sys
blocked = open(sys.argv[1]).read().split()
allowed = ["allowed-%d.bench.lab" % i for i in range(1, int(sys.argv[2]) + 1)]
b = a = 0
for i in range(max(len(blocked), len(allowed)) * 10 // 7):
    if i % 10 < 3:
        print(blocked[b % len(blocked)], "A"); b += 1
    else:
        print(allowed[a % len(allowed)], "A"); a += 1
EOF

# --- blocklab --------------------------------------------------------------------------------
BL=$(free_port)
cat >"$WORK/blocklab.toml" <<EOF
date = "$DATE"
[[clients]]
networks = ["127.0.0.0/8"]
jurisdiction = "ru"
[dns]
listen = ["127.0.0.1:$BL"]
upstream = ["127.0.0.1:$UP"]
udp_sockets = $UDP_SOCKETS
# One dnsperf client measures throughput: the per-client rate limit would cap it.
rate_limit_qps = 0
EOF
RUST_LOG=warn "$BIN" serve --config "$WORK/blocklab.toml" 2>"$WORK/blocklab.log" &
BL_PID=$!
PIDS+=($BL_PID)
wait_dns "$BL" allowed-1.bench.lab

# --- unbound ---------------------------------------------------------------------------------
UB=$(free_port)
{
  cat <<EOF
server:
  interface: 127.0.0.1
  port: $UB
  num-threads: $CORES
  so-reuseport: yes
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$WORK"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  # No rate limits (the defaults are off too; said here so the comparison is explicit).
  ratelimit: 0
  ip-ratelimit: 0
  do-not-query-localhost: no
  module-config: "iterator"
  qname-minimisation: no
  local-zone: "lab." nodefault
  domain-insecure: "lab."
EOF
  sed 's/.*/  local-zone: "&." always_nxdomain/' rules/ru/registry.lst
  cat <<EOF
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$UP
EOF
} >"$WORK/unbound.conf"
unbound -d -c "$WORK/unbound.conf" 2>"$WORK/unbound.log" &
UB_PID=$!
PIDS+=($UB_PID)
wait_dns "$UB" allowed-1.bench.lab

# Sanity: same verdicts from both (blocked: blockpage vs NXDOMAIN; allowed: the upstream's).
FIRST_BLOCKED=$(head -1 "$WORK/blocked")
echo "blocked $FIRST_BLOCKED: blocklab $(dig @127.0.0.1 -p "$BL" "$FIRST_BLOCKED" +short) / unbound $(dig @127.0.0.1 -p "$UB" "$FIRST_BLOCKED" | grep -o 'status: [A-Z]*')"
echo "allowed allowed-7.bench.lab: blocklab $(dig @127.0.0.1 -p "$BL" allowed-7.bench.lab +short) / unbound $(dig @127.0.0.1 -p "$UB" allowed-7.bench.lab +short)"

# Warm both caches with every allowed name.
for port in "$BL" "$UB"; do
  dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -n 1 -q 50 >/dev/null 2>&1
done

cpu_ticks() { # pid -> "user system" clock ticks used so far
  awk '{print $14, $15}' "/proc/$1/stat"
}

stats() { # dnsperf-output cpu-file -> "qps p50_ms p99_ms max_ms lost cpu_us sys_us completed"
  python3 - "$1" "$2" <<'EOF'
import sys
lat, qps, lost, done = [], 0.0, "?", 0
for line in open(sys.argv[1]):
    if line.startswith("> "):
        try:
            lat.append(float(line.split()[-1]))
        except ValueError:  # "> T name A": a query that timed out
            pass
    elif "Queries per second:" in line:
        qps = float(line.split()[-1])
    elif "Queries lost:" in line:
        lost = line.split()[2]
    elif "Queries completed:" in line:
        done = int(line.split()[2])
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
user, system, hz = map(int, open(sys.argv[2]).read().split())
per = lambda t: t / hz * 1e6 / done if done else float("nan")
mx = lat[-1] * 1000 if lat else float("nan")
print("%.0f %.3f %.3f %.3f %s %.2f %.2f %d" % (qps, pct(0.50), pct(0.99), mx, lost, per(user + system), per(system), done))
EOF
}

run() { # name port pid queryfile -> stats; with POPULAR=1 the popular name is asked alongside
  local u0 s0 u1 s1 pop_pid=""
  if [ -n "${POPULAR:-}" ]; then
    echo "allowed-1.bench.lab A" >"$WORK/popular"
    dnsperf -s 127.0.0.1 -p "$2" -d "$WORK/popular" -l "$DURATION" -c 1 -q 10 -Q "$POPULAR_QPS" \
      -v >"$WORK/pop.$1" 2>&1 &
    pop_pid=$!
  fi
  read -r u0 s0 < <(cpu_ticks "$3")
  dnsperf -s 127.0.0.1 -p "$2" -d "$4" -l "$DURATION" -c "$CLIENTS" -T "$THREADS" \
    -q "$OUTSTANDING" -v >"$WORK/out.$1" 2>&1 || true
  read -r u1 s1 < <(cpu_ticks "$3")
  [ -z "$pop_pid" ] || wait "$pop_pid" || true
  echo "$((u1 - u0)) $((s1 - s0)) $(getconf CLK_TCK)" >"$WORK/cpu.$1"
  stats "$WORK/out.$1" "$WORK/cpu.$1"
}

flood_file() { # tag -> writes FLOOD_NAMES new random names under flood.lab to $WORK/flood.TAG
  python3 - "$1" "$FLOOD_NAMES" >"$WORK/flood.$1" <<'EOF'
import os, sys
tag, n = sys.argv[1], int(sys.argv[2])
w = sys.stdout.write
for i in range(n):
    w("r%s-%s.flood.lab A\n" % (tag, os.urandom(6).hex()))
EOF
}

medians() { # results-file label
  python3 - "$1" "$2" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
label = sys.argv[2]
med = {}
for s in ("blocklab", "unbound"):
    r = [x for x in rows if x[0] == s]
    med[s] = [statistics.median(float(x[i]) for x in r) for i in (1, 2, 3, 4, 5)]
    lost = sum(int(x[6]) for x in r if x[6].isdigit())
    print("%s median %-9s qps %.0f  p50 %.3f ms  p99 %.3f ms  max %.3f ms  cpu %.2f us/answer  lost %d (all runs)" % (label, s, *med[s], lost))
print("%s ratio blocklab/unbound QPS: %.2f" % (label, med["blocklab"][0] / med["unbound"][0]))
print("%s ratio unbound/blocklab CPU per answer: %.2f (above 1: blocklab spends less CPU per answer)" % (label, med["unbound"][4] / med["blocklab"][4]))
EOF
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
HEAD='%-9s %4s %10s %9s %9s %9s %8s %12s %12s\n'
for scenario in $SCENARIOS; do
  : >"$WORK/results"
  case "$scenario" in
    cached)
      echo "== cached: $NB blocked + $ALLOWED allowed names, 30/70, all cached; dnsperf -c $CLIENTS -T $THREADS -q $OUTSTANDING -l $DURATION; blocklab udp_sockets=$UDP_SOCKETS" ;;
    miss-flood)
      echo "== miss-flood: every query a new random name (up to $FLOOD_NAMES per run), upstream NXDOMAIN, rate limits off; the popular cached name at $POPULAR_QPS qps alongside; dnsperf -c $CLIENTS -T $THREADS -q $OUTSTANDING -l $DURATION" ;;
    *) echo "bench: unknown scenario $scenario" >&2; exit 1 ;;
  esac
  printf "$HEAD" server run qps p50_ms p99_ms max_ms lost cpu_us/ans sys_us/ans
  for r in $(seq 1 "$RUNS"); do
    for s in blocklab unbound; do
      port=$BL pid=$BL_PID
      [ "$s" = unbound ] && port=$UB pid=$UB_PID
      if [ "$scenario" = cached ]; then
        read -r qps p50 p99 max lost cpu sys done < <(run "$s" "$port" "$pid" "$WORK/queries")
      else
        flood_file "$r$s"
        read -r qps p50 p99 max lost cpu sys done < <(POPULAR=1 run "$s" "$port" "$pid" "$WORK/flood.$r$s")
        rm -f "$WORK/flood.$r$s"
      fi
      printf "$HEAD" "$s" "$r" "$qps" "$p50" "$p99" "$max" "$lost" "$cpu" "$sys"
      echo "$s $qps $p50 $p99 $max $cpu $lost" >>"$WORK/results"
      if [ "$scenario" = miss-flood ]; then
        [ "$done" -le "$FLOOD_NAMES" ] || echo "   note: $done answers > $FLOOD_NAMES names: the file wrapped and later names were cache hits (raise FLOOD_NAMES)"
        echo "0 0 $(getconf CLK_TCK)" >"$WORK/cpu.none"
        read -r _ pp50 pp99 pmax plost _ _ pdone < <(stats "$WORK/pop.$s" "$WORK/cpu.none")
        echo "   popular cached name during the flood ($s): $pdone answers, p50 $pp50 ms, p99 $pp99 ms, max $pmax ms, lost $plost"
      fi
    done
  done
  medians "$WORK/results" "$scenario"
done
