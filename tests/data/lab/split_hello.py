"""A TLS client that splits its ClientHello across two TCP segments (the first 16 bytes, a
pause, the rest), then sends GET / and prints the status line, or `reset` if the connection
was reset. Used by tests/lab.rs inside a lab namespace: `python3 split_hello.py HOST`.
Trusts what SSL_CERT_FILE names (lab exec sets it to the lab CA)."""
import socket
import ssl
import sys
import time

host = sys.argv[1]
ctx = ssl.create_default_context()
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=host)
sock = socket.create_connection((host, 443), timeout=5)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
first = True
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
            got = sock.recv(65536)
            if not got:
                print("closed")
                sys.exit(3)
            inc.write(got)
    tls.write(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
    sock.sendall(out.read())
    resp = b""
    while b"\r\n" not in resp:
        try:
            chunk = tls.read(65536)
            if not chunk:
                break
            resp += chunk
        except ssl.SSLWantReadError:
            got = sock.recv(65536)
            if not got:
                break
            inc.write(got)
    print(resp.split(b"\r\n")[0].decode())
except ConnectionResetError:
    print("reset")
    sys.exit(4)
