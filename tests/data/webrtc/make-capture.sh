#!/usr/bin/env bash
# Records pion-datachannel.pcap: two pion/webrtc peers (pionpair.go) in one process open a
# data channel over loopback (ICE host candidates on lo, STUN checks, then the DTLS 1.2
# handshake pion makes by default, then SCTP in DTLS) while tcpdump records UDP on lo.
# Needs root (tcpdump) and Debian's Go and pion packages, which it installs; builds offline
# against them in GOPATH mode (Debian ships pion/webrtc v3.1.56 and pion/dtls v2.2.6).
# Usage: sudo tests/data/webrtc/make-capture.sh [OUT.pcap]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/pion-datachannel.pcap}"
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/pion/webrtc ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-pion-webrtc.v3-dev
fi
work="$(mktemp -d)"
trap 'kill "${dump:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
# GOPATH mode: every package of /usr/share/gocode, and each module also under the import
# path its go.mod names (github.com/pion/webrtc/v3 and the like).
src="$work/src"
mkdir -p "$src"
cp -rs /usr/share/gocode/src/. "$src/"
for m in $(find /usr/share/gocode/src/github.com/pion -maxdepth 3 -name go.mod); do
  mod="$(awk '/^module/{print $2}' "$m")"
  [ -e "$src/$mod" ] || { mkdir -p "$(dirname "$src/$mod")"; cp -rs "$(dirname "$m")/." "$src/$mod/"; }
done
mkdir -p "$src/pionpair" && cp "$here/pionpair.go" "$src/pionpair/main.go"
(cd "$src/pionpair" && GO111MODULE=off GOPATH="$work" GOPROXY=off GOFLAGS= go build -o "$work/pionpair" .)
tcpdump -i lo -U -w "$out" udp >/dev/null 2>&1 &
dump=$!
sleep 1
"$work/pionpair"
sleep 1
kill "$dump"; wait "$dump" 2>/dev/null || true
echo "wrote $out"
