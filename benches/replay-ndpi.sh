#!/usr/bin/env bash
# `blocklab replay` (the in-path engine over captures) vs nDPI's `ndpiReader` (Debian package
# libndpi-bin) on the same captures in the same run: packets/s, wall time of the whole
# process, interleaved runs. Issue 11's target: replay >= 2x ndpiReader's packets/s.
#
# Usage: benches/replay-ndpi.sh [PCAP_DIR] [MIN_PACKETS]
#   PCAP_DIR     directory of captures (every *.pcap in it; default ../shared/data/pcaps/openvpn)
#   MIN_PACKETS  the captures are repeated (each repetition is one more file argument, as
#                compare-ndpi.sh does) until at least this many packets (default 500000)
# Env: BLOCKLAB=path to the binary (default target/release/blocklab, built if missing);
#      RUNS=timed runs of each tool, interleaved (default 5); AT=replay date (default
#      2023-09-01, RU's VPN rules in force); J=jurisdiction (default ru).
# blocklab runs the shipped rules with `--vpn enforce` (every detector on every flow, the VPN
# rules acted on) and writes verdicts.jsonl and passed.pcap, as a user's run does; ndpiReader
# runs with its defaults (all protocols, guessing on), as compare-ndpi.sh does.
# Needs: ndpiReader, capinfos (wireshark-common) or tshark, awk.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
DIR=${1:-../shared/data/pcaps/openvpn}
MIN=${2:-500000}
RUNS=${RUNS:-5}
AT=${AT:-2023-09-01}
J=${J:-ru}
for tool in ndpiReader capinfos awk; do
  command -v "$tool" >/dev/null || { echo "replay-ndpi: $tool is missing (apt-get install libndpi-bin wireshark-common gawk)" >&2; exit 1; }
done
BLOCKLAB=${BLOCKLAB:-target/release/blocklab}
[ -x "$BLOCKLAB" ] || cargo build --release --quiet --bin blocklab
bench_workdir replay-ndpi
shopt -s nullglob
FILES=("$DIR"/*.pcap)
[ ${#FILES[@]} -gt 0 ] || { echo "replay-ndpi: no *.pcap in $DIR" >&2; exit 1; }
per_round=0
for f in "${FILES[@]}"; do
  n=$(capinfos -M -c -T "$f" | awk -F'\t' 'NR == 2 { print $2 }')
  per_round=$((per_round + n))
done
rounds=$(( (MIN + per_round - 1) / per_round ))
args=(); : >"$WORK/playlist"
for _ in $(seq "$rounds"); do
  for f in "${FILES[@]}"; do args+=("$f"); echo "$f" >>"$WORK/playlist"; done
done

now() { date +%s.%N; }
echo "machine: $(nproc) cores, $(awk '/model name/{$1=$2=$3="";print;exit}' /proc/cpuinfo | sed 's/^ *//')"
echo "blocklab: $("$BLOCKLAB" --version 2>/dev/null || echo "$BLOCKLAB"); ndpiReader: $(ndpiReader -h 2>&1 | awk '/Welcome to nDPI/{print $4; exit}')"
echo "captures: ${#FILES[@]} files in $DIR, $per_round packets, x $rounds = $((per_round * rounds)) packets"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

bl_times=(); nd_times=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/bl" # a fresh output directory each run (truncating the last run's files costs)
  t0=$(now)
  /usr/bin/time -f %M -o "$WORK/bl-rss" "$BLOCKLAB" replay --quiet --jurisdiction "$J" --at "$AT" \
    --vpn enforce --out "$WORK/bl" "${args[@]}" >"$WORK/bl.txt"
  t1=$(now)
  /usr/bin/time -f %M -o "$WORK/nd-rss" ndpiReader -i "$WORK/playlist" >"$WORK/nd.txt" 2>&1
  t2=$(now)
  bl=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  nd=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')
  bl_times+=("$bl"); nd_times+=("$nd")
  echo "run $i: blocklab replay $bl s, ndpiReader $nd s (load $(cut -d' ' -f1 /proc/loadavg))"
done
bl_packets=$(awk '/^replayed/ { for (i = 1; i <= NF; i++) if ($(i+1) == "packets") { print $i; exit } }' "$WORK/bl.txt")
nd_packets=$(awk '/IP packets:/ { print $(NF-2); exit }' "$WORK/nd.txt")
awk -v p="$((per_round * rounds))" -v bls="${bl_times[*]}" -v nds="${nd_times[*]}" 'BEGIN {
  nb = split(bls, b, " "); split(nds, n, " ")
  bmin = bmax = b[1]; nmin = nmax = n[1]; rmin = rmax = n[1] / b[1]
  for (i = 1; i <= nb; i++) {
    if (b[i] < bmin) bmin = b[i]; if (b[i] > bmax) bmax = b[i]
    if (n[i] < nmin) nmin = n[i]; if (n[i] > nmax) nmax = n[i]
    r = n[i] / b[i]; if (r < rmin) rmin = r; if (r > rmax) rmax = r
  }
  printf "\n%d frames, %d interleaved runs, wall time of the whole process:\n", p, nb
  printf "  %-44s %6.2f-%6.2f s  %9.0f-%9.0f packets/s\n", "blocklab replay (ru, all detectors, enforce)", bmin, bmax, p / bmax, p / bmin
  printf "  %-44s %6.2f-%6.2f s  %9.0f-%9.0f packets/s\n", "ndpiReader (all protocols)", nmin, nmax, p / nmax, p / nmin
  printf "  ratio blocklab/ndpiReader, per run: %.2f-%.2fx (target >= 2x)\n", rmin, rmax
}'
echo "  frames read: ndpiReader ${nd_packets:-?}; IP packets through the engine: blocklab $bl_packets"
echo "  max RSS (last run): blocklab $(cat "$WORK/bl-rss") KiB, ndpiReader $(cat "$WORK/nd-rss") KiB"
echo "  blocklab summary (last run): $(sed -n 1p "$WORK/bl.txt")"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
