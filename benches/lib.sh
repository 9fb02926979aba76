# benches/lib.sh — what the benchmark scripts share; sourced (`. benches/lib.sh`) from the repo
# root after `set -euo pipefail`.
#
#   bench_workdir NAME   WORK: a fresh /tmp/blocklab-NAME.XXXXXX; PIDS: the processes a script
#                        starts (append with `PIDS+=($!)`); both are cleaned up on exit.
#   free_port            a loopback port free for both UDP and TCP.
#   wait_dns PORT NAME   waits (up to 20 s) until a DNS server on 127.0.0.1:PORT answers NAME.

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

bench_workdir() {
  WORK=$(mktemp -d "/tmp/blocklab-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

free_port() {
  python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

wait_dns() {
  for _ in $(seq 200); do
    dig @127.0.0.1 -p "$1" "$2" +time=1 +tries=1 +short >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: nothing answers on port $1" >&2
  exit 1
}
