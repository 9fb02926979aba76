//! End-to-end tests of the DNS gateway with real components on loopback only: a real upstream
//! (Debian's `dnsmasq`, serving a small zone from files written here), `blocklab serve` as the
//! real binary on port 0, and real clients (`dig`, `kdig`, and raw sockets speaking the wire
//! format through `hickory-proto`). A missing tool fails the test; it never skips. The gateway
//! runs in-process (`tests/common`), except where a signal is the point.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{require, Dnsmasq, Gateway};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

// ---------------------------------------------------------------------------------------------
// Harness

/// The zone the upstream serves (dnsmasq `addn-hosts` format), TTL 300.
const HOSTS: &str = "\
198.51.100.7 allowed.test
2001:db8::7 allowed.test
198.51.100.8 tlsonly.test
198.51.100.9 blocked-target.test
198.51.100.10 dated.test
198.51.100.11 nx.test
198.51.100.12 blockpage.test
198.51.100.13 drop.test
198.51.100.14 refused.test
198.51.100.15 servfail.test
192.0.2.5 inblocked.test
157.240.1.35 facebook.com
185.193.234.11 linkedin.com
185.193.234.12 rt.com
185.193.234.13 de.rt.com
";

/// A rules file with one rule per DNS technique, plus CNAME, CIDR and date cases.
const LAB_RULES: &str = include_str!("data/rules/dns-lab.toml");

/// The upstream: a dnsmasq serving [`HOSTS`] plus two CNAMEs and two large TXT records.
fn upstream() -> Dnsmasq {
    require("dig");
    // Over 1232 bytes: the upstream truncates it over UDP and hickory retries over TCP.
    let huge = format!(
        "huge.test,{}",
        ["a", "b", "c", "d", "e", "f", "g"]
            .map(|c| format!("\"{}\"", c.repeat(250)))
            .join(",")
    );
    let big = format!(
        "big.test,{}",
        ["x", "y", "z"]
            .map(|c| format!("\"{}\"", c.repeat(250)))
            .join(",")
    );
    Dnsmasq::config()
        .hosts(HOSTS)
        .arg("--cname=alias.test,blocked-target.test")
        .arg("--cname=plain-alias.test,allowed.test")
        .arg(&format!("--txt-record={big}"))
        .arg(&format!("--txt-record={huge}"))
        .start()
}

/// The gateway in-process with `config` (TOML; `rules = "rules"` reaches `rules` if given),
/// DNS decisions logged at debug.
fn start(config: &str, rules: Option<&str>) -> Gateway {
    let rules: Vec<(&str, &str)> = rules.map(|r| ("lab.toml", r)).into_iter().collect();
    Gateway::start_logging(config, &rules, "info,blocklab::dns=debug")
}

/// The gateway as the real binary, for the tests that read the DNS frontend's decision lines
/// (its UDP threads log only in a process of their own).
fn start_binary(config: &str, rules: Option<&str>) -> common::Blocklab {
    let rules: Vec<(&str, &str)> = rules.map(|r| ("lab.toml", r)).into_iter().collect();
    common::Blocklab::start_logging(
        config,
        &rules,
        &["dns/udp", "dns/tcp"],
        "info,blocklab::dns=debug",
    )
}

/// The lab gateway config: [`LAB_RULES`], 127.0.0.1 mapped to `lab`, upstream `up`.
fn lab_config(up: &Dnsmasq, date: &str) -> String {
    format!(
        "date = \"{date}\"\nrules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\", \"::1/128\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\n",
        up.addr
    )
}

/// The lab gateway.
fn lab(up: &Dnsmasq, date: &str) -> Gateway {
    start(&lab_config(up, date), Some(LAB_RULES))
}

/// A gateway on the shipped rules with loopback mapped to `jurisdiction`.
fn shipped(up: &Dnsmasq, jurisdiction: &str, date: &str) -> Gateway {
    start(&shipped_config(up, jurisdiction, date), None)
}

fn shipped_config(up: &Dnsmasq, jurisdiction: &str, date: &str) -> String {
    format!(
        "date = \"{date}\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"{jurisdiction}\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\n",
        up.addr
    )
}

/// What `dig` printed, read back.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    /// RDATA of the answer section, in order.
    answers: Vec<String>,
    /// Types of the answer section, in order.
    types: Vec<String>,
    timed_out: bool,
    raw: String,
}

impl Dig {
    /// Asserts the status and the number of answers (dig's output on failure).
    fn has(&self, status: &str, answers: usize) {
        let got = (self.status.as_str(), self.answers.len());
        assert_eq!(got, (status, answers), "{}", self.raw);
    }

    /// Asserts the status and the answers (dig's output on failure).
    fn answered(&self, status: &str, answers: &[&str]) {
        let got: Vec<&str> = self.answers.iter().map(String::as_str).collect();
        assert_eq!(
            (self.status.as_str(), &got[..]),
            (status, answers),
            "{}",
            self.raw
        );
    }
}

/// Runs `dig @server -p port ARGS` (plus `+time=2 +tries=1` unless given).
fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    run_digger("dig", server, args)
}

fn run_digger(tool: &str, server: SocketAddr, args: &[&str]) -> Dig {
    require(tool);
    let mut cmd = Command::new(tool);
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string());
    if !args.iter().any(|a| a.starts_with("+time")) {
        cmd.arg("+time=2");
    }
    if !args
        .iter()
        .any(|a| a.starts_with("+tries") || a.starts_with("+retry"))
    {
        cmd.arg(if tool == "dig" {
            "+tries=1"
        } else {
            "+retry=0"
        });
    }
    let out = cmd.args(args).output().unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: String::new(),
        flags: Vec::new(),
        answers: Vec::new(),
        types: Vec::new(),
        timed_out: raw.contains("timed out") || raw.contains("no servers could be reached"),
        raw: raw.clone(),
    };
    let mut in_answer = false;
    for line in raw.lines() {
        if let Some(s) = line.split("status: ").nth(1) {
            d.status = s.split(',').next().unwrap_or("").trim().to_string();
        }
        if let Some(f) = line
            .strip_prefix(";; flags: ")
            .or_else(|| line.strip_prefix(";; Flags: "))
        {
            d.flags = f
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() || line.starts_with(";;") {
                in_answer = false;
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                d.types.push(fields[3].to_string());
                d.answers
                    .push(fields[4..].join(" ").trim_matches('"').to_string());
            }
        }
    }
    d
}

/// Sends one raw UDP packet and waits up to `wait` for one response.
fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(packet, server).unwrap();
    let mut buf = [0u8; 65_535];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The "Done when"

#[test]
fn ru_2022_facebook_resolves_linkedin_gets_blockpage_allowed_is_upstreams_answer() {
    let up = upstream();
    let gw = start_binary(&shipped_config(&up, "ru", "2022-03-10"), None);
    // Facebook was blocked by SNI (tls-reset), not DNS: the real address comes back.
    let fb = dig(gw.addr("dns/udp"), &["facebook.com"]);
    fb.answered("NOERROR", &["157.240.1.35"]);
    // LinkedIn is under a dns-blockpage rule: the Rostelecom blockpage address.
    let li = dig(gw.addr("dns/udp"), &["www.linkedin.com"]);
    li.answered("NOERROR", &["95.167.13.50"]);
    // The blockpage for TXT is an empty NOERROR.
    dig(gw.addr("dns/udp"), &["linkedin.com", "TXT"]).has("NOERROR", 0);
    // An allowed name is exactly what the upstream says.
    let direct = dig(up.addr, &["allowed.test", "AAAA"]);
    let via = dig(gw.addr("dns/udp"), &["allowed.test", "AAAA"]);
    assert_eq!(via.answers, direct.answers);
    assert_eq!(via.answers, ["2001:db8::7"]);
    assert!(
        gw.log().contains("rule=\"ru-linkedin\""),
        "the decision is traced with its rule"
    );
}

#[test]
fn eu_rt_com_is_nxdomain_and_the_date_switches_it() {
    let up = upstream();
    let before = shipped(&up, "eu", "2022-03-01");
    let after = shipped(&up, "eu", "2022-03-10");
    for name in ["rt.com", "de.rt.com"] {
        let b = dig(before.addr("dns/udp"), &[name]);
        assert_eq!(b.status, "NOERROR", "{name} before the ban: {}", b.raw);
        assert_eq!(b.answers.len(), 1, "{}", b.raw);
        let a = dig(after.addr("dns/udp"), &[name]);
        assert_eq!(a.status, "NXDOMAIN", "{name} after the ban: {}", a.raw);
        assert!(a.answers.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// One test per technique

#[test]
fn dns_nxdomain_for_every_query_type_and_subdomain() {
    let up = upstream();
    let gw = start_binary(&lab_config(&up, "2022-03-10"), Some(LAB_RULES));
    for (name, t) in [
        ("nx.test", "A"),
        ("nx.test", "AAAA"),
        ("nx.test", "MX"),
        ("nx.test", "TXT"),
        ("nx.test", "HTTPS"),
        ("www.nx.test", "A"),
    ] {
        let d = dig(gw.addr("dns/udp"), &[name, t]);
        assert_eq!(d.status, "NXDOMAIN", "{name} {t}: {}", d.raw);
    }
    assert!(
        gw.log().contains("technique=\"dns-nxdomain\""),
        "{}",
        gw.log()
    );
}

#[test]
fn dns_refused() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    let d = dig(gw.addr("dns/udp"), &["refused.test"]);
    d.has("REFUSED", 0);
}

#[test]
fn dns_servfail() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    let d = dig(gw.addr("dns/udp"), &["servfail.test", "AAAA"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
}

#[test]
fn dns_drop_times_out_and_the_server_keeps_serving() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    let d = dig(gw.addr("dns/udp"), &["drop.test", "+time=1"]);
    assert!(
        d.timed_out && d.status.is_empty(),
        "expected no answer: {}",
        d.raw
    );
    let t = dig(gw.addr("dns/tcp"), &["drop.test", "+tcp", "+time=1"]);
    assert!(t.status.is_empty(), "no answer over TCP either: {}", t.raw);
    assert_eq!(
        dig(gw.addr("dns/udp"), &["allowed.test"]).answers,
        ["198.51.100.7"]
    );
}

#[test]
fn dns_blockpage_answers_a_and_aaaa_with_the_jurisdictions_addresses() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    assert_eq!(
        dig(gw.addr("dns/udp"), &["blockpage.test", "A"]).answers,
        ["10.10.10.10"]
    );
    assert_eq!(
        dig(gw.addr("dns/udp"), &["sub.blockpage.test", "AAAA"]).answers,
        ["2001:db8::10"]
    );
    let mx = dig(gw.addr("dns/udp"), &["blockpage.test", "MX"]);
    mx.has("NOERROR", 0);
}

#[test]
fn blocked_only_at_other_layers_resolves_normally() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    let d = dig(gw.addr("dns/udp"), &["tlsonly.test"]);
    d.answered("NOERROR", &["198.51.100.8"]);
}

// ---------------------------------------------------------------------------------------------
// Answers screened against the policy

#[test]
fn cname_to_a_blocked_name_is_blocked() {
    let up = upstream();
    // The upstream really answers with a CNAME chain...
    let direct = dig(up.addr, &["alias.test"]);
    assert_eq!(direct.types, ["CNAME", "A"], "{}", direct.raw);
    let gw = start_binary(&lab_config(&up, "2022-03-10"), Some(LAB_RULES));
    // ...whose target is blocked with dns-nxdomain, so the alias is too.
    let d = dig(gw.addr("dns/udp"), &["alias.test"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(gw.log().contains("via=\"cname\""), "{}", gw.log());
    // A CNAME to an allowed name is relayed whole.
    let ok = dig(gw.addr("dns/udp"), &["plain-alias.test"]);
    assert_eq!(ok.types, ["CNAME", "A"], "{}", ok.raw);
    assert_eq!(ok.answers, ["allowed.test.", "198.51.100.7"]);
}

#[test]
fn address_in_a_blocked_cidr_is_blocked() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    assert_eq!(dig(up.addr, &["inblocked.test"]).answers, ["192.0.2.5"]);
    let d = dig(gw.addr("dns/udp"), &["inblocked.test"]);
    assert_eq!(
        d.answers,
        ["10.10.10.10"],
        "the CIDR rule's dns-blockpage: {}",
        d.raw
    );
    // Served from the cache the second time: screened again.
    assert_eq!(
        dig(gw.addr("dns/udp"), &["inblocked.test"]).answers,
        ["10.10.10.10"]
    );
}

// ---------------------------------------------------------------------------------------------
// Clients, transports, sizes

#[test]
fn unmapped_client_is_refused() {
    let up = upstream();
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.2/32\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\n",
        up.addr
    );
    let gw = start(&cfg, Some(LAB_RULES));
    let mapped = dig(gw.addr("dns/udp"), &["-b", "127.0.0.2", "allowed.test"]);
    assert_eq!(mapped.answers, ["198.51.100.7"], "{}", mapped.raw);
    for args in [
        ["-b", "127.0.0.1", "allowed.test", "+notcp"],
        ["-b", "127.0.0.1", "allowed.test", "+tcp"],
    ] {
        let d = dig(gw.addr("dns/udp"), &args);
        d.has("REFUSED", 0);
    }
}

#[test]
fn udp_and_tcp_over_ipv4_and_ipv6() {
    let up = upstream();
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\", \"::1/128\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\nupstream = [\"{}\"]\n",
        up.addr
    );
    let gw = start(&cfg, Some(LAB_RULES));
    let (udp, tcp) = (gw.addrs("dns/udp"), gw.addrs("dns/tcp"));
    assert!(
        udp.iter().any(SocketAddr::is_ipv6) && tcp.iter().any(SocketAddr::is_ipv6),
        "{udp:?}"
    );
    assert_eq!((udp.len(), tcp.len()), (2, 2), "{udp:?} {tcp:?}");
    for (&u, &t) in udp.iter().zip(&tcp) {
        assert_eq!(u, t, "UDP and TCP share the address and port");
        assert_eq!(
            dig(u, &["allowed.test", "+notcp"]).answers,
            ["198.51.100.7"],
            "udp {u}"
        );
        assert_eq!(
            dig(t, &["allowed.test", "AAAA", "+tcp"]).answers,
            ["2001:db8::7"],
            "tcp {t}"
        );
        assert_eq!(dig(t, &["nx.test", "+tcp"]).status, "NXDOMAIN", "tcp {t}");
        let k = run_digger("kdig", u, &["allowed.test", "+notcp"]);
        assert_eq!(k.answers, ["198.51.100.7"], "kdig udp {u}: {}", k.raw);
    }
}

#[test]
fn truncation_and_edns_payload_size() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    // The TXT answer is ~790 bytes: over 512 without EDNS -> TC, no records.
    let t = dig(
        gw.addr("dns/udp"),
        &["big.test", "TXT", "+noedns", "+ignore"],
    );
    assert!(t.flags.contains(&"tc".to_string()), "{}", t.raw);
    assert!(t.answers.is_empty());
    // A small EDNS payload is honoured too.
    let t = dig(
        gw.addr("dns/udp"),
        &["big.test", "TXT", "+bufsize=600", "+ignore"],
    );
    assert!(t.flags.contains(&"tc".to_string()), "{}", t.raw);
    assert!(
        t.raw.contains("udp: 4096"),
        "our OPT record is echoed: {}",
        t.raw
    );
    // A large enough one gets the whole answer over UDP.
    let e = dig(
        gw.addr("dns/udp"),
        &["big.test", "TXT", "+bufsize=1232", "+ignore"],
    );
    assert!(!e.flags.contains(&"tc".to_string()), "{}", e.raw);
    assert_eq!(e.answers.len(), 1, "{}", e.raw);
    // dig retries a truncated answer over TCP (same port) and gets it all.
    let r = dig(gw.addr("dns/udp"), &["big.test", "TXT", "+noedns"]);
    assert_eq!(r.answers.len(), 1, "{}", r.raw);
    assert!(r.raw.contains("(TCP)"), "{}", r.raw);
    // An answer the upstream can only give over TCP (1.8 kB) arrives whole over TCP, and
    // over UDP when the client's EDNS size allows it.
    let h = dig(gw.addr("dns/tcp"), &["huge.test", "TXT", "+tcp"]);
    h.has("NOERROR", 1);
    assert!(h.raw.contains("MSG SIZE  rcvd: 18"), "{}", h.raw);
    let h = dig(
        gw.addr("dns/udp"),
        &["huge.test", "TXT", "+bufsize=4096", "+ignore"],
    );
    assert_eq!(h.answers.len(), 1, "{}", h.raw);
    // A query without EDNS gets no OPT record back.
    assert!(!dig(gw.addr("dns/udp"), &["allowed.test", "+noedns"])
        .raw
        .contains("OPT PSEUDOSECTION"));
}

#[test]
fn tcp_pipelines_several_queries_on_one_connection() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    let mut s = TcpStream::connect(gw.addr("dns/tcp")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let asks = [
        (1, "allowed.test.", RecordType::A),
        (2, "nx.test.", RecordType::A),
        (3, "big.test.", RecordType::TXT),
        (4, "blockpage.test.", RecordType::A),
    ];
    for (id, name, t) in asks {
        let q = query(id, name, t);
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(&q);
    }
    s.write_all(&out).unwrap(); // all four in one write
    let mut got = std::collections::HashMap::new();
    for _ in 0..asks.len() {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).unwrap();
        let m = Message::from_vec(&buf).unwrap();
        got.insert(m.id(), m);
    }
    assert_eq!(got[&1].response_code(), ResponseCode::NoError);
    assert_eq!(got[&1].answers().len(), 1);
    assert_eq!(got[&1].queries()[0].name().to_ascii(), "allowed.test.");
    assert_eq!(got[&2].response_code(), ResponseCode::NXDomain);
    assert!(!got[&3].truncated(), "TCP carries the whole TXT");
    assert_eq!(got[&3].answers().len(), 1);
    assert_eq!(got[&4].answers()[0].data().to_string(), "10.10.10.10");
}

// ---------------------------------------------------------------------------------------------
// Bad input, cache, upstream failure, shutdown

#[test]
fn malformed_packets_are_dropped_or_formerr_and_never_stop_the_server() {
    let up = upstream();
    let gw = lab(&up, "2022-03-10");
    let wait = Duration::from_millis(300);
    // Too short for a header: nothing.
    assert_eq!(udp_raw(gw.addr("dns/udp"), &[1, 2, 3], wait), None);
    // A response (QR set): never answered, so two servers cannot loop.
    let mut resp = query(9, "allowed.test.", RecordType::A);
    resp[2] |= 0x80;
    assert_eq!(udp_raw(gw.addr("dns/udp"), &resp, wait), None);
    // A compression loop: FORMERR with the same ID.
    let pkt = [
        0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
    ];
    let r = Message::from_vec(
        &udp_raw(gw.addr("dns/udp"), &pkt, Duration::from_secs(2)).expect("FORMERR"),
    )
    .unwrap();
    assert_eq!((r.id(), r.response_code()), (0xabcd, ResponseCode::FormErr));
    // A bad label length: FORMERR.
    let pkt = [0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', b'b'];
    let r = Message::from_vec(
        &udp_raw(gw.addr("dns/udp"), &pkt, Duration::from_secs(2)).expect("FORMERR"),
    )
    .unwrap();
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    // A burst of pseudo-random garbage, over UDP and TCP.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500 {
        let len = 1 + (i % 200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send_to(&bytes, gw.addr("dns/udp")).unwrap();
    }
    let mut t = TcpStream::connect(gw.addr("dns/tcp")).unwrap();
    let _ = t.write_all(&[0, 40, 1, 2, 3]); // a frame cut short, then the connection closes
    drop(t);
    // Still alive and correct.
    assert_eq!(
        dig(gw.addr("dns/udp"), &["allowed.test"]).answers,
        ["198.51.100.7"]
    );
    assert_eq!(
        dig(gw.addr("dns/tcp"), &["allowed.test", "+tcp"]).answers,
        ["198.51.100.7"]
    );
}

#[test]
fn answers_are_cached_by_ttl_and_a_dead_upstream_means_servfail() {
    let mut up = upstream();
    let gw = lab(&up, "2022-03-10");
    let first = dig(gw.addr("dns/udp"), &["allowed.test"]);
    assert_eq!(first.answers, ["198.51.100.7"]);
    up.kill();
    // The upstream is gone: the cached answer is still served, its TTL counting down.
    std::thread::sleep(Duration::from_millis(1100));
    let cached = dig(gw.addr("dns/udp"), &["allowed.test"]);
    assert_eq!(cached.answers, ["198.51.100.7"], "{}", cached.raw);
    let ttl = |d: &Dig| {
        d.raw
            .lines()
            .find(|l| l.starts_with("allowed.test."))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
    };
    assert!(
        ttl(&cached) < ttl(&first) && ttl(&cached) > Some(290),
        "{:?} then {:?}",
        ttl(&first),
        ttl(&cached)
    );
    // Any case of the name hits the same entry, and the question comes back as asked.
    let mixed = dig(gw.addr("dns/udp"), &["AlLoWeD.TeSt", "+bufsize=1232"]);
    assert_eq!(mixed.answers, ["198.51.100.7"], "{}", mixed.raw);
    assert!(mixed.raw.contains(";AlLoWeD.TeSt."), "{}", mixed.raw);
    assert!(mixed.raw.contains("udp: 4096"), "{}", mixed.raw);
    // A name not in the cache: SERVFAIL, in bounded time.
    let started = Instant::now();
    let d = dig(gw.addr("dns/udp"), &["tlsonly.test", "+time=12"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(started.elapsed() < Duration::from_secs(11));
}

#[test]
fn sigterm_stops_the_gateway_cleanly() {
    let up = upstream();
    // The real binary: the signal is the point.
    let mut gw = common::Blocklab::start(
        &lab_config(&up, "2022-03-10"),
        &[("lab.toml", LAB_RULES)],
        &["dns/udp"],
    );
    // A gateway that is serving (signal handlers are installed before the listeners bind).
    assert_eq!(
        dig(gw.addr("dns/udp"), &["allowed.test"]).answers,
        ["198.51.100.7"]
    );
    gw.signal("TERM");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exit status"
    );
    assert!(gw.log().contains("shutting down"));
}

#[test]
fn config_with_bad_dns_keys_is_rejected_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[dns]\nlisten = [\"127.0.0.1:0\"]\ncache_sise = 5\n";
    assert!(common::serve_refuses(dir.path(), config).contains("cache_sise"));
}

// ---------------------------------------------------------------------------------------------
// The forwarder: coalescing and retransmission, against an upstream the test controls

/// A UDP DNS server on loopback that answers every A question with 198.51.100.99 after `delay`,
/// ignoring the first `drop_first` queries it gets; it counts what it receives.
struct SlowUpstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SlowUpstream {
    fn start(delay: Duration, drop_first: usize) -> SlowUpstream {
        use hickory_proto::op::MessageType;
        use hickory_proto::rr::{rdata::A, RData, Record};
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rec, halt) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let sock = Arc::new(sock);
            let mut buf = [0u8; 4096];
            let mut seen = 0;
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let name = q.queries()[0].name().clone();
                rec.lock().unwrap().push((Instant::now(), name.to_ascii()));
                seen += 1;
                if seen <= drop_first {
                    continue;
                }
                let mut r = Message::new();
                r.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_desired(true)
                    .set_recursion_available(true);
                r.add_query(q.queries()[0].clone());
                r.add_answer(Record::from_rdata(
                    name,
                    60,
                    RData::A(A::new(198, 51, 100, 99)),
                ));
                let bytes = r.to_vec().unwrap();
                let s = Arc::clone(&sock);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = s.send_to(&bytes, peer);
                });
            }
        });
        SlowUpstream {
            addr,
            received,
            stop,
        }
    }

    fn count(&self, name: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

fn gateway_on(up: SocketAddr) -> Gateway {
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{up}\"]\nrate_limit_qps = 0\n"
    );
    start(&cfg, Some(LAB_RULES))
}

#[test]
fn identical_questions_in_flight_share_one_upstream_query() {
    let up = SlowUpstream::start(Duration::from_millis(250), 0);
    let gw = gateway_on(up.addr);
    let server = gw.addr("dns/udp");
    // 30 clients ask for the same name at once (different sockets, IDs and letter case).
    let askers: Vec<_> = (0..30u16)
        .map(|i| {
            std::thread::spawn(move || {
                let name = if i % 2 == 0 {
                    "same.test."
                } else {
                    "SaMe.TeSt."
                };
                let got = udp_raw(
                    server,
                    &query(100 + i, name, RecordType::A),
                    Duration::from_secs(3),
                )
                .expect("an answer");
                let m = Message::from_vec(&got).unwrap();
                (
                    m.id(),
                    m.queries()[0].name().to_ascii(),
                    m.answers()[0].data().to_string(),
                )
            })
        })
        .collect();
    for (i, a) in askers.into_iter().enumerate() {
        let (id, qname, addr) = a.join().unwrap();
        assert_eq!(id, 100 + i as u16, "each client gets its own ID back");
        assert_eq!(
            qname,
            if i % 2 == 0 {
                "same.test."
            } else {
                "SaMe.TeSt."
            }
        );
        assert_eq!(addr, "198.51.100.99");
    }
    assert_eq!(
        up.count("same.test."),
        1,
        "one upstream query for 30 identical questions"
    );
    // A different name is its own query.
    assert_eq!(dig(server, &["other.test"]).answers, ["198.51.100.99"]);
    assert_eq!(up.count("other.test."), 1);
}

#[test]
fn a_lost_upstream_answer_is_retried_well_within_a_second() {
    let up = SlowUpstream::start(Duration::ZERO, 1);
    let gw = gateway_on(up.addr);
    let started = Instant::now();
    let d = dig(gw.addr("dns/udp"), &["lost.test", "+time=3"]);
    let took = started.elapsed();
    assert_eq!(d.answers, ["198.51.100.99"], "{}", d.raw);
    assert_eq!(
        up.count("lost.test."),
        2,
        "the first query was dropped, the retry answered"
    );
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let times: Vec<Instant> = up
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| *t)
        .collect();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(90) && gap < Duration::from_millis(900),
        "retransmitted after {gap:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Extended DNS Errors (opt-in) and the decision log's DNS fields

/// The EDE options (info-code, extra text) of a response.
fn ede_of(bytes: &[u8]) -> Vec<(u16, String)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let m = Message::from_vec(bytes).unwrap();
    let Some(e) = m.extensions() else {
        return Vec::new();
    };
    e.options()
        .get_all(EdnsCode::Unknown(15))
        .into_iter()
        .filter_map(|o| match o {
            EdnsOption::Unknown(15, d) if d.len() >= 2 => Some((
                u16::from_be_bytes([d[0], d[1]]),
                String::from_utf8_lossy(&d[2..]).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

fn edns_query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.set_edns(hickory_proto::op::Edns::new());
    m.to_vec().unwrap()
}

#[test]
fn extended_dns_errors_only_when_enabled() {
    let up = upstream();
    let base = format!(
        "date = \"2022-03-10\"\nrules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\n",
        up.addr
    );
    let wait = Duration::from_secs(3);
    // Off (the default): blocks look like what real censors send, no EDE.
    let off = start(&base, Some(LAB_RULES));
    let r = udp_raw(
        off.addr("dns/udp"),
        &edns_query(1, "nx.test.", RecordType::A),
        wait,
    )
    .unwrap();
    assert_eq!(
        Message::from_vec(&r).unwrap().response_code(),
        ResponseCode::NXDomain
    );
    assert!(ede_of(&r).is_empty(), "EDE without `ede` set");
    let d = dig(off.addr("dns/udp"), &["nx.test"]);
    assert!(!d.raw.contains("EDE"), "{}", d.raw);

    let on = start(&format!("{base}ede = \"censored\"\n"), Some(LAB_RULES));
    for (name, qtype, rule) in [
        ("nx.test.", RecordType::A, "lab-nxdomain"),
        ("refused.test.", RecordType::A, "lab-refused"),
        ("blockpage.test.", RecordType::A, "lab-blockpage"),
        ("alias.test.", RecordType::A, "lab-cname-target"),
    ] {
        let r = udp_raw(on.addr("dns/udp"), &edns_query(2, name, qtype), wait).unwrap();
        assert_eq!(
            ede_of(&r),
            [(16, format!("blocklab rule {rule}"))],
            "{name}"
        );
    }
    // dig shows it as RFC 8914 names it.
    let d = dig(on.addr("dns/udp"), &["nx.test"]);
    assert!(d.raw.contains("EDE: 16 (Censored)"), "{}", d.raw);
    // Not on answers that pass, and never to a client that sent no EDNS.
    let r = udp_raw(
        on.addr("dns/udp"),
        &edns_query(3, "allowed.test.", RecordType::A),
        wait,
    )
    .unwrap();
    assert!(ede_of(&r).is_empty());
    let r = udp_raw(
        on.addr("dns/udp"),
        &query(4, "nx.test.", RecordType::A),
        wait,
    )
    .unwrap();
    let m = Message::from_vec(&r).unwrap();
    assert!(m.extensions().is_none() && m.response_code() == ResponseCode::NXDomain);

    let blocked = start(&format!("{base}ede = \"blocked\"\n"), Some(LAB_RULES));
    let r = udp_raw(
        blocked.addr("dns/udp"),
        &edns_query(5, "nx.test.", RecordType::A),
        wait,
    )
    .unwrap();
    assert_eq!(ede_of(&r)[0].0, 15, "\"blocked\" is INFO-CODE 15");
}

#[test]
fn the_decision_log_names_qtype_answers_latency_and_the_simulated_date() {
    let up = upstream();
    let cfg = format!(
        "date = \"2022-03-10\"\nrules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\n[log]\npath = \"decisions.jsonl\"\n",
        up.addr
    );
    let gw = start(&cfg, Some(LAB_RULES));
    assert_eq!(
        dig(gw.addr("dns/udp"), &["allowed.test", "AAAA"]).answers,
        ["2001:db8::7"]
    );
    assert_eq!(
        dig(gw.addr("dns/udp"), &["allowed.test", "AAAA"]).answers,
        ["2001:db8::7"]
    );
    assert_eq!(
        dig(gw.addr("dns/udp"), &["blockpage.test"]).answers,
        ["10.10.10.10"]
    );
    assert_eq!(
        dig(gw.addr("dns/udp"), &["nx.test", "MX"]).status,
        "NXDOMAIN"
    );
    let path = gw.dir.path().join("decisions.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if v.len() >= 4 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 4, "{lines:?}");
    let (upstream, cached, page, nx) = (&lines[0], &lines[1], &lines[2], &lines[3]);
    for l in &lines {
        assert_eq!(l["date"], "2022-03-10", "{l}");
        assert_eq!(l["layer"], "dns");
        let ms = l["latency_ms"].as_f64().unwrap();
        assert!((0.0..5000.0).contains(&ms), "{l}");
    }
    assert_eq!(
        (
            &upstream["qtype"],
            &upstream["answers"],
            &upstream["verdict"]
        ),
        (
            &"AAAA".into(),
            &serde_json::json!(["2001:db8::7"]),
            &"allow".into()
        )
    );
    assert_eq!(cached["answers"], serde_json::json!(["2001:db8::7"]));
    assert!(
        cached["latency_ms"].as_f64() < upstream["latency_ms"].as_f64(),
        "a cache hit is faster than the upstream: {cached} vs {upstream}"
    );
    assert_eq!(page["answers"], serde_json::json!(["10.10.10.10"]));
    assert_eq!(page["technique"], "dns-blockpage");
    assert_eq!(
        (&nx["qtype"], &nx["answers"]),
        (&"MX".into(), &serde_json::json!([]))
    );
}
