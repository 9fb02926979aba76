#!/usr/bin/env bash
# Records the OpenVPN and non-VPN captures in tests/data/captures/ from real runs of our own
# traffic, so that tests and CI read small committed pcaps and never need to run OpenVPN.
#
#   sudo tests/data/make-captures.sh [OUT_DIR]     (default: tests/data/captures)
#
# Two network namespaces joined by a veth pair (server 10.3.0.222, client 10.3.0.40); tcpdump
# on the client side records:
#   udp-static.pcap, tcp-static.pcap       OpenVPN static key (--secret), UDP and TCP
#   udp-tls.pcap, tcp-tls.pcap             OpenVPN TLS mode (test PKI), no tls-auth
#   udp-tls-auth.pcap, tcp-tls-auth.pcap   OpenVPN TLS mode with --tls-auth
#   non-vpn.pcap                           dig against dnsmasq, curl against a local HTTP
#                                          server and a local HTTPS server (openssl s_server)
# Every OpenVPN run is a handshake, then 10 UDP datagrams through the tunnel, then an orderly exit; the
# client's UDP port is fixed at 44020 (TCP: 44021) so the flows are easy to name in tests.
# Nothing leaves the namespaces; they, the processes and the temporary files are removed on
# exit, also on failure or Ctrl-C. Needs root and the Debian packages openvpn, openssl,
# tcpdump, iproute2, dnsmasq-base, bind9-dnsutils, curl and python3.
set -euo pipefail

OUT=$(realpath -m "${1:-$(dirname "$0")/captures}")
for tool in openvpn openssl tcpdump ip dnsmasq dig curl python3; do
  command -v "$tool" >/dev/null || { echo "make-captures: $tool is missing" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "make-captures: needs root (network namespaces)" >&2; exit 1; }

TAG=blcap$$
NS_S=$TAG-s
NS_C=$TAG-c
SRV=10.3.0.222
CLI=10.3.0.40
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for ns in "$NS_S" "$NS_C"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  wait 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  ip netns del "$NS_C" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

in_s() { ip netns exec "$NS_S" "$@"; }
in_c() { ip netns exec "$NS_C" "$@"; }
# spawn NS LOG CMD...: CMD in the background in NS; sets SPAWNED to its own pid (not that of
# `ip netns exec`, which may stay in between).
spawn() {
  local ns=$1 log=$2; shift 2
  rm -f "$WORK/spawn.pid"
  ip netns exec "$ns" sh -c 'echo $$ >"$0"; exec "$@"' "$WORK/spawn.pid" "$@" >"$log" 2>&1 &
  for _ in $(seq 50); do [ -s "$WORK/spawn.pid" ] && break; sleep 0.05; done
  SPAWNED=$(cat "$WORK/spawn.pid")
  PIDS+=("$SPAWNED")
}

# --- network ---------------------------------------------------------------------------------
ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$TAG-vs" type veth peer name "$TAG-vc"
ip link set "$TAG-vs" netns "$NS_S"
ip link set "$TAG-vc" netns "$NS_C"
in_s ip addr add $SRV/24 dev "$TAG-vs"
in_c ip addr add $CLI/24 dev "$TAG-vc"
for ns in "$NS_S" "$NS_C"; do
  ip -n "$ns" link set lo up
  # No offloads: the capture shows the segments as they would cross a real link.
  if command -v ethtool >/dev/null; then
    ip netns exec "$ns" sh -c 'for d in /sys/class/net/*; do ethtool -K "${d##*/}" tso off gso off gro off >/dev/null 2>&1 || true; done'
  fi
done
ip -n "$NS_S" link set "$TAG-vs" up
ip -n "$NS_C" link set "$TAG-vc" up

# --- keys ------------------------------------------------------------------------------------
cd "$WORK"
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
  -out ca.crt -days 2 -subj /CN=blocklab-capture-ca
for n in server client; do
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key -out $n.csr \
    -subj /CN=$n
  ossl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 2
done
openvpn --genkey secret static.key
openvpn --genkey secret ta.key

# --- capture helpers -------------------------------------------------------------------------
CAP_PID=
start_capture() {
  spawn "$NS_C" "$WORK/tcpdump.log" tcpdump -Z root -i "$TAG-vc" -U -s 0 -w "$WORK/$1" ip
  CAP_PID=$SPAWNED
  for _ in $(seq 50); do grep -q "listening on" "$WORK/tcpdump.log" && return; sleep 0.1; done
  echo "make-captures: tcpdump did not start" >&2; cat "$WORK/tcpdump.log" >&2; exit 1
}
stop_capture() {
  sleep 0.5
  stop_pid "$CAP_PID"
  mkdir -p "$OUT"
  mv "$WORK/$1" "$OUT/$1"
  echo "make-captures: $OUT/$1 ($(stat -c %s "$OUT/$1") bytes)"
}
stop_pid() { # PID: TERM, then wait until it is gone
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
wait_log() { # FILE NEEDLE SECONDS
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done
  echo "make-captures: no \"$2\" in $1:" >&2; cat "$1" >&2; exit 1
}

# --- OpenVPN runs ----------------------------------------------------------------------------
openvpn_run() { # NAME PROTO(udp|tcp) MODE(static|tls|tls-auth)
  local name=$1 proto=$2 mode=$3 sproto cproto lport keys_s keys_c
  if [ "$proto" = udp ]; then sproto=udp; cproto=udp; lport=44020
  else sproto=tcp-server; cproto=tcp-client; lport=44021; fi
  case $mode in
    static)
      keys_s=(--secret static.key 0 --cipher AES-256-CBC --auth SHA256)
      keys_c=(--secret static.key 1 --cipher AES-256-CBC --auth SHA256) ;;
    tls)
      keys_s=(--tls-server --ca ca.crt --cert server.crt --key server.key --dh none)
      keys_c=(--tls-client --ca ca.crt --cert client.crt --key client.key) ;;
    tls-auth)
      keys_s=(--tls-server --ca ca.crt --cert server.crt --key server.key --dh none --tls-auth ta.key 0)
      keys_c=(--tls-client --ca ca.crt --cert client.crt --key client.key --tls-auth ta.key 1) ;;
  esac
  start_capture "$name"
  spawn "$NS_S" "$WORK/server.log" openvpn --dev tun --disable-dco --proto $sproto --local $SRV \
    --port 1194 --ifconfig 10.8.0.1 10.8.0.2 --verb 3 "${keys_s[@]}"
  local spid=$SPAWNED
  if [ "$proto" = tcp ]; then wait_log "$WORK/server.log" "Listening for incoming TCP" 10; fi
  sleep 0.3
  spawn "$NS_C" "$WORK/client.log" openvpn --dev tun --disable-dco --proto $cproto --remote $SRV \
    1194 --lport $lport --ifconfig 10.8.0.2 10.8.0.1 --verb 3 "${keys_c[@]}"
  local cpid=$SPAWNED
  wait_log "$WORK/client.log" "Initialization Sequence Completed" 30
  # Datagrams through the tunnel (to the discard port of the server's tunnel address).
  for i in $(seq 10); do
    in_c bash -c "echo 'datagram $i through the tunnel' >/dev/udp/10.8.0.1/9"; sleep 0.2
  done
  stop_pid "$cpid"
  sleep 0.3
  stop_pid "$spid"
  stop_capture "$name"
}

openvpn_run udp-static.pcap udp static
openvpn_run tcp-static.pcap tcp static
openvpn_run udp-tls.pcap udp tls
openvpn_run tcp-tls.pcap tcp tls
openvpn_run udp-tls-auth.pcap udp tls-auth
openvpn_run tcp-tls-auth.pcap tcp tls-auth

# --- ordinary traffic ------------------------------------------------------------------------
mkdir -p www && printf 'hello from the capture origin\n' >www/index.html
spawn "$NS_S" /dev/null dnsmasq --keep-in-foreground --conf-file=/dev/null --listen-address=$SRV \
  --bind-interfaces --no-resolv --no-hosts --user=root --pid-file= --address=/origin.lab/$SRV \
  --address=/other.lab/$SRV
spawn "$NS_S" /dev/null python3 -m http.server --bind $SRV --directory www 80
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout web.key \
  -out web.crt -days 2 -subj /CN=origin.lab -addext subjectAltName=DNS:origin.lab >/dev/null 2>&1
spawn "$NS_S" /dev/null openssl s_server -quiet -www -accept $SRV:443 -cert web.crt -key web.key
for _ in $(seq 50); do
  in_c dig +short +time=1 +tries=1 @$SRV origin.lab 2>/dev/null | grep -q $SRV \
    && in_c curl -s -o /dev/null http://$SRV/ && break
  sleep 0.1
done
sleep 0.5
start_capture non-vpn.pcap
for name in origin.lab other.lab; do
  in_c dig +time=2 +tries=1 @$SRV $name A >/dev/null
  in_c dig +time=2 +tries=1 +tcp @$SRV $name A >/dev/null
done
for _ in 1 2 3; do
  in_c curl -sS -o /dev/null --noproxy '*' --resolve origin.lab:80:$SRV http://origin.lab/
  in_c curl -sS -o /dev/null --noproxy '*' --cacert web.crt --resolve origin.lab:443:$SRV \
    https://origin.lab/
done
stop_capture non-vpn.pcap
