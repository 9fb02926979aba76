//! Operations tests with the real `blocklab serve` binary on loopback: the admin listener
//! (`/healthz`, `/metrics`, `/decide`, `POST /reload`, bearer token), SIGHUP reload, the
//! decision log after SIGTERM, start-up failures (unwritable log, port in use), a reload under
//! DNS load, and faults (upstream down, origin unreachable, missing import). The upstream is a
//! real `dnsmasq`; a missing tool fails the test, it never skips.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, require, serve_refuses, Blocklab, Dnsmasq, Gateway};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

// ---------------------------------------------------------------------------------------------
// Harness

/// The gateway in-process on `config` with `rules` as the lab's rules file.
fn lab(config: &str, rules: &str) -> Gateway {
    Gateway::start(config, &[("lab.toml", rules)])
}

/// The gateway as the real binary on `config` with `rules`, once `listeners` are bound.
fn binary(config: &str, rules: &str, listeners: &[&str]) -> Blocklab {
    Blocklab::start(config, &[("lab.toml", rules)], listeners)
}

/// A fresh upstream and the gateway in-process on its [`config`] (with `extra`) and `rules`.
fn dns_lab(extra: &str, rules: &str) -> (Dnsmasq, Gateway) {
    let up = upstream();
    let gw = lab(&config(up.addr, extra), rules);
    (up, gw)
}

/// Asserts the admin's counts of good and failed reloads (`metrics`: its `/metrics` page).
fn assert_reloads(metrics: &str, ok: f64, failed: f64) {
    let ok_failed = (
        metric(metrics, "blocklab_reloads_ok_total"),
        metric(metrics, "blocklab_reloads_failed_total"),
    );
    assert_eq!(ok_failed, (ok, failed), "{metrics}");
}

/// A fresh upstream and the binary on [`config`] (with `extra`) and `rules`, once its DNS/UDP
/// and admin listeners are bound.
fn dns_binary(extra: &str, rules: &str) -> (Dnsmasq, Blocklab) {
    let up = upstream();
    let gw = binary(&config(up.addr, extra), rules, &["dns/udp", "admin"]);
    (up, gw)
}

/// The upstream: a dnsmasq answering `allowed.test`, `probe.test` and `other.test`.
fn upstream() -> Dnsmasq {
    Dnsmasq::config()
        .hosts("198.51.100.7 allowed.test\n198.51.100.20 probe.test\n198.51.100.21 other.test\n")
        .arg("--dns-forward-max=1000")
        .start()
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// One A query over UDP from 127.0.0.1; the parsed answer, or `None` on timeout.
fn ask(server: SocketAddr, name: &str, wait: Duration) -> Option<Message> {
    ask_from("127.0.0.1:0", server, name, wait)
}

fn ask_from(bind: &str, server: SocketAddr, name: &str, wait: Duration) -> Option<Message> {
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(&query(0x4242, name), server).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn rcode(server: SocketAddr, name: &str) -> ResponseCode {
    ask(server, name, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer for {name}"))
        .response_code()
}

/// A raw HTTP/1.1 request to the admin listener: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the metric line starting with `prefix` (exact series), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const JURISDICTION: &str = r#"
[jurisdiction]
code = "lab"
name = "Test lab"
utc_offset = "+00:00"
"#;

/// Good rules that block `probe.test` at DNS (NXDOMAIN).
fn rules_block_probe() -> String {
    format!(
        "{JURISDICTION}\n[[rule]]\nid = \"lab-probe\"\ndomains = [\"probe.test\"]\ntechniques = [\"dns-nxdomain\"]\n"
    )
}

/// Good rules that block only `other.test` (so `probe.test` resolves).
fn rules_allow_probe() -> String {
    format!(
        "{JURISDICTION}\n[[rule]]\nid = \"lab-other\"\ndomains = [\"other.test\"]\ntechniques = [\"dns-nxdomain\"]\n"
    )
}

/// Rules with an unknown technique on line 9 (lint error): would unblock `probe.test` if taken.
fn rules_broken() -> String {
    format!(
        "{JURISDICTION}\n[[rule]]\nid = \"lab-other\"\ndomains = [\"other.test\"]\ntechniques = [\"dns-bogus\"]\n"
    )
}

/// Config: loopback 127.0.0.1 mapped to `lab`, DNS and admin on port 0, plus `extra`.
fn config(up: SocketAddr, extra: &str) -> String {
    config_dns(up, "", extra)
}

/// [`config`] with `dns_extra` keys in `[dns]`.
fn config_dns(up: SocketAddr, dns_extra: &str, extra: &str) -> String {
    format!(
        "date = \"2024-01-01\"\nrules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{up}\"]\n{dns_extra}[admin]\nlisten = \"127.0.0.1:0\"\n{extra}"
    )
}

fn write_rules(dir: &tempfile::TempDir, text: &str) {
    std::fs::write(dir.path().join("rules/lab.toml"), text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Admin listener

#[test]
fn healthz_and_metrics_move_with_real_queries() {
    let (_up, gw) = dns_lab("", &rules_block_probe());
    let admin = gw.addr("admin");
    assert_eq!(http(admin, "GET", "/healthz", None), (200, "ok\n".into()));
    let before = http(admin, "GET", "/metrics", None).1;
    let blocked = "blocklab_decisions_total{jurisdiction=\"lab\",layer=\"dns\",verdict=\"block\",technique=\"dns-nxdomain\",rule=\"lab-probe\"}";
    assert_eq!(metric(&before, blocked), 0.0, "{before}");

    let dns = gw.addr("dns/udp");
    for _ in 0..3 {
        assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    }
    assert_eq!(rcode(dns, "allowed.test"), ResponseCode::NoError);
    // 127.0.0.2 is in no configured network: refused and counted.
    let refused = ask_from("127.0.0.2:0", dns, "allowed.test", Duration::from_secs(3))
        .expect("an answer for the unmapped client");
    assert_eq!(refused.response_code(), ResponseCode::Refused);
    assert!(refused.answers().is_empty());
    // A malformed packet (a truncated header): counted.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&[0x12, 0x34, 0x01], dns).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let after = http(admin, "GET", "/metrics", None).1;
    assert_eq!(metric(&after, blocked), 3.0, "{after}");
    assert_eq!(
        metric(
            &after,
            "blocklab_decisions_total{jurisdiction=\"lab\",layer=\"dns\",verdict=\"allow\",technique=\"\",rule=\"\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "blocklab_refused_clients_total"),
        1.0,
        "{after}"
    );
    assert_eq!(metric(&after, "blocklab_malformed_total"), 1.0, "{after}");
    assert!(
        metric(&after, "blocklab_dns_queries_total") >= 4.0,
        "{after}"
    );
    assert!(after.contains("# TYPE blocklab_upstream_latency_seconds histogram"));
}

#[test]
fn decide_is_the_same_json_as_check() {
    let (_up, gw) = dns_lab("", &rules_block_probe());
    let admin = gw.addr("admin");
    for target in ["probe.test", "allowed.test", "https%3A%2F%2Fprobe.test%2Fx"] {
        let (status, body) = http(
            admin,
            "GET",
            &format!("/decide?client=127.0.0.1&target={target}&at=2024-01-01"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let decoded = target.replace("%3A", ":").replace("%2F", "/");
        let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
            .args([
                "check",
                "--json",
                "--client",
                "127.0.0.1",
                "--at",
                "2024-01-01",
            ])
            .arg("--config")
            .arg(gw.dir.path().join("blocklab.toml"))
            .arg(&decoded)
            .output()
            .unwrap();
        let cli: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let web: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(web, cli, "{decoded}");
    }
    let (status, body) = http(
        admin,
        "GET",
        "/decide?client=127.0.0.1&target=probe.test",
        None,
    );
    assert_eq!(status, 200);
    assert!(body.contains("lab-probe"), "{body}");
    // A client in no network and a missing target are errors, not panics.
    assert_eq!(
        http(
            admin,
            "GET",
            "/decide?client=10.9.9.9&target=probe.test",
            None
        )
        .0,
        400
    );
    assert_eq!(http(admin, "GET", "/decide?client=127.0.0.1", None).0, 400);
}

#[test]
fn reload_switches_on_good_rules_and_keeps_the_old_policy_on_broken_ones() {
    let (_up, gw) = dns_lab("", &rules_allow_probe());
    let (admin, dns) = (gw.addr("admin"), gw.addr("dns/udp"));
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NoError);
    assert_eq!(rcode(dns, "other.test"), ResponseCode::NXDomain);
    // Only GET is wrong for /reload.
    assert_eq!(http(admin, "GET", "/reload", None).0, 405);

    write_rules(&gw.dir, &rules_block_probe());
    assert_eq!(http(admin, "POST", "/reload", None).0, 200);
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    assert_eq!(rcode(dns, "other.test"), ResponseCode::NoError);

    write_rules(&gw.dir, &rules_broken());
    let (status, body) = http(admin, "POST", "/reload", None);
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("lab.toml:10:") && e.contains("dns-bogus")),
        "{errors:?}"
    );
    // Every error is also logged with its place.
    gw.wait_log(&["reload failed", "lab.toml:10:"]);
    // The old (blocking) policy keeps serving.
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    assert_eq!(rcode(dns, "other.test"), ResponseCode::NoError);

    let m = http(admin, "GET", "/metrics", None).1;
    assert_reloads(&m, 1.0, 1.0);
}

#[test]
fn a_missing_import_at_reload_keeps_the_old_policy() {
    let (_up, gw) = dns_lab("", &rules_block_probe());
    let (admin, dns) = (gw.addr("admin"), gw.addr("dns/udp"));
    let with_import = format!(
        "{JURISDICTION}\n[[rule]]\nid = \"lab-list\"\nimport = {{ path = \"gone.txt\", format = \"domains\" }}\ntechniques = [\"dns-nxdomain\"]\n"
    );
    write_rules(&gw.dir, &with_import);
    let (status, body) = http(admin, "POST", "/reload", None);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("gone.txt"), "{body}");
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
}

#[test]
fn the_token_is_required_when_configured() {
    let (_up, gw) = dns_lab("token = \"s3cret\"\n", &rules_block_probe());
    let admin = gw.addr("admin");
    for (m, p) in [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/reload"),
        ("GET", "/decide?client=127.0.0.1&target=probe.test"),
    ] {
        assert_eq!(http(admin, m, p, None).0, 401, "{m} {p}");
        assert_eq!(http(admin, m, p, Some("wrong")).0, 401, "{m} {p}");
    }
    assert_eq!(http(admin, "GET", "/healthz", Some("s3cret")).0, 200);
    assert_eq!(http(admin, "POST", "/reload", Some("s3cret")).0, 200);
    let m = http(admin, "GET", "/metrics", Some("s3cret")).1;
    // The unauthorised reload never ran.
    assert_eq!(metric(&m, "blocklab_reloads_ok_total"), 1.0, "{m}");
}

#[test]
fn sighup_reloads_the_rules() {
    let (_up, gw) = dns_binary("", &rules_allow_probe());
    let dns = gw.addr("dns/udp");
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NoError);
    write_rules(&gw.dir, &rules_block_probe());
    gw.signal("HUP");
    gw.wait_log(&["policy reloaded"]);
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    // A broken set on SIGHUP: logged, old policy kept.
    write_rules(&gw.dir, &rules_broken());
    gw.signal("HUP");
    gw.wait_log(&["reload failed", "lab.toml:10:"]);
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
}

// ---------------------------------------------------------------------------------------------
// Decision log and start-up failures

#[test]
fn every_answered_query_is_in_the_decision_log_after_sigterm() {
    let (_up, mut gw) = dns_binary("[log]\npath = \"decisions.jsonl\"\n", &rules_block_probe());
    let dns = gw.addr("dns/udp");
    let mut answered = 0;
    for i in 0..300 {
        let name = if i % 2 == 0 {
            "probe.test"
        } else {
            "allowed.test"
        };
        if ask(dns, name, Duration::from_secs(3)).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 300);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let text = std::fs::read_to_string(gw.dir.path().join("decisions.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 300, "{text}");
    let blocked: Vec<_> = events.iter().filter(|e| e["verdict"] == "block").collect();
    assert_eq!(blocked.len(), 150);
    let e = blocked[0];
    assert_eq!(e["layer"], "dns");
    assert_eq!(e["jurisdiction"], "lab");
    assert_eq!(e["rule"], "lab-probe");
    assert_eq!(e["technique"], "dns-nxdomain");
    assert!(e["target"].as_str().unwrap().starts_with("probe.test"));
    assert!(e["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(e["time"].as_str().unwrap().starts_with("20"));
}

#[test]
fn an_unwritable_log_directory_stops_the_gateway_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // The log's parent is a regular file: unwritable even for root.
    std::fs::write(dir.path().join("notadir"), "x").unwrap();
    let port = free_port();
    let cfg = format!(
        "[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"ru\"\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\nupstream = [\"127.0.0.1:9\"]\n[log]\npath = \"notadir/decisions.jsonl\"\n"
    );
    let err = serve_refuses(dir.path(), &cfg);
    assert!(err.contains("cannot open decision log"), "{err}");
    assert!(err.contains("notadir/decisions.jsonl"), "{err}");
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = format!(
        "[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"ru\"\n[http]\nlisten = [\"{addr}\"]\n"
    );
    let err = serve_refuses(tempfile::tempdir().unwrap().path(), &cfg);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Reload under load

#[test]
fn reload_under_load_loses_no_query_and_switches_with_good_reloads() {
    let up = upstream();
    // All load comes from 127.0.0.1: the per-client rate limit is off here (it has its own test).
    let gw = lab(
        &config_dns(up.addr, "rate_limit_qps = 0\n", ""),
        &rules_block_probe(),
    );
    let (admin, dns) = (gw.addr("admin"), gw.addr("dns/udp"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for t in 0..4u16 {
        let (stop, sent, lost, bad) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&lost),
            Arc::clone(&bad),
        );
        clients.push(std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 4096];
            let mut id = t.wrapping_mul(10_000);
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let name = if id % 2 == 0 {
                    "probe.test"
                } else {
                    "allowed.test"
                };
                s.send_to(&query(id, name), dns).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                // Wait for this query's answer (ids are unique per thread).
                loop {
                    match s.recv(&mut buf) {
                        Ok(n) => {
                            let Ok(m) = Message::from_vec(&buf[..n]) else {
                                bad.fetch_add(1, Ordering::Relaxed);
                                break;
                            };
                            if m.id() != id {
                                continue;
                            }
                            let ok = matches!(
                                (name, m.response_code()),
                                ("allowed.test", ResponseCode::NoError)
                                    | (
                                        "probe.test",
                                        ResponseCode::NoError | ResponseCode::NXDomain
                                    )
                            );
                            if !ok {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        Err(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut switches = 0;
    for i in 0..50 {
        // good (allow) / broken / good (block) / broken ...
        let (text, want_status, want) = match i % 4 {
            0 => (rules_allow_probe(), 200, Some(ResponseCode::NoError)),
            2 => (rules_block_probe(), 200, Some(ResponseCode::NXDomain)),
            _ => (rules_broken(), 422, None),
        };
        let before = rcode(dns, "probe.test");
        write_rules(&gw.dir, &text);
        let (status, body) = http(admin, "POST", "/reload", None);
        assert_eq!(status, want_status, "reload {i}: {body}");
        let now = rcode(dns, "probe.test");
        match want {
            Some(w) => {
                assert_eq!(now, w, "reload {i}");
                switches += 1;
            }
            None => assert_eq!(now, before, "broken reload {i} changed the decision"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "reload under load: {sent} queries in {:?}, 50 reloads",
        started.elapsed()
    );
    assert!(sent > 1000, "too little load: {sent}");
    assert_eq!(lost.load(Ordering::Relaxed), 0, "unanswered queries");
    assert_eq!(bad.load(Ordering::Relaxed), 0, "wrong answers");
    assert_eq!(switches, 25);
    let m = http(admin, "GET", "/metrics", None).1;
    assert_reloads(&m, 25.0, 25.0);
    assert!(started.elapsed() < Duration::from_secs(40));
}

// ---------------------------------------------------------------------------------------------
// Faults

#[test]
fn upstream_down_is_servfail_in_bounded_time() {
    // A port with nothing behind it (bound then dropped).
    let dead = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let gw = lab(&config(dead, ""), &rules_block_probe());
    let dns = gw.addr("dns/udp");
    let started = Instant::now();
    let m = ask(dns, "allowed.test", Duration::from_secs(8)).expect("an answer");
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Blocked names never need the upstream.
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    let metrics = http(gw.addr("admin"), "GET", "/metrics", None).1;
    assert!(
        metric(&metrics, "blocklab_upstream_errors_total") >= 1.0,
        "{metrics}"
    );
}

#[test]
fn a_silent_upstream_gives_servfail_in_bounded_time_without_pile_up() {
    // An upstream that takes queries (UDP and TCP) and never answers.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = udp.local_addr().unwrap();
    let _tcp = std::net::TcpListener::bind(silent).unwrap();
    let gw = lab(&config(silent, ""), &rules_block_probe());
    let dns = gw.addr("dns/udp");
    let started = Instant::now();
    let askers: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                ask(dns, &format!("n{i}.allowed.test"), Duration::from_secs(8))
                    .map(|m| m.response_code())
            })
        })
        .collect();
    for a in askers {
        assert_eq!(a.join().unwrap(), Some(ResponseCode::ServFail));
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Blocked names are still answered at once meanwhile.
    let t = Instant::now();
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_through_the_proxy_is_a_502_page() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = "[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\nrules = \"rules\"\n[http]\nlisten = [\"127.0.0.1:0\"]\n[hosts]\n\"gone.test\" = [\"127.0.0.1\"]\n";
    // `rules` must be a top-level key: put it before the tables.
    let cfg = format!(
        "rules = \"rules\"\n{}",
        cfg.replace("rules = \"rules\"\n", "")
    );
    let gw = lab(&cfg, &rules_block_probe());
    let (proxy, url) = (
        format!("http://{}", gw.addr("http")),
        format!("http://gone.test:{}/", dead.port()),
    );
    let out = common::curl(&["-x", &proxy, "--max-time", "10", &url]).await;
    assert_eq!(out.status, 502, "{out:?}");
    let body = String::from_utf8_lossy(&out.body).to_lowercase();
    assert!(body.contains("gone.test"), "{out:?}");
    assert!(out.elapsed < Duration::from_secs(8), "{out:?}");
    // Not an open proxy: a client outside the configured networks gets 403.
    let out = common::curl(&[
        "--interface",
        "127.0.0.2",
        "-x",
        &proxy,
        "--max-time",
        "10",
        &url,
    ])
    .await;
    assert_eq!(out.status, 403, "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn the_dns_rate_limit_refuses_excess_per_client_and_counts_it() {
    let up = upstream();
    let cfg = format!(
        "date = \"2024-01-01\"\nrules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{}\"]\nrate_limit_qps = 5\nrate_limit_burst = 10\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        up.addr
    );
    let gw = lab(&cfg, &rules_block_probe());
    let dns = gw.addr("dns/udp");
    let started = Instant::now();
    let mut answered = 0;
    let mut refused = 0;
    for _ in 0..40 {
        match rcode(dns, "probe.test") {
            ResponseCode::NXDomain => answered += 1,
            ResponseCode::Refused => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // The burst (10) plus at most 5/s for the time the loop took.
    let allowed = 10 + (started.elapsed().as_secs_f64() * 5.0).ceil() as i32 + 1;
    assert!(
        answered >= 10 && answered <= allowed,
        "{answered} answered, {refused} refused"
    );
    assert!(refused >= 40 - allowed, "{refused}");
    // Another client address has its own bucket.
    let other = ask_from("127.0.0.2:0", dns, "probe.test", Duration::from_secs(3)).unwrap();
    assert_eq!(other.response_code(), ResponseCode::NXDomain);
    let m = http(gw.addr("admin"), "GET", "/metrics", None).1;
    assert_eq!(
        metric(&m, "blocklab_rate_limited_total"),
        f64::from(refused),
        "{m}"
    );
    // After a pause the bucket has refilled.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
}

/// Whether the server closed `s` within `wait` (EOF or reset; data before it is ignored).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// 200 slowloris connections (each sends `partial` and stalls) against a listener capped at
/// 20: the excess is closed at once, the 20 held ones within `timeout`, and then the
/// listener serves again (`works` is a real request).
fn flood_and_slowloris(
    gw: &Blocklab,
    addr: SocketAddr,
    partial: &[u8],
    timeout: Duration,
    works: impl Fn() -> bool,
) {
    flood_and_slowloris_capped(gw, addr, 20, partial, timeout, works)
}

/// [`flood_and_slowloris`] against a listener capped at `cap` connections.
fn flood_and_slowloris_capped(
    gw: &Blocklab,
    addr: SocketAddr,
    cap: usize,
    partial: &[u8],
    timeout: Duration,
    works: impl Fn() -> bool,
) {
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(partial);
            s
        })
        .collect();
    let started = Instant::now();
    let mut open = Vec::new();
    let mut closed_fast = 0;
    for mut s in conns.drain(..) {
        if closed_within(&mut s, Duration::from_millis(20)) {
            closed_fast += 1;
        } else {
            open.push(s);
        }
    }
    // The cap, give or take a few connections the server had not accepted yet.
    let rejected = 200 - cap - 10;
    assert!(
        closed_fast >= rejected,
        "only {closed_fast} of 200 closed at once"
    );
    assert!(open.len() <= cap + 10, "{} still open", open.len());
    if addr != gw.addr("admin") {
        let m = http(gw.addr("admin"), "GET", "/metrics", None).1;
        assert!(
            metric(&m, "blocklab_connections_rejected_total") >= rejected as f64,
            "{m}"
        );
    }
    // The held ones are closed by the read timeout: nobody holds a slot forever.
    for mut s in open {
        let left = (timeout + Duration::from_secs(3)).saturating_sub(started.elapsed());
        assert!(
            closed_within(&mut s, left),
            "a slowloris connection outlived {timeout:?}"
        );
    }
    assert!(works(), "the listener does not serve after the flood");
}

#[test]
fn dns_tcp_survives_a_connection_flood_and_slowloris() {
    require("dig");
    let up = upstream();
    let gw = binary(
        &config_dns(up.addr, "max_connections = 20\n", ""),
        &rules_block_probe(),
        &["dns/tcp", "admin"],
    );
    let tcp = gw.addr("dns/tcp");
    // Half a length prefix, then nothing.
    flood_and_slowloris(&gw, tcp, &[0], Duration::from_secs(10), || {
        let out = Command::new("dig")
            .args(["+tcp", "+time=3", "+tries=1", "-p", &tcp.port().to_string()])
            .arg(format!("@{}", tcp.ip()))
            .arg("probe.test")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("status: NXDOMAIN")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_survives_a_connection_flood_and_slowloris() {
    let origin = common::Origin::start().await;
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[http]\nlisten = [\"127.0.0.1:0\"]\nidle_secs = 2\nmax_connections = 20\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        common::hosts_table()
    );
    let gw = binary(&cfg, &rules_block_probe(), &["http", "admin"]);
    let proxy = gw.addr("http");
    let url = format!("http://example.org:{}/", origin.http.port());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        flood_and_slowloris(
            &gw,
            proxy,
            b"GET http://example.org/ HTTP/1.1\r\nHost: exa",
            Duration::from_secs(2),
            || {
                let out = handle.block_on(common::curl(&["-x", &format!("http://{proxy}"), &url]));
                out.status == 200
            },
        );
    })
    .await
    .unwrap();
}

#[test]
fn tls_survives_a_connection_flood_and_slowloris() {
    let cfg = "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[tls]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 20\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let gw = binary(cfg, &rules_block_probe(), &["tls", "admin"]);
    let tls = gw.addr("tls");
    // The start of a TLS record header, then nothing.
    flood_and_slowloris(&gw, tls, &[0x16, 0x03], Duration::from_secs(10), || {
        // A fresh connection gets a slot again (it is held, not closed at once).
        let mut s = TcpStream::connect(tls).unwrap();
        s.write_all(&[0x16]).unwrap();
        !closed_within(&mut s, Duration::from_millis(300))
    });
}

// ---------------------------------------------------------------------------------------------
// Watching the rules directory

/// Polls `rcode(dns, name)` for up to `wait` until it is `want`.
fn wait_rcode(dns: SocketAddr, name: &str, want: ResponseCode, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if rcode(dns, name) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_watched_rules_directory_reloads_on_change() {
    let (_up, gw) = dns_lab("[reload]\nwatch = true\n", &rules_allow_probe());
    let dns = gw.addr("dns/udp");
    gw.wait_log(&["watching the rules directory"]);
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NoError);
    write_rules(&gw.dir, &rules_block_probe());
    assert!(wait_rcode(
        dns,
        "probe.test",
        ResponseCode::NXDomain,
        Duration::from_secs(4)
    ));
    // A broken edit is reported and the old policy kept.
    write_rules(&gw.dir, &rules_broken());
    gw.wait_log(&["reload failed", "lab.toml:10:"]);
    assert_eq!(rcode(dns, "probe.test"), ResponseCode::NXDomain);
    let m = http(gw.addr("admin"), "GET", "/metrics", None).1;
    assert_reloads(&m, 1.0, 1.0);
}

#[test]
fn without_watch_a_change_is_not_picked_up() {
    let (_up, gw) = dns_lab("", &rules_allow_probe());
    let dns = gw.addr("dns/udp");
    write_rules(&gw.dir, &rules_block_probe());
    assert!(!wait_rcode(
        dns,
        "probe.test",
        ResponseCode::NXDomain,
        Duration::from_millis(2500)
    ));
}

#[test]
fn the_tcp_relay_survives_a_connection_flood_and_idle_flows() {
    // A forward server that accepts and holds every connection, saying nothing.
    let fwd = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fwd_addr = fwd.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in fwd.incoming() {
            match s {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{fwd_addr}\"\nprotocol = \"tcp\"\nmax_connections = 20\nidle_secs = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    let gw = binary(&cfg, &rules_block_probe(), &["relay/tcp", "admin"]);
    let relay = gw.addr("relay/tcp");
    flood_and_slowloris(&gw, relay, b"\x00", Duration::from_secs(2), || {
        let mut s = TcpStream::connect(relay).unwrap();
        s.write_all(b"x").unwrap();
        !closed_within(&mut s, Duration::from_millis(300))
    });
}

#[test]
fn the_admin_listener_survives_a_connection_flood_and_slowloris() {
    let (_up, gw) = dns_binary("", &rules_block_probe());
    let admin = gw.addr("admin");
    flood_and_slowloris_capped(&gw, admin, 64, b"GET /metr", Duration::from_secs(5), || {
        let (status, body) = http(admin, "GET", "/metrics", None);
        status == 200 && metric(&body, "blocklab_connections_rejected_total") >= 126.0
    });
}

/// A forward server echoing every connection back, for relay tests.
fn echo_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

/// One round trip through a TCP relay to [`echo_server`]: whether `ping` comes back.
fn relays(relay: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(relay) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

#[test]
fn relays_count_refused_clients_and_warn_once() {
    let fwd = echo_server();
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    target
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Only 127.0.0.2 is a client: the test's 127.0.0.1 is refused by both relays.
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.2/32\"]\njurisdiction = \"lab\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{fwd}\"\nprotocol = \"tcp\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{}\"\nprotocol = \"udp\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\npath = \"decisions.jsonl\"\n",
        target.local_addr().unwrap()
    );
    let gw = binary(
        &cfg,
        &rules_block_probe(),
        &["relay/tcp", "relay/udp", "admin"],
    );
    let (tcp, udp) = (gw.addr("relay/tcp"), gw.addr("relay/udp"));
    // Three TCP connections from outside: closed without being relayed.
    for _ in 0..3 {
        let mut s = TcpStream::connect(tcp).unwrap();
        let _ = s.write_all(b"ping");
        assert!(
            closed_within(&mut s, Duration::from_secs(2)),
            "a refused TCP client was kept open"
        );
    }
    // Twenty datagrams from outside: none relayed, each counted.
    let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        outside.send_to(b"hello", udp).unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(
        target.recv_from(&mut buf).is_err(),
        "a refused UDP client was relayed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = http(gw.addr("admin"), "GET", "/metrics", None).1;
        if metric(&m, "blocklab_refused_clients_total") >= 23.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&m, "blocklab_refused_clients_total"), 23.0, "{m}");
    // The warning is rate-limited: one per relay, not one per datagram or connection.
    let log = gw.log();
    let warned = |l: &str| {
        log.lines()
            .filter(|x| x.contains("client not in any [[clients]] network") && x.contains(l))
            .count()
    };
    assert_eq!(warned("relay/udp"), 1, "{log}");
    assert_eq!(warned("relay/tcp"), 1, "{log}");
    // A mapped client is still relayed by both.
    let inside = UdpSocket::bind("127.0.0.2:0").unwrap();
    inside.send_to(b"hello", udp).unwrap();
    let (n, _) = target
        .recv_from(&mut buf)
        .expect("a mapped client is relayed");
    assert_eq!(&buf[..n], b"hello");
}

/// User + system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_the_listeners_back_off_and_recover() {
    require("prlimit");
    let fwd = echo_server();
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{fwd}\"\nprotocol = \"tcp\"\nidle_secs = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    let gw = binary(&cfg, &rules_block_probe(), &["relay/tcp", "admin"]);
    let (relay, admin) = (gw.addr("relay/tcp"), gw.addr("admin"));
    assert!(relays(relay), "the relay does not work before the test");
    // Leave the gateway a few descriptors more than it has open now.
    std::thread::sleep(Duration::from_millis(300));
    let open = std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .unwrap()
        .count();
    let limit = open + 4;
    let ok = Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string()])
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(ok.success(), "prlimit failed");
    // 40 clients: a couple are accepted, then every accept fails with EMFILE.
    let flood: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(relay).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = cpu_ticks(gw.pid());
    std::thread::sleep(Duration::from_secs(2));
    let busy = cpu_ticks(gw.pid()) - t0;
    // A spinning accept loop burns a whole core (~200 ticks in 2 s at 100 Hz).
    assert!(
        busy < 60,
        "{busy} CPU ticks in 2 s while out of descriptors"
    );
    drop(flood);
    // Once descriptors are free again, both listeners serve.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !relays(relay) {
        assert!(
            Instant::now() < deadline,
            "the relay does not serve after the descriptors came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, m) = http(admin, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let errors = metric(&m, "blocklab_accept_errors_total");
    // Backing off (5 ms doubling to 1 s) gives a handful of failed accepts in ~3 s; a
    // spinning loop gives tens of thousands.
    assert!(
        (1.0..200.0).contains(&errors),
        "{errors} accept errors:\n{m}"
    );
    gw.wait_log(&["accept failed; backing off", "relay/tcp"]);
}
