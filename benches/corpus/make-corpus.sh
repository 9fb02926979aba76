#!/usr/bin/env bash
# Builds a labelled corpus of VPN, bypass and ordinary traffic from real implementations run in
# two network namespaces this script creates (client 10.77.0.2 <-> server 10.77.0.1 over a veth
# pair) and always removes. Nothing leaves the namespaces. Each scenario is recorded with
# tcpdump on the server side into OUT/<scenario>.pcap; OUT/labels.csv gives each file's label
# (`file,label`). Standard ports and moved ports are both recorded (the `-moved` files).
#
# Usage: benches/corpus/make-corpus.sh [OUT]   (default: target/corpus; needs root)
# Needs (Debian): iproute2 tcpdump openvpn openssl openssh-server openssh-client stunnel4
#   shadowsocks-libev tor curl bind9-dnsutils dnsmasq-base python3.
# Not covered here (see README "VPN and bypass detection"): strongswan (IKE), kernel WireGuard
# (no wireguard module in this lab; the boringtun flows are in the unit tests), obfs4.
set -uo pipefail
OUT=$(realpath -m "${1:-target/corpus}")
mkdir -p "$OUT"
WORK=$(mktemp -d)
TAG=$$
C=blc$TAG
S=bls$TAG
PIDS=()
MAIN=$BASHPID

cleanup() {
  [ "$BASHPID" = "$MAIN" ] || return 0
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns pids "$C" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns pids "$S" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del "$C" 2>/dev/null
  ip netns del "$S" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for tool in ip tcpdump openvpn openssl sshd ssh stunnel4 ss-server ss-local tor curl dig dnsmasq python3; do
  command -v "$tool" >/dev/null || { echo "make-corpus: $tool is missing" >&2; exit 1; }
done

ip netns add "$C" && ip netns add "$S" || exit 1
ip link add vc$TAG type veth peer name vs$TAG
ip link set vc$TAG netns "$C"
ip link set vs$TAG netns "$S"
ip -n "$C" addr add 10.77.0.2/24 dev vc$TAG
ip -n "$S" addr add 10.77.0.1/24 dev vs$TAG
for n in "$C" "$S"; do ip -n "$n" link set lo up; done
ip -n "$C" link set vc$TAG up
ip -n "$S" link set vs$TAG up
inc() { ip netns exec "$C" "$@"; }
ins() { ip netns exec "$S" "$@"; }

# Background commands in a namespace (no shell function in the background job).
bgs() { ip netns exec "$S" "$@" >>"$OUT/make-corpus.log" 2>&1 & PIDS+=($!); }
bgc() { ip netns exec "$C" "$@" >>"$OUT/make-corpus.log" 2>&1 & PIDS+=($!); }
: >"$OUT/make-corpus.log"
echo "file,label" >"$OUT/labels.csv.tmp"

# record NAME LABEL SECONDS CMD...: tcpdump while CMD (a function) runs.
record() {
  local name=$1 label=$2 secs=$3; shift 3
  rm -f "$OUT/$name.pcap"
  ip netns exec "$S" tcpdump -i vs$TAG -U -s 0 -w "$OUT/$name.pcap" 'tcp or udp' >>"$OUT/make-corpus.log" 2>&1 &
  local td=$!
  sleep 0.7
  "$@" "$secs" >>"$OUT/make-corpus.log" 2>&1
  sleep 0.5
  kill -INT "$td" 2>/dev/null; wait "$td" 2>/dev/null
  local n
  n=$(tcpdump -r "$OUT/$name.pcap" 2>/dev/null | wc -l)
  echo "$name: $n packets ($label)"
  [ "$n" -gt 0 ] && echo "$name.pcap,$label" >>"$OUT/labels.csv.tmp"
}

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  ip netns pids "$C" | xargs -r kill 2>/dev/null
  ip netns pids "$S" | grep -v "^$" | while read -r p; do
    # keep nothing but tcpdump (stopped by record)
    [ "$(cat /proc/$p/comm 2>/dev/null)" = tcpdump ] || kill "$p" 2>/dev/null
  done
  PIDS=()
  sleep 0.3
}

# --- PKI and keys -----------------------------------------------------------------------
cd "$WORK" || exit 1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
  -out ca.crt -days 2 -subj /CN=corpus-ca 2>/dev/null
for n in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key \
    -out $n.csr -subj /CN=$n 2>/dev/null
  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 2 2>/dev/null
done
openvpn --genkey secret static.key
openvpn --genkey secret ta.key
openvpn --genkey tls-crypt-v2-server v2s.key
openvpn --tls-crypt-v2 v2s.key --genkey tls-crypt-v2-client v2c.key

# --- OpenVPN ------------------------------------------------------------------------------
# ovpn PROTO PORT MODE SECONDS (MODE: static, tls-auth, tls-crypt, tls-crypt-v2, tls)
ovpn_run() {
  local proto=$1 port=$2 mode=$3 secs=$4 sa=() ca=()
  case $mode in
    static)
      sa=(--secret static.key 0 --cipher AES-256-CBC --auth SHA256)
      ca=(--secret static.key 1 --cipher AES-256-CBC --auth SHA256) ;;
    *)
      sa=(--tls-server --ca ca.crt --cert server.crt --key server.key --dh none)
      ca=(--tls-client --ca ca.crt --cert client.crt --key client.key)
      case $mode in
        tls-auth) sa+=(--tls-auth ta.key 0); ca+=(--tls-auth ta.key 1) ;;
        tls-crypt) sa+=(--tls-crypt ta.key); ca+=(--tls-crypt ta.key) ;;
        tls-crypt-v2) sa+=(--tls-crypt-v2 v2s.key); ca+=(--tls-crypt-v2 v2c.key) ;;
      esac ;;
  esac
  local sp=$proto cp=$proto
  [ "$proto" = tcp ] && { sp=tcp-server; cp=tcp-client; }
  bgs openvpn --dev null --proto "$sp" --local 10.77.0.1 --lport "$port" --ping 1 --verb 1 "${sa[@]}"
  sleep 0.5
  bgc openvpn --dev null --proto "$cp" --remote 10.77.0.1 "$port" --nobind --ping 1 --verb 1 "${ca[@]}"
  sleep "$secs"
  stop_all
}
for spec in "udp 1194 static" "tcp 1194 static" "udp 1194 tls-auth" "tcp 1194 tls-auth" \
  "udp 1194 tls-crypt" "tcp 443 tls-crypt" "udp 443 tls-crypt-v2" "tcp 1194 tls-crypt-v2" \
  "udp 5353 tls" "tcp 8443 tls-auth" "udp 443 static"; do
  set -- $spec
  moved=""; [ "$2" != 1194 ] && moved="-moved"
  record "openvpn-$1-$3-$2$moved" openvpn 6 ovpn_run "$1" "$2" "$3"
done

# --- SSH tunnel (-D) ------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f hostkey
ssh-keygen -q -t ed25519 -N '' -f userkey
mkdir -p /run/sshd
cat >sshd_config <<EOF
HostKey $WORK/hostkey
AuthorizedKeysFile $WORK/userkey.pub
PermitRootLogin yes
StrictModes no
AllowTcpForwarding yes
PidFile none
EOF
mkdir -p www && echo "corpus page" >www/index.html
ssh_run() {
  local port=$1 secs=$2
  bgs /usr/sbin/sshd -D -e -f sshd_config -p "$port" -o ListenAddress=10.77.0.1
  bgs python3 -m http.server -d www -b 127.0.0.1 8080
  sleep 1
  bgc ssh -i userkey -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -N \
    -D 127.0.0.1:1080 -p "$port" root@10.77.0.1
  sleep 2
  for _ in 1 2 3; do timeout 10 ip netns exec "$C" curl -m 8 -s --socks5-hostname 127.0.0.1:1080 http://127.0.0.1:8080/ >/dev/null; done
  sleep "$secs"
  stop_all
}
record ssh-tunnel-22 ssh 2 ssh_run 22
record ssh-tunnel-443-moved ssh 2 ssh_run 443

# --- TLS-in-TLS (stunnel carrying curl's HTTPS) ----------------------------------------------
stunnel_run() {
  local port=$1 secs=$2
  cat >st-server.conf <<EOF
foreground = yes
pid =
[s]
accept = 10.77.0.1:$port
connect = 127.0.0.1:4433
cert = $WORK/server.crt
key = $WORK/server.key
EOF
  cat >st-client.conf <<EOF
foreground = yes
pid =
[c]
client = yes
accept = 127.0.0.1:9443
connect = 10.77.0.1:$port
EOF
  bgs openssl s_server -quiet -accept 127.0.0.1:4433 -cert server.crt -key server.key -www
  bgs stunnel4 st-server.conf
  bgc stunnel4 st-client.conf
  sleep 1.5
  for _ in 1 2 3 4 5; do timeout 10 ip netns exec "$C" curl -m 8 -sk https://127.0.0.1:9443/ >/dev/null; done
  for _ in 1 2 3; do timeout 10 ip netns exec "$C" curl -m 8 -sk --tlsv1.2 --tls-max 1.2 https://127.0.0.1:9443/ >/dev/null; done
  sleep "$secs"
  stop_all
}
record tls-in-tls-stunnel-443 tls-in-tls 1 stunnel_run 443
record tls-in-tls-stunnel-8444-moved tls-in-tls 1 stunnel_run 8444

# --- Shadowsocks (fully encrypted) -----------------------------------------------------------
ss_run() {
  local port=$1 secs=$2
  bgs ss-server -s 10.77.0.1 -p "$port" -k corpus-pass -m chacha20-ietf-poly1305
  bgs python3 -m http.server -d www -b 127.0.0.1 8080
  bgc ss-local -s 10.77.0.1 -p "$port" -l 1080 -b 127.0.0.1 -k corpus-pass -m chacha20-ietf-poly1305
  sleep 1.5
  for _ in 1 2 3 4 5; do timeout 10 ip netns exec "$C" curl -m 8 -s --socks5-hostname 127.0.0.1:1080 http://127.0.0.1:8080/ >/dev/null; done
  sleep "$secs"
  stop_all
}
record shadowsocks-8388 shadowsocks 1 ss_run 8388
record shadowsocks-443-moved shadowsocks 1 ss_run 443

# --- Tor: a client using a private bridge (no other network exists) -------------------------
tor_run() {
  local port=$1 secs=$2
  mkdir -p tor-b tor-c && chmod 700 tor-b tor-c
  cat >torrc-b <<EOF
DataDirectory $WORK/tor-b
ORPort 10.77.0.1:$port
BridgeRelay 1
AssumeReachable 1
PublishServerDescriptor 0
ExitRelay 0
SocksPort 0
Log notice file $WORK/tor-b.log
EOF
  cat >torrc-c <<EOF
DataDirectory $WORK/tor-c
UseBridges 1
Bridge 10.77.0.1:$port
SocksPort 0
Log notice file $WORK/tor-c.log
EOF
  bgs tor -f torrc-b
  sleep 4
  bgc tor -f torrc-c
  sleep "$secs"
  stop_all
}
record tor-bridge-9001 tor 15 tor_run 9001
record tor-bridge-443-moved tor 15 tor_run 443

# --- Negatives: HTTPS, HTTP and DNS ------------------------------------------------------------
neg_run() {
  local secs=$1
  bgs openssl s_server -quiet -accept 10.77.0.1:443 -cert server.crt -key server.key -www
  bgs python3 -m http.server -d www -b 10.77.0.1 80
  printf 'address=/example.org/10.77.0.1\n' >dnsmasq.conf
  bgs dnsmasq -k -C dnsmasq.conf --listen-address=10.77.0.1 --bind-interfaces --no-resolv
  sleep 1.5
  for _ in 1 2 3 4 5; do
    timeout 10 ip netns exec "$C" curl -m 8 -sk https://10.77.0.1/ >/dev/null
    timeout 10 ip netns exec "$C" curl -m 8 -sk --tlsv1.2 --tls-max 1.2 https://10.77.0.1/ >/dev/null
    timeout 10 ip netns exec "$C" curl -m 8 -s http://10.77.0.1/ >/dev/null
    timeout 5 ip netns exec "$C" dig +short +tries=1 +time=1 @10.77.0.1 example.org >/dev/null
  done
  sleep "$secs"
  stop_all
}
record negatives-https-http-dns none 1 neg_run

mv "$OUT/labels.csv.tmp" "$OUT/labels.csv"
echo "corpus in $OUT ($(($(wc -l <"$OUT/labels.csv") - 1)) captures)"
