"""A TLS client for tests/lab.rs, run inside a lab namespace (`lab exec`); it trusts what
SSL_CERT_FILE names (lab exec sets it to the lab CA).

`python3 split_hello.py HOST`: splits its ClientHello across two TCP segments (the first 16
bytes, a pause, the rest), then sends GET / and prints the status line, or `reset` if the
connection was reset.

`python3 split_hello.py --count HOST PATH`: sends its ClientHello in one piece, GETs PATH and
reads until the server closes, the connection is reset, or nothing arrives for 3 s; prints
`BYTES END`: the TCP payload bytes received from the server (handshake included) and `closed`,
`reset` or `timeout` (what a freeze looks like: the bytes stop, no RST)."""
import socket
import ssl
import sys
import time

args = sys.argv[1:]
count = args[:1] == ["--count"]
if count:
    args = args[1:]
host = args[0]
path = args[1] if len(args) > 1 else "/"
ctx = ssl.create_default_context()
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=host)
sock = socket.create_connection((host, 443), timeout=5)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
received = 0


def recv():
    global received
    got = sock.recv(65536)
    received += len(got)
    return got


def drain():
    """Reads raw bytes until the server closes, resets or goes quiet; returns how it ended."""
    sock.settimeout(3)
    try:
        while recv():
            pass
        return "closed"
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "reset"


first = not count
try:
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = out.read()
            if data and first:
                sock.sendall(data[:16])
                time.sleep(0.3)
                sock.sendall(data[16:])
                first = False
            elif data:
                sock.sendall(data)
            got = recv()
            if not got:
                print("closed")
                sys.exit(3)
            inc.write(got)
    tls.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode()
              + b"\r\nConnection: close\r\n\r\n")
    sock.sendall(out.read())
    if count:
        end = drain()
        print(f"{received} {end}")
        sys.exit(0)
    resp = b""
    while b"\r\n" not in resp:
        try:
            chunk = tls.read(65536)
            if not chunk:
                break
            resp += chunk
        except ssl.SSLWantReadError:
            got = recv()
            if not got:
                break
            inc.write(got)
    print(resp.split(b"\r\n")[0].decode())
except ConnectionResetError:
    print(f"{received} reset" if count else "reset")
    sys.exit(4)
