#!/usr/bin/env bash
# Measures blocklab with `blocklab probe` over the Citizen Lab RU test list, on loopback only:
#   - dnsmasq answers every name with 127.0.0.1 (the lab zone; used as resolver and control);
#   - a catch-all lab origin serves the same page on 127.0.0.1:80 and :443 (self-signed, so the
#     probe runs with --insecure); NO_ORIGIN=1 skips it (every origin is then unreachable);
#   - blocklab serves `ru` clients at DATE (default 2026-11-27) as their resolver (forwarding to
#     the lab zone) and forward proxy;
#   - the probe measures every URL through blocklab's resolver and proxy, with the lab zone as
#     control, and writes OUT.jsonl, OUT.md, OUT.svg. Addresses outside 127.0.0.0/8 (a DNS
#     blockpage's) are recorded, never contacted.
# Needs root for ports 80/443, dnsmasq, openssl and python3. Usage:
#   benches/probe_ru_list.sh [OUT]        (DATE=2022-03-10 NO_ORIGIN=1 ... to vary)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/probe-ru}
DATE=${DATE:-2026-11-27}
LIST=../shared/data/test-lists/ru.csv
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
for tool in dnsmasq openssl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
cargo build -q
BIN=target/debug/blocklab
mkdir -p "$(dirname "$OUT")"

dnsmasq -k --conf-file=/dev/null --port=5399 --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --pid-file= --user=root --address=/#/127.0.0.1 &
PIDS+=($!)

if [ -z "${NO_ORIGIN:-}" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
    -days 2 -subj "/CN=blocklab lab origin" 2>/dev/null
  cat >"$WORK/origin.py" <<'PY'
import http.server, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html><head><title>Lab origin page</title></head><body>" + b"lab " * 500 + b"</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
plain, tls = S(("127.0.0.1", 80), H), S(("127.0.0.1", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls.serve_forever()
PY
  python3 "$WORK/origin.py" "$WORK/cert.pem" "$WORK/key.pem" &
  PIDS+=($!)
fi

# The gateway; [hosts] pins every list host to the lab origin so that the proxy never
# resolves a name outside the lab.
{
  printf 'date = "%s"\n[[clients]]\nnetworks = ["127.0.0.1/32"]\njurisdiction = "ru"\n' "$DATE"
  printf '[dns]\nlisten = ["127.0.0.1:15399"]\nupstream = ["127.0.0.1:5399"]\n'
  printf '[http]\nlisten = ["127.0.0.1:18081"]\nhold_secs = 5\n[hosts]\n'
  python3 -c 'import csv,sys,urllib.parse
for h in sorted({urllib.parse.urlsplit(r["url"]).hostname for r in csv.DictReader(open(sys.argv[1]))}):
    print("\"%s\" = [\"127.0.0.1\"]" % h)' "$LIST"
} >"$WORK/blocklab.toml"
"$BIN" serve --config "$WORK/blocklab.toml" 2>"$WORK/gateway.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listener="http"' "$WORK/gateway.log" && break; sleep 0.2; done
grep -q 'listener="http"' "$WORK/gateway.log" || { cat "$WORK/gateway.log" >&2; exit 1; }

"$BIN" probe --resolver 127.0.0.1:15399 --control-resolver 127.0.0.1:5399 \
  --proxy http://127.0.0.1:18081 --insecure --allow-net 127.0.0.0/8 \
  --parallel 8 --input "$LIST" --out "$OUT.jsonl" -q
"$BIN" probe --report "$OUT.jsonl" >/dev/null
echo "report: $OUT.md"
