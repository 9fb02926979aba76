#!/usr/bin/env bash
# Peak memory of `blocklab experiment` on one big capture (issue 14: a 2 GB capture in
# < 200 MB RSS). Builds the capture from the shared OpenVPN captures and the labelled corpus
# (benches/corpus/make-corpus.sh): round after round, every capture of the mix is copied with
# its timestamps moved to the round's start (the captures of one round overlap in time, merged
# in time order; rounds follow each other) and the middle two octets of every IPv4/IPv6
# address XORed with the round number, so each round's flows are new flows. Then runs
# `blocklab experiment` on it under `/usr/bin/time -v`, prints the peak RSS, and deletes the
# capture (and the run's output).
#
# Usage: benches/rss-big.sh [SIZE_MB]   (default 2200: > 2 GB)
# Env: PCAP_DIR (default ../shared/data/pcaps/openvpn), CORPUS (default target/corpus),
#      BIG (where the capture is written; default target/rss-big.pcap),
#      BLOCKLAB (default target/release/blocklab, built if missing), KEEP=1 keeps the capture.
# Needs: python3, /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-2200}
DIR=${PCAP_DIR:-../shared/data/pcaps/openvpn}
CORPUS=${CORPUS:-target/corpus}
BIG=${BIG:-target/rss-big.pcap}
BLOCKLAB=${BLOCKLAB:-target/release/blocklab}
[ -x /usr/bin/time ] || { echo "rss-big: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BLOCKLAB" ] || cargo build --release --quiet --bin blocklab
MIX=()
for f in "$DIR"/*.pcap "$CORPUS"/*.pcap; do [ -f "$f" ] && MIX+=("$f"); done
[ "${#MIX[@]}" -gt 0 ] || { echo "rss-big: no captures in $DIR or $CORPUS" >&2; exit 1; }
OUT=$(mktemp -d)
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -f "$BIG"; rm -rf "$OUT"; }
trap cleanup EXIT

python3 - "$BIG" "$SIZE_MB" "${MIX[@]}" <<'EOF'
import heapq, struct, sys
out, size_mb, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def frames(path):
    b = open(path, 'rb').read()
    magic = b[:4]
    if magic == b'\xd4\xc3\xb2\xa1': e, ns = '<', False
    elif magic == b'\xa1\xb2\xc3\xd4': e, ns = '>', False
    elif magic == b'\x4d\x3c\xb2\xa1': e, ns = '<', True
    elif magic == b'\xa1\xb2\x3c\x4d': e, ns = '>', True
    else: raise SystemExit(f"{path}: not a classic pcap")
    link = struct.unpack(e + 'I', b[20:24])[0]
    if link != 1: raise SystemExit(f"{path}: link type {link}, only Ethernet is rewritten")
    at, fr = 24, []
    while at + 16 <= len(b):
        s, f, incl, _ = struct.unpack(e + 'IIII', b[at:at + 16])
        fr.append((s * 1_000_000_000 + (f if ns else f * 1000), b[at + 16:at + 16 + incl]))
        at += 16 + incl
    t0 = fr[0][0] if fr else 0
    return [(t - t0, d) for t, d in fr]

caps = [frames(p) for p in files]
# One round: every capture from time 0, merged in time order.
rnd = list(heapq.merge(*caps, key=lambda x: x[0]))
span = max(t for t, _ in rnd) + 1_000_000_000
# Where the address octets to rewrite are (Ethernet, no VLAN tag): IPv4 or IPv6.
spots = []
for _, d in rnd:
    et = d[12:14]
    spots.append((28, 29, 32, 33) if et == b'\x08\x00' else (24, 25, 40, 41) if et == b'\x86\xdd' else ())
base = 1_700_000_000 * 1_000_000_000
target = size_mb * 1_000_000
written, packets, r = 24, 0, 0
with open(out, 'wb', buffering=1 << 22) as w:
    w.write(struct.pack('<IHHiIII', 0xa1b23c4d, 2, 4, 0, 0, 262144, 1))  # ns pcap, Ethernet
    while written < target:
        r += 1
        hi, lo = (r >> 8) & 0xff, r & 0xff
        chunk = []
        for (t, d), sp in zip(rnd, spots):
            if sp and len(d) > sp[3]:
                d = bytearray(d)
                d[sp[0]] ^= hi; d[sp[1]] ^= lo; d[sp[2]] ^= hi; d[sp[3]] ^= lo
            ts = base + (r - 1) * span + t
            chunk.append(struct.pack('<IIII', ts // 1_000_000_000, ts % 1_000_000_000, len(d), len(d)))
            chunk.append(bytes(d))
            written += 16 + len(d)
        packets += len(rnd)
        w.write(b''.join(chunk))
print(f"capture: {out}, {written / 1e9:.2f} GB, {packets} packets, {r} rounds of {len(files)} captures ({len(rnd)} packets, {span / 1e9:.0f} s each)")
EOF

printf 'file,server,label\n' >"$OUT/labels.csv"
for p in 1194; do printf '%s,*:%s,openvpn\n' "$(basename "$BIG")" "$p" >>"$OUT/labels.csv"; done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -v "$BLOCKLAB" experiment --quiet --labels "$OUT/labels.csv" --out "$OUT/out" "$BIG" >"$OUT/summary.txt" 2>"$OUT/time.txt" || {
  cat "$OUT/time.txt" >&2; exit 1; }
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep 'packets/s' "$OUT/summary.txt" | sed 's/^/blocklab: /'
echo "flows.jsonl: $(wc -l <"$OUT/out/flows.jsonl") lines, $(du -h "$OUT/out/flows.jsonl" | cut -f1)"
rss=$(awk -F': *' '/Maximum resident set size/ { print $2 }' "$OUT/time.txt")
wall=$(sed -n 's/.*Elapsed (wall clock).*: //p' "$OUT/time.txt")
echo "max RSS: $rss KiB ($((rss / 1024)) MiB), wall $wall (target: < 200 MB)"
