#!/usr/bin/env python3
"""Extracts the OpenVPN packet fixtures tests/data/openvpn-*.txt from our own captures.

    tests/data/extract-openvpn.py            rewrite the four fixtures from tests/data/captures/
    tests/data/extract-openvpn.py --check    exit 1 if a fixture differs from what it would write
    tests/data/extract-openvpn.py CAPTURE    print the fixture of one capture

A fixture is the first PACKETS (24) payload-carrying packets of the capture's port-1194 flow,
in capture order, one a line: `c` (client to server) or `s` (server to client), a space, the
payload (UDP datagram or TCP segment payload) as lowercase hex. TCP retransmissions (bytes
already seen in that direction) are left out. Lines starting with `#` are comments.

Reads classic pcap (either byte order, micro- or nanosecond) with Ethernet or raw IPv4
framing, as tests/data/make-captures.sh records them. Only the standard library.
"""

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKETS = 24
SERVER_PORT = 1194

# fixture -> capture it is made from (tests/data/README.md says why these).
FIXTURES = {
    "openvpn-udp-tls.txt": "udp-tls-auth.pcap",
    "openvpn-tcp-tls.txt": "tcp-tls-auth.pcap",
    "openvpn-udp-static.txt": "udp-static.pcap",
    "openvpn-tcp-static.txt": "tcp-static.pcap",
}


class BadCapture(Exception):
    """A capture this script cannot read; the message says where."""


def records(path):
    """Yields (link type, frame bytes) for every record of a classic pcap file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadCapture(f"{path}: cannot read: {e.strerror}") from None
    if len(data) < 24:
        raise BadCapture(f"{path}: shorter than a pcap header")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise BadCapture(f"{path}: not a classic pcap file (magic {magic.hex()})")
    (link,) = struct.unpack(endian + "I", data[20:24])
    off = 24
    while off < len(data):
        if off + 16 > len(data):
            raise BadCapture(f"{path}: truncated record header at byte {off}")
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off : off + 16])
        off += 16
        if off + incl > len(data):
            raise BadCapture(f"{path}: truncated record at byte {off - 16}")
        yield link, data[off : off + incl]
        off += incl


def ipv4(link, frame):
    """The IPv4 packet in a frame, or None (other link types and protocols are skipped)."""
    if link == 1:  # Ethernet
        if len(frame) < 14 or frame[12:14] != b"\x08\x00":
            return None
        return frame[14:]
    if link in (101, 228):  # raw IP, raw IPv4
        return frame
    return None


def segments(path):
    """Yields (src, sport, dst, dport, proto, seq, payload) of the UDP and TCP packets."""
    for link, frame in records(path):
        ip = ipv4(link, frame)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        proto, src, dst = ip[9], ip[12:16], ip[16:20]
        body = ip[ihl:total]
        if proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack(">HH", body[:4])
            yield src, sport, dst, dport, "udp", None, body[8:]
        elif proto == 6 and len(body) >= 20:
            sport, dport, seq = struct.unpack(">HHI", body[:8])
            yield src, sport, dst, dport, "tcp", seq, body[(body[12] >> 4) * 4 :]


def extract(path, packets=PACKETS):
    """The fixture lines of the port-1194 flow of a capture (its first such flow)."""
    flow = None
    seen = {}  # TCP: direction -> next sequence number not yet seen
    lines = []
    for src, sport, dst, dport, proto, seq, payload in segments(path):
        if SERVER_PORT not in (sport, dport):
            continue
        key = (proto, frozenset([(src, sport), (dst, dport)]))
        if flow is None:
            flow = key
        if key != flow or not payload:
            continue
        d = "c" if dport == SERVER_PORT else "s"
        if proto == "tcp":
            end = (seq + len(payload)) % 2**32
            if d in seen and not 0 < (end - seen[d]) % 2**32 < 2**31:
                continue  # a retransmission: it ends where the bytes seen so far end
            seen[d] = end
        lines.append(f"{d} {payload.hex()}")
        if len(lines) == packets:
            break
    if flow is None:
        raise BadCapture(f"{path}: no flow to or from port {SERVER_PORT}")
    return lines


def fixture(capture):
    """The whole text of the fixture made from capture (a name in tests/data/captures/)."""
    lines = extract(HERE / "captures" / capture)
    head = (
        f"# the first {len(lines)} payload packets of the port-{SERVER_PORT} flow of "
        f"tests/data/captures/{capture} (our own recording, tests/data/make-captures.sh), "
        "written by tests/data/extract-openvpn.py: c = client, s = server, payload as hex"
    )
    return "\n".join([head, *lines]) + "\n"


def main(args):
    if args and args[0] != "--check":
        for a in args:
            print("\n".join(extract(Path(a))))
        return 0
    check = args == ["--check"]
    stale = []
    for name, capture in FIXTURES.items():
        text = fixture(capture)
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    for name in stale:
        print(f"{HERE / name}: differs from tests/data/captures/{FIXTURES[name]}; "
              "run tests/data/extract-openvpn.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BadCapture as e:
        print(f"extract-openvpn: {e}", file=sys.stderr)
        sys.exit(2)
