//! Negative controls: real TLS (a rustls handshake in memory, certificate from rcgen), HTTP,
//! DNS and QUIC-like traffic must not be flagged as any VPN protocol by any detector, also
//! when it runs on VPN ports (1194, 500, 4500, 1723, 51820). The fully-encrypted rule is
//! checked separately: TLS and HTTP are exempt (Ex5), random-looking QUIC-like payloads are
//! its known false-positive profile when UDP judging is enabled.

use std::net::SocketAddr;
use std::sync::Arc;

use blocklab::detect::fully_encrypted::pseudo_random as noise;
use blocklab::detect::{
    self, fully_encrypted::FullyEncrypted, Classifier, Detector, Dir, Flow, Packet, Transport,
};

/// A complete TLS 1.3 handshake plus one application record each way, as (direction, record
/// bytes) in wire order.
fn rustls_flow() -> Vec<(Dir, Vec<u8>)> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["blocked.example".into()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = rustls::ClientConnection::new(
        Arc::new(client_cfg),
        ServerName::try_from("blocked.example").unwrap(),
    )
    .unwrap();
    let mut s = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
    let mut out = Vec::new();
    use std::io::Write as _;
    c.writer()
        .write_all(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n")
        .unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().unwrap();
            out.push((Dir::ToServer, buf));
        }
        if !s.is_handshaking() && out.iter().filter(|(d, _)| *d == Dir::ToClient).count() == 1 {
            s.writer()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().unwrap();
            out.push((Dir::ToClient, buf));
        }
    }
    assert!(
        !c.is_handshaking() && !s.is_handshaking(),
        "the TLS handshake completed"
    );
    assert!(out.len() >= 4);
    out
}

fn http_flow() -> Vec<(Dir, Vec<u8>)> {
    vec![
        (Dir::ToServer, b"GET /index.html HTTP/1.1\r\nHost: example.org\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n".to_vec()),
        (Dir::ToClient, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>".to_vec()),
    ]
}

/// An RFC 1035 query for `name` (type A) and a one-answer response.
fn dns_flow(name: &str, id: u16) -> Vec<(Dir, Vec<u8>)> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut r = q.clone();
    r[2..4].copy_from_slice(&[0x81, 0x80]);
    r[6..8].copy_from_slice(&[0, 1]);
    r.extend_from_slice(&[
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34,
    ]);
    vec![(Dir::ToServer, q), (Dir::ToClient, r)]
}

/// QUIC v1 as it looks on the wire: padded long-header Initials, then short-header packets
/// whose first byte varies (header protection) and whose bodies are random.
fn quic_like_flow() -> Vec<(Dir, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..24u64 {
        let dir = if i % 3 == 1 {
            Dir::ToClient
        } else {
            Dir::ToServer
        };
        let mut p = noise(
            if i < 4 {
                1252
            } else {
                60 + (i as usize * 37) % 1100
            },
            i + 77,
        );
        if i < 4 {
            p[0] = 0xc0 | (p[0] & 0x0f);
            p[1..5].copy_from_slice(&[0, 0, 0, 1]);
        } else {
            p[0] = 0x40 | (p[0] & 0x3f);
        }
        v.push((dir, p));
    }
    v
}

/// Every detector's answer on the whole flow (undecided = not its protocol).
fn verdicts(
    ds: &[Box<dyn Detector>],
    transport: Transport,
    port: u16,
    raw: &[(Dir, Vec<u8>)],
) -> Vec<(&'static str, Option<&'static str>)> {
    let packets = Packet::all(raw);
    let mut c = Classifier::new(ds);
    for n in 1..=packets.len() {
        let flow = Flow {
            transport,
            client: "127.0.0.1:40000".parse().unwrap(),
            server: SocketAddr::from(([127, 0, 0, 2], port)),
            packets: &packets[..n],
        };
        if !c.update(&flow) {
            break;
        }
    }
    c.finish();
    c.outcomes()
        .map(|(n, o)| (n, o.ok().flatten().map(|v| v.protocol)))
        .collect()
}

fn assert_no_vpn(what: &str, transport: Transport, raw: &[(Dir, Vec<u8>)]) {
    let ds = detect::standard(Default::default());
    for port in [443, 80, 53, 1194, 500, 4500, 1723, 51820] {
        for (name, v) in verdicts(&ds, transport, port, raw) {
            if name != "fully-encrypted" {
                assert_eq!(v, None, "{what} on port {port} flagged by {name}");
            }
        }
    }
}

#[test]
fn real_tls_is_no_vpn_and_exempt_from_the_fully_encrypted_rule() {
    let flow = rustls_flow();
    assert_no_vpn("rustls TLS 1.3", Transport::Tcp, &flow);
    let fe: Vec<Box<dyn Detector>> = vec![Box::new(FullyEncrypted::default())];
    assert_eq!(
        verdicts(&fe, Transport::Tcp, 443, &flow),
        [("fully-encrypted", None)],
        "Ex5 exempts TLS"
    );
}

#[test]
fn http_and_dns_are_no_vpn() {
    assert_no_vpn("HTTP", Transport::Tcp, &http_flow());
    for (i, name) in [
        "example.org",
        "vpn.example.net",
        "a.very.long.subdomain.of.blocked-site.ru",
    ]
    .iter()
    .enumerate()
    {
        assert_no_vpn("DNS", Transport::Udp, &dns_flow(name, 0x1234 + i as u16));
    }
    let fe: Vec<Box<dyn Detector>> = vec![Box::new(FullyEncrypted::default())];
    assert_eq!(
        verdicts(&fe, Transport::Tcp, 80, &http_flow()),
        [("fully-encrypted", None)]
    );
}

#[test]
fn quic_like_traffic_is_no_vpn_but_is_the_fully_encrypted_false_positive_profile() {
    let flow = quic_like_flow();
    assert_no_vpn("QUIC-like", Transport::Udp, &flow);
    // Short-header QUIC is indistinguishable from random: Wu et al.'s rule flags it once it
    // is applied to UDP (the paper's GFW applies it to TCP only, the default here).
    let mut short = flow.clone();
    short.drain(..5); // start at a client packet
    let udp: Vec<Box<dyn Detector>> = vec![Box::new(FullyEncrypted {
        udp: true,
        ..Default::default()
    })];
    assert_eq!(
        verdicts(&udp, Transport::Udp, 443, &short),
        [("fully-encrypted", Some("fully-encrypted"))]
    );
    let tcp_only: Vec<Box<dyn Detector>> = vec![Box::new(FullyEncrypted::default())];
    assert_eq!(
        verdicts(&tcp_only, Transport::Udp, 443, &short),
        [("fully-encrypted", None)]
    );
}
