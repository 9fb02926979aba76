//! Engine tests over crafted packet sequences (real ClientHellos from rustls).

use std::net::SocketAddr;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::inpath::packet::{craft_udp, fragment_v4};
use crate::inpath::testdata::tcp_segment;
use crate::policy::ClientNet;
use crate::rules::RuleSet;
use crate::sniff::testdata::rustls_client_hello;

const RULES: &str = r#"
[jurisdiction]
code = "ru"
name = "Test"
utc_offset = "+03:00"
reassemble = REASSEMBLE
http_blockpage = "http://warning.rt.ru/"

[[isp]]
id = "mobile"
name = "Test mobile operator"
http_blockpage = "http://blocked.mobile.example/"

[[rule]]
id = "t-reset"
domains = ["blocked.example"]
techniques = ["tls-reset", "http-blockpage", "quic-drop"]

[[rule]]
id = "t-drop"
domains = ["drop.example"]
techniques = ["tls-drop"]

[[rule]]
id = "t-throttle"
domains = ["slow.example"]
techniques = ["throttle"]
throttle_kbps = 140

[[rule]]
id = "t-ipdrop"
ips = ["192.0.2.66/32"]
techniques = ["ip-drop"]

[[rule]]
id = "t-ipreset"
ips = ["192.0.2.67/32"]
techniques = ["ip-reset"]

[[rule]]
id = "t-freeze"
ips = ["192.0.2.70/32"]
techniques = ["ip-drop"]

[[rule]]
id = "t-freeze-rule"
ips = ["192.0.2.71/32"]
techniques = ["freeze"]
freeze_after_bytes = 8192

[[rule]]
id = "t-residual-rule"
domains = ["residual.example"]
techniques = ["tls-reset"]
residual_secs = 30

[[rule]]
id = "t-dated"
domains = ["dated.example"]
since = "2023-01-01"
techniques = ["tls-reset"]

[[rule]]
id = "t-ech"
domains = ["ech.example"]
ech = true
techniques = ["tls-drop"]

[[rule]]
id = "t-port"
domains = ["port.example"]
ports = ["tcp/443"]
techniques = ["tls-reset"]

[[rule]]
id = "t-hours"
domains = ["hours.example"]
hours = ["09:00-17:00"]
techniques = ["tls-reset"]

[[rule]]
id = "t-mobile-allowlist"
domains = ["."]
isp = ["mobile"]
techniques = ["tls-drop"]

[[rule]]
id = "t-mobile-allow"
allow = true
domains = ["vk.example"]
ips = ["192.0.2.99/32"]
isp = ["mobile"]

[[vpn]]
id = "t-vpn"
protocols = ["wireguard"]
since = "2023-08-07"
technique = "drop"
"#;

fn policy(reassemble: bool) -> Policy {
    let text = RULES.replace("REASSEMBLE", if reassemble { "true" } else { "false" });
    let file = RuleSet::parse_str(Path::new("test.toml"), &text).unwrap();
    let rules = RuleSet { files: vec![file] };
    Policy::compile(
        &rules,
        &[ClientNet {
            net: "10.0.0.0/8".parse().unwrap(),
            jurisdiction: "ru".into(),
        }],
    )
    .unwrap()
}

fn at(s: &str) -> At {
    At::Day(s.parse().unwrap())
}

const CISN: u32 = 1000;
const SISN: u32 = 90_000;

/// One TCP connection's packets, from both ends.
struct Conn {
    c: SocketAddr,
    s: SocketAddr,
}

impl Conn {
    fn new(server: &str) -> Conn {
        Conn {
            c: "10.0.0.1:40000".parse().unwrap(),
            s: server.parse().unwrap(),
        }
    }
    /// The sender and receiver of a segment to the server (or to the client).
    fn ends(&self, to_server: bool) -> (SocketAddr, SocketAddr) {
        if to_server {
            (self.c, self.s)
        } else {
            (self.s, self.c)
        }
    }
    fn syn(&self) -> Vec<u8> {
        tcp_segment(self.ends(true), CISN, 0, SYN, 64, &[])
    }
    fn synack(&self) -> Vec<u8> {
        tcp_segment(self.ends(false), SISN, CISN + 1, SYN | ACK, 64, &[])
    }
    fn ack(&self) -> Vec<u8> {
        tcp_segment(self.ends(true), CISN + 1, SISN + 1, ACK, 64, &[])
    }
    /// Client data at stream offset `off`.
    fn data(&self, off: u32, payload: &[u8]) -> Vec<u8> {
        tcp_segment(
            self.ends(true),
            CISN + 1 + off,
            SISN + 1,
            ACK | PSH,
            64,
            payload,
        )
    }
    /// Server data at stream offset `off`.
    fn sdata(&self, off: u32, payload: &[u8]) -> Vec<u8> {
        tcp_segment(
            self.ends(false),
            SISN + 1 + off,
            CISN + 1,
            ACK | PSH,
            64,
            payload,
        )
    }
}

struct Run {
    engine: Engine,
    policy: Policy,
    at: At,
    /// Per client group moments (as the live driver passes them).
    groups: Vec<At>,
    /// The wall clock, unix seconds.
    unix: Option<i64>,
    out: Output,
    events: Vec<FlowEvent>,
    now: u64,
}

impl Run {
    fn new(reassemble: bool) -> Run {
        Run::with(reassemble, EngineConfig::default())
    }
    fn with(reassemble: bool, cfg: EngineConfig) -> Run {
        Run {
            engine: Engine::new(cfg),
            policy: policy(reassemble),
            at: at("2024-01-01"),
            groups: Vec::new(),
            unix: None,
            out: Output::default(),
            events: Vec::new(),
            now: 1_000_000_000,
        }
    }
    /// Feeds a packet; returns its fate and the injected packets.
    fn feed(&mut self, pkt: &[u8]) -> (Fate, Vec<(Side, Vec<u8>)>) {
        self.now += 1_000_000;
        let when = Moments {
            at: self.at,
            groups: &self.groups,
            unix_secs: self.unix,
        };
        self.engine
            .process(&self.policy, &when, self.now, pkt, &mut self.out);
        self.events.append(&mut self.out.events);
        (self.out.fate(), std::mem::take(&mut self.out.inject))
    }
    fn handshake(&mut self, c: &Conn) {
        for p in [c.syn(), c.synack(), c.ack()] {
            assert_eq!(self.feed(&p).0, Fate::Forward);
        }
    }
}

fn tcp_of(p: &[u8]) -> (IpPacket<'_>, TcpSegment<'_>) {
    let ip = IpPacket::parse(p).unwrap();
    let t = TcpSegment::parse(ip.payload()).unwrap();
    (ip, t)
}

/// Splits a ClientHello record inside its SNI.
fn split_in_sni(ch: &[u8], name: &str) -> usize {
    let at = ch
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap();
    at + 3
}

#[test]
fn allowed_tls_passes_untouched() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    let ch = rustls_client_hello("allowed.example");
    assert_eq!(r.feed(&c.data(0, &ch)), (Fate::Forward, vec![]));
    assert_eq!(r.feed(&c.sdata(0, &[0x16; 1200])).0, Fate::Forward);
    assert!(r.events.is_empty());
    r.engine.finish(&mut r.events);
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].action, "pass");
    assert_eq!(r.engine.held_bytes(), 0);
}

#[test]
fn blocked_sni_is_reset_both_ways_with_acceptable_sequence_numbers() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    let ch = rustls_client_hello("www.blocked.example");
    let (fate, inj) = r.feed(&c.data(0, &ch));
    assert_eq!(fate, Fate::Drop, "the ClientHello never reaches the server");
    assert_eq!(inj.len(), 2);
    let (side, to_client) = &inj[0];
    assert_eq!(*side, Side::ToClient);
    let (ip, t) = tcp_of(to_client);
    assert!(crate::inpath::packet::transport_checksum_ok(&ip));
    assert_eq!((ip.src, ip.dst), (c.s.ip(), c.c.ip()));
    assert!(t.has(RST | ACK));
    assert_eq!(t.seq, SISN + 1, "the client's rcv_nxt");
    assert_eq!(t.ack, CISN + 1 + ch.len() as u32);
    let (side, to_server) = &inj[1];
    assert_eq!(*side, Side::ToServer);
    let (ip, t) = tcp_of(to_server);
    assert_eq!((ip.src, ip.dst), (c.c.ip(), c.s.ip()));
    assert!(t.has(RST));
    assert_eq!(t.seq, CISN + 1, "the server's rcv_nxt");
    assert_eq!(r.events.len(), 1);
    let e = &r.events[0];
    assert_eq!(
        (
            e.action,
            e.technique,
            e.rule.as_deref(),
            e.target.as_str(),
            e.after_packet
        ),
        (
            "reset",
            Some("tls-reset"),
            Some("t-reset"),
            "www.blocked.example",
            4
        )
    );
    // Everything after is dropped, both ways.
    assert_eq!(r.feed(&c.sdata(0, b"late")).0, Fate::Drop);
    assert_eq!(r.feed(&c.data(0, &ch)).0, Fate::Drop);
    assert_eq!(r.engine.stats().resets, 1);
}

#[test]
fn split_client_hello_is_reset_when_reassembling_and_passes_a_first_packet_censor() {
    let ch = rustls_client_hello("blocked.example");
    let cut = split_in_sni(&ch, "blocked.example");
    for reassemble in [true, false] {
        let mut r = Run::new(reassemble);
        let c = Conn::new("192.0.2.10:443");
        r.handshake(&c);
        assert_eq!(r.feed(&c.data(0, &ch[..cut])).0, Fate::Forward);
        let (fate, inj) = r.feed(&c.data(cut as u32, &ch[cut..]));
        if reassemble {
            assert_eq!(fate, Fate::Drop);
            assert_eq!(inj.len(), 2);
            let (_, t) = tcp_of(&inj[1].1);
            assert_eq!(
                t.seq,
                CISN + 1 + cut as u32,
                "server RST after the forwarded part"
            );
            assert_eq!(r.events[0].action, "reset");
        } else {
            assert_eq!((fate, inj.len()), (Fate::Forward, 0));
            assert!(r.events.is_empty());
        }
    }
}

#[test]
fn low_ttl_fake_packet_fools_a_first_packet_censor() {
    let mut r = Run::new(false);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    // The fake: a harmless SNI, same sequence number, TTL 2 (it dies after the censor).
    let fake = rustls_client_hello("harmless.example");
    let fake_pkt = tcp_segment(c.ends(true), CISN + 1, SISN + 1, ACK | PSH, 2, &fake);
    assert_eq!(r.feed(&fake_pkt).0, Fate::Forward);
    let real = rustls_client_hello("blocked.example");
    assert_eq!(r.feed(&c.data(0, &real)), (Fate::Forward, vec![]));
    assert!(r.events.is_empty());
    // Without the fake, the same censor resets.
    let mut r = Run::new(false);
    r.handshake(&c);
    assert_eq!(r.feed(&c.data(0, &real)).0, Fate::Drop);
}

#[test]
fn out_of_order_segments_are_reassembled() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    let ch = rustls_client_hello("blocked.example");
    let a = split_in_sni(&ch, "blocked.example");
    let b = a + (ch.len() - a) / 2;
    assert_eq!(r.feed(&c.data(b as u32, &ch[b..])).0, Fate::Forward);
    assert_eq!(r.feed(&c.data(0, &ch[..a])).0, Fate::Forward);
    let (fate, inj) = r.feed(&c.data(a as u32, &ch[a..b]));
    assert_eq!((fate, inj.len()), (Fate::Drop, 2));
    // The detectors see the random tail of the hello first; `fully-encrypted` may name it
    // (observed): the reset is the event that counts.
    let reset = r.events.iter().find(|e| e.action == "reset");
    assert_eq!(
        reset.map(|e| e.target.as_str()),
        Some("blocked.example"),
        "{:?}",
        r.events
    );
}

#[test]
fn http_blockpage_is_a_302_toward_the_client_and_the_server_is_reset() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:80");
    r.handshake(&c);
    let req = b"GET /news HTTP/1.1\r\nHost: blocked.example\r\nUser-Agent: curl\r\n\r\n";
    let (fate, inj) = r.feed(&c.data(0, req));
    assert_eq!(fate, Fate::Drop);
    assert_eq!(inj.len(), 2);
    let (_, t) = tcp_of(&inj[0].1);
    assert!(t.has(FIN | ACK | PSH));
    assert_eq!(t.seq, SISN + 1);
    assert_eq!(t.ack, CISN + 1 + req.len() as u32);
    let body = std::str::from_utf8(t.payload).unwrap();
    assert!(body.starts_with("HTTP/1.1 302 Found\r\n"), "{body}");
    assert!(body.contains("Location: http://warning.rt.ru/\r\n"));
    let (_, t) = tcp_of(&inj[1].1);
    assert!(t.has(RST));
    assert_eq!(r.events[0].action, "blockpage");
    assert_eq!(r.events[0].technique, Some("http-blockpage"));
}

#[test]
fn ip_drop_drops_the_syn_and_ip_reset_answers_it() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.66:443");
    assert_eq!(r.feed(&c.syn()), (Fate::Drop, vec![]));
    assert_eq!(r.feed(&c.syn()).0, Fate::Drop, "retransmitted SYN");
    assert_eq!(r.events[0].technique, Some("ip-drop"));
    let c = Conn::new("192.0.2.67:443");
    let (fate, inj) = r.feed(&c.syn());
    assert_eq!(fate, Fate::Drop);
    let (ip, t) = tcp_of(&inj[0].1);
    assert_eq!(ip.dst, c.c.ip());
    assert!(t.has(RST | ACK));
    assert_eq!(t.ack, CISN + 1);
    assert_eq!(r.events[1].technique, Some("ip-reset"));
}

#[test]
fn tls_drop_swallows_the_hello_and_everything_after_toward_the_server() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    let ch = rustls_client_hello("drop.example");
    assert_eq!(r.feed(&c.data(0, &ch)), (Fate::Drop, vec![]));
    assert_eq!(r.feed(&c.data(0, &ch)).0, Fate::Drop);
    assert_eq!(r.feed(&c.sdata(0, b"x")).0, Fate::Forward);
}

#[test]
fn throttle_polices_both_directions() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    let ch = rustls_client_hello("slow.example");
    assert_eq!(r.feed(&c.data(0, &ch)).0, Fate::Forward);
    assert_eq!(r.events[0].action, "throttle");
    // 10 s of a server sending 1400-byte segments every 1 ms (11.2 Mbit/s offered).
    let seg = [0u8; 1400];
    let mut passed = 0usize;
    let mut dropped = 0usize;
    for i in 0..10_000u32 {
        let p = c.sdata(i * 1400, &seg);
        match r.feed(&p).0 {
            Fate::Forward => passed += p.len(),
            _ => dropped += 1,
        }
    }
    let rate = 140_000.0 / 8.0; // bytes/s
    let expect = rate * 10.0 + rate * BURST_SECS;
    let got = passed as f64;
    assert!(
        (got - expect).abs() < expect * 0.05,
        "passed {got} bytes, expected ~{expect}"
    );
    assert!(dropped > 9000);
    // The client direction has its own bucket: its burst passes at once, no more.
    let mut up = 0;
    for i in 0..40u32 {
        if r.feed(&c.data(2000 + i * 1400, &seg)).0 == Fate::Forward {
            up += 1;
        }
    }
    let burst_pkts = (rate * BURST_SECS / 1454.0) as usize;
    assert!(
        (burst_pkts..=burst_pkts + 1).contains(&up),
        "{up} vs {burst_pkts}"
    );
    assert!(r.engine.stats().policed > 9000);
}

#[test]
fn freeze_stops_a_flow_after_the_bound_without_a_reset() {
    let mut cfg = EngineConfig::default();
    cfg.extras.insert(
        "t-freeze".into(),
        Extras {
            freeze_after_bytes: Some(16384),
            residual_secs: None,
        },
    );
    let mut r = Run::with(true, cfg);
    let c = Conn::new("192.0.2.70:443");
    r.handshake(&c);
    assert_eq!(r.events[0].action, "freeze");
    let mut got = 0;
    for i in 0..150u32 {
        let (fate, inj) = r.feed(&c.sdata(i * 1000, &[1u8; 1000]));
        assert!(inj.is_empty(), "no RST");
        if fate == Fate::Forward {
            got += 1000;
        }
    }
    assert_eq!(got, 16000);
    assert_eq!(r.feed(&c.ack()).0, Fate::Drop, "both ways stop");
}

#[test]
fn residual_block_refuses_new_connections_for_its_time() {
    let mut cfg = EngineConfig::default();
    cfg.extras.insert(
        "t-reset".into(),
        Extras {
            freeze_after_bytes: None,
            residual_secs: Some(60),
        },
    );
    let mut r = Run::with(true, cfg);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    assert_eq!(
        r.feed(&c.data(0, &rustls_client_hello("blocked.example")))
            .0,
        Fate::Drop
    );
    // A new connection (another client port) to the same server and port.
    let c2 = Conn {
        c: "10.0.0.1:40001".parse().unwrap(),
        s: c.s,
    };
    assert_eq!(r.feed(&c2.syn()).0, Fate::Drop);
    assert_eq!(r.events.last().unwrap().technique, Some("residual"));
    // Another port of the server is not blocked.
    let c3 = Conn::new("192.0.2.10:8443");
    assert_eq!(r.feed(&c3.syn()).0, Fate::Forward);
    // After the residual time the server is reachable again.
    r.now += 61_000_000_000;
    r.engine.expire(r.now);
    let c4 = Conn {
        c: "10.0.0.1:40002".parse().unwrap(),
        s: c.s,
    };
    assert_eq!(r.feed(&c4.syn()).0, Fate::Forward);
}

#[test]
fn quic_initials_to_a_blocked_name_are_dropped() {
    let mut r = Run::new(true);
    let c: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let s: SocketAddr = "192.0.2.10:443".parse().unwrap();
    let ch = rustls_client_hello("blocked.example");
    let dcid = [7u8; 8];
    let initial = crate::sniff::quic::seal_initial(&dcid, 0, 0, &ch[5..], 1200).unwrap();
    let mut p = Vec::new();
    craft_udp(&mut p, c, s, 64, &initial).unwrap();
    assert_eq!(r.feed(&p).0, Fate::Drop);
    assert_eq!(r.feed(&p).0, Fate::Drop, "retransmitted Initial");
    assert_eq!(r.events[0].action, "quic-drop");
    assert_eq!(r.events[0].target, "blocked.example");
    let ok = rustls_client_hello("allowed.example");
    let initial = crate::sniff::quic::seal_initial(&dcid, 0, 0, &ok[5..], 1200).unwrap();
    let mut p = Vec::new();
    craft_udp(&mut p, "10.0.0.1:50001".parse().unwrap(), s, 64, &initial).unwrap();
    assert_eq!(r.feed(&p).0, Fate::Forward);
}

#[test]
fn wireguard_is_observed_or_cut_per_vpn_rules() {
    use crate::detect::wireguard::build;
    let c: SocketAddr = "10.0.0.1:51000".parse().unwrap();
    let s: SocketAddr = "192.0.2.10:51820".parse().unwrap();
    let udp = |src, dst, payload: &[u8]| {
        let mut p = Vec::new();
        craft_udp(&mut p, src, dst, 64, payload).unwrap();
        p
    };
    for (mode, day, cut) in [
        (VpnMode::Observe, "2023-09-01", false),
        (VpnMode::Enforce, "2023-09-01", true),
        (VpnMode::Enforce, "2023-01-01", false),
    ] {
        let cfg = EngineConfig {
            vpn: mode,
            ..EngineConfig::default()
        };
        let mut r = Run::with(true, cfg);
        r.at = at(day);
        assert_eq!(
            r.feed(&udp(c, s, &build::initiation(7, 0xaa))).0,
            Fate::Forward
        );
        assert_eq!(
            r.feed(&udp(s, c, &build::response(9, 7, 0xbb))).0,
            Fate::Forward
        );
        let fate = r.feed(&udp(c, s, &build::transport(9, 0, 64, 0xcc))).0;
        assert_eq!(fate == Fate::Drop, cut, "{mode:?} {day}");
        let e = r.events.first();
        match mode {
            VpnMode::Observe => assert_eq!(e.map(|e| e.action), Some("observe")),
            VpnMode::Enforce if cut => {
                assert_eq!(
                    e.map(|e| (e.action, e.detector)),
                    Some(("drop", Some("wireguard")))
                )
            }
            VpnMode::Enforce => assert_eq!(e.map(|e| e.action), Some("observe")),
        }
    }
}

#[test]
fn ip_fragments_follow_the_reassemble_switch() {
    let ch = rustls_client_hello("blocked.example");
    for reassemble in [true, false] {
        let mut r = Run::new(reassemble);
        let c = Conn::new("192.0.2.10:443");
        r.handshake(&c);
        let whole = c.data(0, &ch);
        // Fragments of 64 bytes: the SNI is not in the first one.
        let mut frags = fragment_v4(&whole, 64, 42).unwrap();
        let last = frags.pop().unwrap();
        for f in &frags {
            let fate = r.feed(f).0;
            assert_eq!(
                fate,
                if reassemble {
                    Fate::Held
                } else {
                    Fate::Forward
                }
            );
        }
        let (fate, inj) = r.feed(&last);
        if reassemble {
            assert_eq!(fate, Fate::Held);
            assert_eq!(inj.len(), 2, "RSTs; the fragments are not released");
            assert_eq!(r.events[0].action, "reset");
        } else {
            assert_eq!((fate, inj.len()), (Fate::Forward, 0));
            assert!(r.events.is_empty());
        }
    }
    // An allowed fragmented datagram is released whole.
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    r.handshake(&c);
    let whole = c.data(0, &rustls_client_hello("allowed.example"));
    let frags = fragment_v4(&whole, 256, 43).unwrap();
    let mut released = Vec::new();
    for f in &frags {
        released.extend(r.feed(f).1);
    }
    assert_eq!(released.len(), frags.len());
    assert_eq!(released[0].1, frags[0]);
}

#[test]
fn a_full_table_evicts_and_counts() {
    let cfg = EngineConfig {
        max_flows: 4,
        ..EngineConfig::default()
    };
    let mut r = Run::with(true, cfg);
    for port in 0..10u16 {
        let c = Conn {
            c: SocketAddr::from(([10, 0, 0, 1], 30000 + port)),
            s: "192.0.2.10:443".parse().unwrap(),
        };
        r.feed(&c.syn());
    }
    assert_eq!(r.engine.flows(), 4);
    assert_eq!(r.engine.stats().evicted, 6);
}

#[test]
fn unmapped_clients_pass_untouched() {
    let mut r = Run::new(true);
    let c = Conn {
        c: "172.16.0.1:40000".parse().unwrap(),
        s: "192.0.2.66:443".parse().unwrap(),
    };
    assert_eq!(r.feed(&c.syn()).0, Fate::Forward);
    assert_eq!(r.engine.stats().unmapped, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_and_mutated_packets_never_panic_and_memory_stays_bounded(
        pkts in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..1500), any::<u16>(), any::<u8>(), 0usize..6),
            1..80,
        ),
    ) {
        let cfg = EngineConfig { max_flows: 16, stream_limit: 2048, total_reassembly: 8192, ..EngineConfig::default() };
        let mut r = Run::with(true, cfg);
        let c = Conn::new("192.0.2.10:443");
        let ch = rustls_client_hello("blocked.example");
        for (bytes, port, flip, kind) in pkts {
            let cc = Conn { c: SocketAddr::from(([10, 0, 0, (port % 7) as u8], port)), s: c.s };
            let mut p = match kind {
                0 => bytes,
                1 => cc.data(u32::from(port), &ch[..(port as usize % ch.len())]),
                2 => cc.syn(),
                3 => cc.sdata(0, &bytes),
                4 => { let mut p = Vec::new(); craft_udp(&mut p, cc.c, cc.s, 1, &bytes).unwrap(); p }
                _ => fragment_v4(&cc.data(0, &ch), 64, port).unwrap().swap_remove(port as usize % 4),
            };
            if !p.is_empty() && flip != 0 {
                let i = usize::from(port) % p.len();
                p[i] ^= flip;
            }
            r.feed(&p);
            prop_assert!(r.engine.flows() <= 16);
            prop_assert!(r.engine.held_bytes() <= 8192 + 2048);
        }
    }
}

#[test]
fn freeze_and_residual_come_from_the_rules_format() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.71:443");
    r.handshake(&c);
    assert_eq!(r.events[0].action, "freeze");
    assert_eq!(r.events[0].rule.as_deref(), Some("t-freeze-rule"));
    let passed = (0..20u32)
        .filter(|i| r.feed(&c.sdata(i * 1000, &[1u8; 1000])).0 == Fate::Forward)
        .count();
    assert_eq!(passed, 8);

    let c = Conn::new("192.0.2.12:443");
    r.handshake(&c);
    let (fate, _) = r.feed(&c.data(0, &rustls_client_hello("residual.example")));
    assert_eq!(fate, Fate::Drop);
    let again = Conn {
        c: "10.0.0.1:40009".parse().unwrap(),
        s: c.s,
    };
    assert_eq!(r.feed(&again.syn()).0, Fate::Drop, "residual_secs = 30");
    r.now += 31_000_000_000;
    let later = Conn {
        c: "10.0.0.1:40010".parse().unwrap(),
        s: c.s,
    };
    assert_eq!(r.feed(&later.syn()).0, Fate::Forward);
}

#[test]
fn a_client_group_date_beats_the_engine_date() {
    use crate::policy::ClientGroup;
    let text = RULES.replace("REASSEMBLE", "true");
    let file = RuleSet::parse_str(Path::new("test.toml"), &text).unwrap();
    let rules = RuleSet { files: vec![file] };
    let groups = [
        ClientGroup {
            nets: vec!["10.0.0.0/24".parse().unwrap()],
            jurisdiction: "ru".into(),
            date: Some("2023-09-01".parse().unwrap()),
            ..ClientGroup::default()
        },
        ClientGroup {
            nets: vec!["10.0.1.0/24".parse().unwrap()],
            jurisdiction: "ru".into(),
            ..ClientGroup::default()
        },
    ];
    let cfg = EngineConfig {
        vpn: VpnMode::Enforce,
        ..EngineConfig::default()
    };
    let mut r = Run::with(true, cfg);
    r.policy = Policy::compile_groups(&rules, &groups).unwrap();
    r.at = at("2023-01-01");
    use crate::detect::wireguard::build;
    let s: SocketAddr = "192.0.2.10:51820".parse().unwrap();
    for (client, cut) in [("10.0.0.1:51000", true), ("10.0.1.1:51000", false)] {
        let c: SocketAddr = client.parse().unwrap();
        let udp = |src, dst, payload: &[u8]| {
            let mut p = Vec::new();
            craft_udp(&mut p, src, dst, 64, payload).unwrap();
            p
        };
        r.feed(&udp(c, s, &build::initiation(7, 0xaa)));
        r.feed(&udp(s, c, &build::response(9, 7, 0xbb)));
        let fate = r.feed(&udp(c, s, &build::transport(9, 0, 64, 0xcc))).0;
        assert_eq!(fate == Fate::Drop, cut, "{client}");
    }
}

/// A policy over `RULES` with client groups (networks 10.0.N.0/24, in order), each with an
/// optional ISP profile.
fn grouped(isps: &[Option<&str>]) -> Policy {
    use crate::policy::ClientGroup;
    let text = RULES.replace("REASSEMBLE", "true");
    let file = RuleSet::parse_str(Path::new("test.toml"), &text).unwrap();
    let groups: Vec<ClientGroup> = isps
        .iter()
        .enumerate()
        .map(|(i, isp)| ClientGroup {
            nets: vec![format!("10.0.{i}.0/24").parse().unwrap()],
            jurisdiction: "ru".into(),
            isp: isp.map(str::to_string),
            ..ClientGroup::default()
        })
        .collect();
    Policy::compile_groups(&RuleSet { files: vec![file] }, &groups).unwrap()
}

/// A connection from client `client` to `server` sending its ClientHello `hello`: the
/// hello's fate and the engine's events for it.
fn hello_from(r: &mut Run, client: &str, server: &str, hello: &[u8]) -> (Fate, Vec<FlowEvent>) {
    let c = Conn {
        c: client.parse().unwrap(),
        s: server.parse().unwrap(),
    };
    r.events.clear();
    r.handshake(&c);
    let fate = r.feed(&c.data(0, hello)).0;
    (fate, std::mem::take(&mut r.events))
}

#[test]
fn two_client_groups_decide_at_their_own_moments_on_one_engine() {
    let mut r = Run::new(true);
    r.policy = grouped(&[None, None]);
    // The live driver passes each group's moment: group 0 before the rule, group 1 after.
    r.groups = vec![at("2022-06-01"), at("2023-06-01")];
    r.at = at("2021-01-01");
    let ch = rustls_client_hello("dated.example");
    let (fate, ev) = hello_from(&mut r, "10.0.0.5:40000", "192.0.2.10:443", &ch);
    assert_eq!(
        (fate, ev.len()),
        (Fate::Forward, 0),
        "group 0 at 2022: {ev:?}"
    );
    let (fate, ev) = hello_from(&mut r, "10.0.1.5:40000", "192.0.2.10:443", &ch);
    assert_eq!(fate, Fate::Drop, "group 1 at 2023");
    assert_eq!(ev[0].rule.as_deref(), Some("t-dated"));
    // Group 0's date moved (admin `POST /date`): its next flow decides at the new date.
    r.groups[0] = at("2023-02-01");
    let (fate, _) = hello_from(&mut r, "10.0.0.5:40001", "192.0.2.10:443", &ch);
    assert_eq!(fate, Fate::Drop, "group 0 moved to 2023");
    // Without per-group moments every group decides at the default moment.
    r.groups.clear();
    let (fate, _) = hello_from(&mut r, "10.0.1.5:40002", "192.0.2.10:443", &ch);
    assert_eq!(fate, Fate::Forward, "the default, 2021");
}

#[test]
fn an_ech_hello_is_dropped_and_the_same_name_without_ech_passes() {
    use crate::sniff::client_hello::tests::{hello, records, sni_ext};
    let plain = records(&hello(&[(0, sni_ext("ech.example"))]), 16384);
    let with_ech = records(
        &hello(&[(0, sni_ext("ech.example")), (0xfe0d, vec![0; 120])]),
        16384,
    );
    let mut r = Run::new(true);
    let (fate, ev) = hello_from(&mut r, "10.0.0.1:40000", "192.0.2.10:443", &plain);
    assert_eq!((fate, ev.len()), (Fate::Forward, 0), "{ev:?}");
    let (fate, ev) = hello_from(&mut r, "10.0.0.1:40001", "192.0.2.10:443", &with_ech);
    assert_eq!(fate, Fate::Drop);
    assert_eq!(
        (ev[0].action, ev[0].technique, ev[0].rule.as_deref()),
        ("drop", Some("tls-drop"), Some("t-ech"))
    );
}

#[test]
fn a_ports_rule_applies_on_its_port_only() {
    let mut r = Run::new(true);
    let ch = rustls_client_hello("port.example");
    let (fate, ev) = hello_from(&mut r, "10.0.0.1:40000", "192.0.2.10:443", &ch);
    assert_eq!(fate, Fate::Drop, "tcp/443");
    assert_eq!(ev[0].rule.as_deref(), Some("t-port"));
    let (fate, ev) = hello_from(&mut r, "10.0.0.1:40001", "192.0.2.10:8443", &ch);
    assert_eq!((fate, ev.len()), (Fate::Forward, 0), "tcp/8443: {ev:?}");
}

#[test]
fn an_hours_rule_follows_the_wall_clock_on_a_simulated_day() {
    let mut r = Run::new(true);
    let ch = rustls_client_hello("hours.example");
    // 2024-01-01T07:30Z is 10:30 at +03:00 (inside 09:00-17:00); 15:30Z is 18:30.
    let morning = 1_704_094_200;
    r.unix = Some(morning);
    let (fate, _) = hello_from(&mut r, "10.0.0.1:40000", "192.0.2.10:443", &ch);
    assert_eq!(fate, Fate::Drop, "10:30 local");
    r.unix = Some(morning + 8 * 3600);
    let (fate, _) = hello_from(&mut r, "10.0.0.1:40001", "192.0.2.10:443", &ch);
    assert_eq!(fate, Fate::Forward, "18:30 local");
    r.unix = None;
    let (fate, _) = hello_from(&mut r, "10.0.0.1:40002", "192.0.2.10:443", &ch);
    assert_eq!(
        fate,
        Fate::Forward,
        "time of day unknown: no `hours` rule applies"
    );
}

#[test]
fn a_mobile_group_gets_the_allowlist_by_name_or_address_and_its_isp_blockpage() {
    let mut r = Run::new(true);
    r.policy = grouped(&[None, Some("mobile")]);
    let other = rustls_client_hello("other.example");
    let (fate, _) = hello_from(&mut r, "10.0.0.5:40000", "192.0.2.10:443", &other);
    assert_eq!(fate, Fate::Forward, "home ISP: no allowlist");
    let (fate, ev) = hello_from(&mut r, "10.0.1.5:40000", "192.0.2.10:443", &other);
    assert_eq!(fate, Fate::Drop, "mobile: not on the allowlist");
    assert_eq!(ev[0].rule.as_deref(), Some("t-mobile-allowlist"));
    let vk = rustls_client_hello("vk.example");
    let (fate, _) = hello_from(&mut r, "10.0.1.5:40001", "192.0.2.10:443", &vk);
    assert_eq!(fate, Fate::Forward, "allowed by name");
    let (fate, _) = hello_from(&mut r, "10.0.1.5:40002", "192.0.2.99:443", &other);
    assert_eq!(fate, Fate::Forward, "allowed by address");
    // A blockpage from the mobile ISP's own page.
    let c = Conn {
        c: "10.0.1.5:40003".parse().unwrap(),
        s: "192.0.2.10:80".parse().unwrap(),
    };
    r.handshake(&c);
    let req = b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n";
    let (fate, inj) = r.feed(&c.data(0, req));
    assert_eq!(fate, Fate::Drop);
    let (_, t) = tcp_of(&inj[0].1);
    let body = std::str::from_utf8(t.payload).unwrap();
    assert!(
        body.contains("Location: http://blocked.mobile.example/\r\n"),
        "{body}"
    );
}

#[test]
fn a_tracked_flow_is_small_and_an_idle_one_holds_no_buffer() {
    // The flow table's memory is per flow: its key (38 bytes in the table), this state, and
    // what it boxes; a flow that has sent no data yet boxes nothing.
    assert!(
        std::mem::size_of::<FlowState>() <= 88,
        "{}",
        std::mem::size_of::<FlowState>()
    );
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.10:443");
    let (syn, synack, ack) = (c.syn(), c.synack(), c.ack());
    r.feed(&Conn::new("192.0.2.11:443").syn()); // the table's first insert is not counted
    let info = allocation_counter::measure(|| {
        for p in [&syn, &synack, &ack] {
            r.feed(p);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(r.engine.flows(), 2);
}

/// A detector that never decides: the engine keeps feeding it up to `MAX_PACKETS`.
#[derive(Debug)]
struct Undecided;

impl Detector for Undecided {
    fn name(&self) -> &'static str {
        "openvpn"
    }
    fn detect(&self, _: &detect::Flow<'_>) -> detect::Outcome {
        Err(detect::Incomplete)
    }
}

#[test]
fn detector_input_is_bounded_per_flow_and_in_total() {
    let budget = 128 * 1024;
    let cfg = EngineConfig {
        total_detect: budget,
        ..EngineConfig::default()
    };
    let mut r = Run::with(true, cfg);
    r.engine = Engine::with_detectors(r.engine.ctx.cfg.clone(), vec![Box::new(Undecided)]);
    // Per flow: at most MAX_PACKETS packets of DETECT_KEEP bytes each, however much it sends.
    let c = Conn::new("192.0.2.10:5000");
    r.handshake(&c);
    let per_packet = DETECT_KEEP + DETECT_OVERHEAD;
    let mut most = 0;
    for i in 0..100u32 {
        assert_eq!(r.feed(&c.data(i * 3000, &[0x42; 3000])).0, Fate::Forward);
        most = most.max(r.engine.detect_bytes());
    }
    let bound = detect::MAX_PACKETS * per_packet + DETECT_OVERHEAD;
    assert!(most <= bound && most > bound / 2, "{most} of {bound}");
    let after = r.engine.detect_bytes();
    assert_eq!(after, 0, "the detectors gave up after MAX_PACKETS: freed");
    // In total: many undecided flows fill the budget and no more; the rest go undetected.
    for port in 0..200u16 {
        let c = Conn {
            c: SocketAddr::from(([10, 0, 0, 1], 30000 + port)),
            s: "192.0.2.10:5000".parse().unwrap(),
        };
        r.handshake(&c);
        r.feed(&c.data(0, &[0x42; 3000]));
        assert!(
            r.engine.detect_bytes() <= budget,
            "{}",
            r.engine.detect_bytes()
        );
    }
    let held = r.engine.detect_bytes();
    assert!(held > budget - 2 * per_packet, "the budget is used: {held}");
    assert!(r.engine.stats().detect_overflow > 0);
    // The spent detector budget never keeps a name from being read.
    let c = Conn {
        c: "10.0.0.2:30000".parse().unwrap(),
        s: "192.0.2.10:443".parse().unwrap(),
    };
    r.handshake(&c);
    let ch = rustls_client_hello("blocked.example");
    assert_eq!(
        r.feed(&c.data(0, &ch)).0,
        Fate::Drop,
        "the name is still read"
    );
    r.engine.finish(&mut r.events);
    assert_eq!(r.engine.detect_bytes(), 0, "every flow's buffers returned");
}

/// A real DTLS 1.2 ClientHello: the first datagram of `openssl s_client -dtls1_2 -servername
/// dtls.example` (OpenSSL 3.0), captured on a UDP socket.
const OPENSSL_DTLS_HELLO: &[u8] = include_bytes!("../../tests/data/openssl-dtls-client-hello.bin");

use crate::inpath::testdata::udp_datagram as udp;

#[test]
fn a_ja4_rule_applies_to_a_dtls_client_hello() {
    let h = client_hello::parse_dtls(OPENSSL_DTLS_HELLO)
        .unwrap()
        .unwrap();
    let ja4 = h.ja4();
    assert!(
        ja4.as_str().starts_with("dd2d"),
        "DTLS 1.2 with an SNI: {ja4:?}"
    );
    // A rule on the capture's fingerprint (as a lab reads it off its own client), for one
    // server address.
    let text = RULES.replace("REASSEMBLE", "true")
        + &format!(
            "[[rule]]\nid = \"t-dtls-ja4\"\nips = [\"192.0.2.80/32\"]\nports = [\"udp/1-65535\"]\nja4 = [\"{}\"]\ntechniques = [\"ip-drop\"]\n",
            ja4.as_str()
        );
    let with_rule = || {
        let file = RuleSet::parse_str(Path::new("test.toml"), &text).unwrap();
        let nets = [ClientNet {
            net: "10.0.0.0/8".parse().unwrap(),
            jurisdiction: "ru".into(),
        }];
        Policy::compile(&RuleSet { files: vec![file] }, &nets).unwrap()
    };
    // The same hello with its first cipher suite changed: another JA4.
    let mut other = OPENSSL_DTLS_HELLO.to_vec();
    let first_cipher = 13 + 12 + 2 + 32 + 1 + 1 + 2;
    other[first_cipher..first_cipher + 2].copy_from_slice(&[0x00, 0x9c]);
    let o = client_hello::parse_dtls(&other).unwrap().unwrap();
    assert_ne!(o.ja4(), h.ja4());
    for (hello, server, dropped) in [
        (OPENSSL_DTLS_HELLO, "192.0.2.80:4444", true),
        (&other[..], "192.0.2.80:4444", false),
        (OPENSSL_DTLS_HELLO, "192.0.2.81:4444", false),
    ] {
        let mut r = Run::new(true);
        r.policy = with_rule();
        let (fate, inj) = r.feed(&udp("10.0.0.1:40000", server, hello));
        assert_eq!((fate == Fate::Drop, inj.len()), (dropped, 0), "{server}");
        // The flow stays dropped both ways (or passing).
        let later = r
            .feed(&udp(
                server,
                "10.0.0.1:40000",
                b"\x16\xfe\xfd server flight",
            ))
            .0;
        assert_eq!(later == Fate::Drop, dropped);
        let e = r.events.iter().find(|e| e.rule.is_some());
        if dropped {
            let e = e.expect("a decision");
            assert_eq!(
                (e.action, e.technique, e.rule.as_deref(), e.target.as_str()),
                ("drop", Some("ip-drop"), Some("t-dtls-ja4"), "dtls.example")
            );
        } else {
            assert!(e.is_none(), "{:?}", r.events);
        }
    }
}

/// A STUN binding request and pion's default DTLS ClientHello, the first two client
/// datagrams of `tests/data/webrtc/pion-datachannel.pcap`.
fn webrtc_datagrams() -> (Vec<u8>, Vec<u8>) {
    let mut d = include_str!("../../tests/data/webrtc/stun-then-dtls-hello.hex")
        .lines()
        .map(crate::detect::testutil::hex);
    (d.next().unwrap(), d.next().unwrap())
}

#[test]
fn a_webrtc_hello_after_stun_is_read_from_either_side_and_the_snowflake_rule_drops_it() {
    let (stun, hello) = webrtc_datagrams();
    let shipped = || {
        let nets = [ClientNet {
            net: "10.0.0.0/8".parse().unwrap(),
            jurisdiction: "ru".into(),
        }];
        Policy::compile(&RuleSet::embedded().unwrap(), &nets).unwrap()
    };
    let (user, proxy) = ("10.0.0.1:40000", "198.51.100.20:50000");
    // The censored user starts the STUN checks; the DTLS hello comes from the proxy (the SDP
    // answerer, as Snowflake's proxies are), or from the user.
    for (day, from_proxy, dropped) in [
        ("2026-03-30", true, true),
        ("2026-03-30", false, true),
        ("2026-03-29", true, false),
    ] {
        let mut r = Run::new(true);
        r.policy = shipped();
        r.at = at(day);
        assert_eq!(r.feed(&udp(user, proxy, &stun)).0, Fate::Forward);
        assert_eq!(r.feed(&udp(proxy, user, &stun)).0, Fate::Forward);
        let pkt = if from_proxy {
            udp(proxy, user, &hello)
        } else {
            udp(user, proxy, &hello)
        };
        let case = format!("{day} from the proxy: {from_proxy}");
        assert_eq!(r.feed(&pkt).0 == Fate::Drop, dropped, "{case}");
        let later = r
            .feed(&udp(user, proxy, b"\x17\xfe\xfd application data"))
            .0;
        assert_eq!(
            later == Fate::Drop,
            dropped,
            "{case}: the flow stays dropped"
        );
        let rule = r.events.iter().find_map(|e| e.rule.as_deref());
        assert_eq!(rule, dropped.then_some("ru-snowflake-dtls-2026"), "{case}");
    }
}

#[test]
fn a_reset_engine_starts_over_like_a_new_one() {
    let mut r = Run::new(true);
    let c = Conn::new("192.0.2.12:443");
    r.handshake(&c);
    let hello = rustls_client_hello("residual.example");
    assert_eq!(r.feed(&c.data(0, &hello)).0, Fate::Drop);
    let again = Conn {
        c: "10.0.0.1:40009".parse().unwrap(),
        s: c.s,
    };
    assert_eq!(r.feed(&again.syn()).0, Fate::Drop, "residual block");
    let mut events = Vec::new();
    r.engine.finish(&mut events);
    r.engine.reset();
    assert_eq!(r.engine.stats(), Stats::default());
    assert_eq!((r.engine.flows(), r.engine.held_bytes()), (0, 0));
    // No residual block any more; the same flow is decided afresh, as by a new engine.
    r.events.clear();
    r.handshake(&c);
    assert_eq!(r.feed(&c.data(0, &hello)).0, Fate::Drop);
    assert_eq!(r.events.len(), 1, "{:?}", r.events);
    assert_eq!(r.events[0].technique, Some("tls-reset"));
    assert_eq!(r.engine.stats().flows, 1);
}
