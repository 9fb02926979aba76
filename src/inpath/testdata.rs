//! Test inputs: TCP segments and UDP datagrams made with the engine's own packet writer. One copy, shared by the
//! engine's unit tests, `tests/inpath.rs` and `benches/inpath.rs` (they include this file with
//! `#[path]`, so it names the library as `blocklab`).

use std::net::SocketAddr;

use blocklab::inpath::packet::{craft_tcp, craft_udp, TcpSpec};

/// An IP packet with one TCP segment from `src` to `dst` (window 65535, TTL `ttl`).
pub(crate) fn tcp_segment(
    (src, dst): (SocketAddr, SocketAddr),
    seq: u32,
    ack: u32,
    flags: u8,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let spec = TcpSpec {
        src,
        dst,
        seq,
        ack,
        flags,
        window: 65535,
        ttl,
        payload,
    };
    let mut p = Vec::new();
    craft_tcp(&mut p, &spec).expect("both ends of one address family");
    p
}

/// An IP packet with one UDP datagram from `src` to `dst` (TTL 64), both given as text.
pub(crate) fn udp_datagram(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    craft_udp(
        &mut p,
        src.parse().expect("src"),
        dst.parse().expect("dst"),
        64,
        payload,
    )
    .expect("both ends of one address family");
    p
}
