#!/usr/bin/env bash
# Compares `blocklab experiment` with nDPI's `ndpiReader` (Debian package libndpi-bin) on the
# same captures in the same run: packets/s for both, and which flows each labels as a VPN.
#
# Usage: benches/compare-ndpi.sh [PCAP_DIR] [REPEAT]
#   PCAP_DIR  directory with the shared OpenVPN captures (default: ../shared/data/pcaps/openvpn)
#   REPEAT    how many times each capture is fed, to time more than start-up (default: 50)
# Env: CORPUS=directory of the labelled corpus (benches/corpus/make-corpus.sh; default
#      target/corpus): its captures join the throughput mix (mixed protocols, not only OpenVPN).
# Env: BLOCKLAB=path to the binary (default: target/release/blocklab, built if missing);
#      RUNS=timed runs of each tool, interleaved, best kept (default 5); each run's wall
#      times are printed with the load average, and the best CPU time (user+sys) of each.
# Ground truth: flows on port 1194 are OpenVPN, everything else and all of non-vpn.pcap not.
# Needs: ndpiReader, jq, awk. Writes into a temporary directory, printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-../shared/data/pcaps/openvpn}
REPEAT=${2:-50}
for tool in ndpiReader jq awk; do
  command -v "$tool" >/dev/null || { echo "compare-ndpi: $tool is missing (apt-get install libndpi-bin jq gawk)" >&2; exit 1; }
done
BLOCKLAB=${BLOCKLAB:-target/release/blocklab}
[ -x "$BLOCKLAB" ] || cargo build --release --quiet --bin blocklab
FILES=(non-vpn.pcap tcp-tls.pcap tcp.pcap udp-tls.pcap udp.pcap)
CORPUS=${CORPUS:-target/corpus}
MIX=("${FILES[@]/#/$DIR/}")
[ -d "$CORPUS" ] && for f in "$CORPUS"/*.pcap; do MIX+=("$f"); done
OUT=$(mktemp -d)
{
  echo "file,server,label"
  for f in udp.pcap tcp.pcap udp-tls.pcap tcp-tls.pcap; do echo "$f,*:1194,openvpn"; done
  echo "non-vpn.pcap,none"
} >"$OUT/labels.csv"

now() { date +%s.%N; }
echo "machine: $(nproc) cores, $(awk '/model name/{$1=$2=$3="";print;exit}' /proc/cpuinfo | sed 's/^ *//')"
echo "blocklab: $("$BLOCKLAB" --version 2>/dev/null || echo "$BLOCKLAB"); ndpiReader: $(ndpiReader -h 2>&1 | awk '/Welcome to nDPI/{print $4; exit}')"

# --- throughput: every capture REPEAT times, one process each --------------------------
args=(); : >"$OUT/playlist"
for _ in $(seq "$REPEAT"); do
  for f in "${MIX[@]}"; do args+=("$f"); echo "$f" >>"$OUT/playlist"; done
done
# Interleaved runs, best of RUNS each: the machine may be shared.
RUNS=${RUNS:-5}
bl_best=999999; nd_best=999999; bl_cpu=999999; nd_cpu=999999
for _ in $(seq "$RUNS"); do
  t0=$(now); /usr/bin/time -f '%M %U %S' -o "$OUT/bl-rss" "$BLOCKLAB" experiment --quiet --out "$OUT/bl-timing" "${args[@]}" >"$OUT/bl-timing.txt"; t1=$(now)
  t2=$(now); /usr/bin/time -f '%M %U %S' -o "$OUT/nd-rss" ndpiReader -i "$OUT/playlist" >"$OUT/ndpi-timing.txt" 2>&1; t3=$(now)
  bl_best=$(awk -v a="$t0" -v b="$t1" -v c="$bl_best" 'BEGIN { d = b - a; print (d < c ? d : c) }')
  nd_best=$(awk -v a="$t2" -v b="$t3" -v c="$nd_best" 'BEGIN { d = b - a; print (d < c ? d : c) }')
  # CPU time (user + system) of each process: less sensitive to a shared machine's load.
  bl_cpu=$(awk -v c="$bl_cpu" '{ d = $2 + $3; print (d < c ? d : c) }' "$OUT/bl-rss")
  nd_cpu=$(awk -v c="$nd_cpu" '{ d = $2 + $3; print (d < c ? d : c) }' "$OUT/nd-rss")
  echo "  run: blocklab $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') s wall, ndpiReader $(awk -v a="$t2" -v b="$t3" 'BEGIN { printf "%.3f", b - a }') s wall (load $(cut -d' ' -f1 /proc/loadavg))"
done
bl_total=$(jq .packets "$OUT/bl-timing/report.json")
awk -v p="$bl_total" -v bl="$bl_best" -v nd="$nd_best" -v r="$REPEAT" -v runs="$RUNS" -v blc="$bl_cpu" -v ndc="$nd_cpu" 'BEGIN {
  printf "\nthroughput over %d packets (%d x the mixed captures), best of %d runs, wall time of the whole process:\n", p, r, runs
  printf "  %-36s %8.3f s  %10.0f packets/s\n", "blocklab experiment (all detectors)", bl, p / bl
  printf "  %-36s %8.3f s  %10.0f packets/s\n", "ndpiReader (all protocols)", nd, p / nd
  printf "  ratio blocklab/ndpiReader: %.2fx\n", nd / bl
  printf "  CPU time (user+sys, best of %d): blocklab %.3f s, ndpiReader %.3f s: %.2fx\n", runs, blc, ndc, (blc > 0 ? ndc / blc : 0)
}'
echo "  max RSS (last run): blocklab $(cut -d' ' -f1 "$OUT/bl-rss") KiB, ndpiReader $(cut -d' ' -f1 "$OUT/nd-rss") KiB"
echo "  (last run, own figures: blocklab $(awk '/packets\/s/{print $(NF-1), $NF; exit}' "$OUT/bl-timing.txt"); ndpiReader: $(awk -F': *' '/nDPI throughput/{print $2; exit}' "$OUT/ndpi-timing.txt"), setup $(awk -F': *' '/Setup Time/{print $2; exit}' "$OUT/ndpi-timing.txt"))"

# --- which flows each labels as VPN -------------------------------------------------------
"$BLOCKLAB" experiment --quiet --labels "$OUT/labels.csv" --out "$OUT/bl" "${FILES[@]/#/$DIR/}" >"$OUT/bl.txt"
key() { awk -F'\t' '{ a=$2; b=$3; if (a > b) { t=a; a=b; b=t }; print $1 "\t" a "|" b "\t" $4 }'; }
jq -r '[.file, .client, .server, (.verdict // "-")] | @tsv' "$OUT/bl/flows.jsonl" | key | sort >"$OUT/bl.tsv"
jq -r 'select(.label != "none") | [.file, .client, .server, .label] | @tsv' "$OUT/bl/flows.jsonl" | key | sort >"$OUT/truth.tsv"
: >"$OUT/ndpi-guess.tsv"; : >"$OUT/ndpi-dpi.tsv"
for f in "${FILES[@]}"; do
  for mode in guess dpi; do
    flag=(); [ "$mode" = dpi ] && flag=(-d)
    ndpiReader "${flag[@]}" -q -i "$DIR/$f" -C "$OUT/$f.$mode.csv" >/dev/null 2>&1
    # CSV columns: 6 src_ip, 7 src_port, 8 dst_ip, 9 dst_port, 11 ndpi_proto.
    awk -F, -v f="$f" 'NR > 1 && $11 ~ /OpenVPN|WireGuard|IPsec|IPSec|PPTP|IKE/ {
      print f "\t" $6 ":" $7 "\t" $8 ":" $9 "\t" $11 }' "$OUT/$f.$mode.csv" | key >>"$OUT/ndpi-$mode.tsv"
  done
done
sort -o "$OUT/ndpi-guess.tsv" "$OUT/ndpi-guess.tsv"; sort -o "$OUT/ndpi-dpi.tsv" "$OUT/ndpi-dpi.tsv"
echo
echo "flows labelled VPN by either tool or by the ground truth:"
printf "  %-13s %-44s %-9s %-16s %-16s %s\n" file flow truth blocklab "ndpi(guess)" "ndpi(DPI only, -d)"
cat "$OUT/truth.tsv" "$OUT/ndpi-guess.tsv" "$OUT/ndpi-dpi.tsv" <(awk -F'\t' '$3 != "-"' "$OUT/bl.tsv") | cut -f1,2 | sort -u |
while IFS=$'\t' read -r f k; do
  look() { awk -F'\t' -v f="$f" -v k="$k" '$1 == f && $2 == k { print $3; found=1; exit } END { if (!found) print "-" }' "$1"; }
  printf "  %-13s %-44s %-9s %-16s %-16s %s\n" "$f" "${k/|/ <> }" "$(look "$OUT/truth.tsv" | sed 's/^-$/none/')" \
    "$(look "$OUT/bl.tsv")" "$(look "$OUT/ndpi-guess.tsv")" "$(look "$OUT/ndpi-dpi.tsv")"
done
echo
echo "blocklab summary:"; sed 's/^/  /' "$OUT/bl.txt"
echo "outputs in $OUT"
