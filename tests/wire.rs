//! The 2026 rule conditions and techniques as the frontends enact them, end to end with the
//! real binary on loopback: `freeze` in the forward proxy (plain and CONNECT) and the
//! transparent listener (curl sees the download stop, no RST), an ECH ClientHello dropped
//! where the same hello without ECH passes, a `ports` condition, per-group simulated dates
//! (one gateway, two client groups on 127.0.0.2 and 127.0.0.3, real `dig -b` and
//! `curl --interface`), and admin `POST /date` moving a date at run time across a reload.
//! A missing `curl` or `dig` fails the tests.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::{curl, pattern, Blocklab, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// freeze

const FREEZE_RULES: &str = include_str!("data/rules/wire-freeze.toml");

fn freeze_config() -> String {
    "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
     [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 30\n\
     [tls]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 30\n\
     [hosts]\n\"freeze.test\" = [\"127.0.0.1\"]\n\"free.test\" = [\"127.0.0.1\"]\n"
        .to_string()
}

/// A frozen download: curl gives up at --max-time (28, not a reset 56 or a short read 18),
/// having received between 16 and 20 kB of the 200 kB.
fn assert_frozen(what: &str, r: &common::CurlOut) {
    assert_eq!(
        r.code, 28,
        "{what}: curl must time out on a frozen flow: {r:?}"
    );
    let n = r.body.len();
    assert!(
        (16_000..=20_000).contains(&n),
        "{what}: {n} bytes received, want 16-20 kB: {r:?}"
    );
    assert!(
        r.body[..] == pattern(200_000)[..n],
        "{what}: the bytes before the freeze are the origin's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stops_downloads_after_16_kb_without_a_reset() {
    let origin = Origin::start().await;
    let gw = Blocklab::start(
        &freeze_config(),
        &[("lab.toml", FREEZE_RULES)],
        &["http", "tls"],
    );
    let proxy = format!("http://{}", gw.addr("http"));
    let hp = origin.http.port();
    let url = format!("http://freeze.test:{hp}/bytes/200000");

    // Control: a name without the rule downloads all 200 kB through the same proxy.
    let free = format!("http://free.test:{hp}/bytes/200000");
    let r = curl(&["-x", &proxy, "--max-time", "10", &free]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(200_000), "the unfrozen body differs");

    // Plain HTTP through the proxy.
    let r = curl(&["-x", &proxy, "--max-time", "3", &url]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_frozen("proxy, plain HTTP", &r);
    gw.wait_log(&["decision=\"freeze\"", "lab-freeze", "after_bytes=16384"]);

    // A CONNECT tunnel (curl -p) carrying the same request.
    let r = curl(&["-p", "-x", &proxy, "--max-time", "3", &url]).await;
    assert_frozen("proxy, CONNECT", &r);

    // The transparent listener, reached straight (its destination is the Host's address).
    let l = gw.addr("tls");
    let to = format!("freeze.test:{hp}:{}:{}", l.ip(), l.port());
    let r = curl(&["--connect-to", &to, "--max-time", "3", &url]).await;
    assert_frozen("transparent listener", &r);
    let to = format!("free.test:{hp}:{}:{}", l.ip(), l.port());
    let r = curl(&["--connect-to", &to, "--max-time", "10", &free]).await;
    assert_eq!((r.code, r.body.len()), (0, 200_000), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// ECH and ports

const CONDITION_RULES: &str = include_str!("data/rules/wire-conditions.toml");

/// A TCP server on `ip:port` that reports what each connection sent within 1.5 s and answers
/// `server-hello` to anything.
async fn recording_server(
    ip: IpAddr,
    port: u16,
) -> std::io::Result<(SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>)> {
    let l = TcpListener::bind((ip, port)).await?;
    let addr = l.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
                while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    if got.is_empty() {
                        let _ = s.write_all(b"server-hello").await;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(got);
            });
        }
    });
    Ok((addr, rx))
}

/// Sends `hello` on `s` and reads for up to 1.5 s: the bytes that came back, and whether the
/// connection ended (EOF or reset) meanwhile.
async fn send_hello(s: &mut TcpStream, hello: &[u8]) -> (Vec<u8>, bool) {
    s.write_all(hello).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"server-hello") {
                    return (got, false);
                }
            }
        }
    }
}

/// Opens a CONNECT tunnel to `target` through `proxy`.
async fn connect_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "proxy closed during CONNECT"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_hellos_are_dropped_and_the_same_hello_without_ech_passes() {
    let (server, mut seen) = recording_server("127.0.0.1".parse().unwrap(), 0)
        .await
        .unwrap();
    let config = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\ndirect_tls_port = {}\n\
         [hosts]\n\"cloudflare-ech.com\" = [\"127.0.0.1\"]\n",
        server.port()
    );
    let gw = Blocklab::start(&config, &[("lab.toml", CONDITION_RULES)], &["http", "tls"]);
    let target = format!("cloudflare-ech.com:{}", server.port());
    let plain = common::crafted_client_hello("cloudflare-ech.com", false);
    let with_ech = common::crafted_client_hello("cloudflare-ech.com", true);

    // Through a CONNECT tunnel: without ECH the hello reaches the server and its answer comes
    // back; with ECH it is swallowed (nothing back, the connection stays open).
    let mut s = connect_tunnel(gw.addr("http"), &target).await;
    let (back, ended) = send_hello(&mut s, &plain).await;
    assert!(back.ends_with(b"server-hello") && !ended, "{back:?}");
    drop(s);
    assert_eq!(
        seen.recv().await.unwrap(),
        plain,
        "the server got the hello"
    );

    let mut s = connect_tunnel(gw.addr("http"), &target).await;
    let (back, ended) = send_hello(&mut s, &with_ech).await;
    assert!(
        back.is_empty() && !ended,
        "swallowed: {back:?}, ended={ended}"
    );
    drop(s);
    assert!(
        seen.recv().await.unwrap().is_empty(),
        "nothing reached the server"
    );
    gw.wait_log(&["decision=\"tls-drop\"", "lab-ech"]);

    // Straight to the transparent listener (destination: the SNI's address).
    let mut s = TcpStream::connect(gw.addr("tls")).await.unwrap();
    let (back, ended) = send_hello(&mut s, &plain).await;
    assert!(back.ends_with(b"server-hello") && !ended, "{back:?}");
    drop(s);
    assert_eq!(seen.recv().await.unwrap(), plain);
    let mut s = TcpStream::connect(gw.addr("tls")).await.unwrap();
    let (back, ended) = send_hello(&mut s, &with_ech).await;
    assert!(
        back.is_empty() && !ended,
        "swallowed: {back:?}, ended={ended}"
    );
    drop(s);
    let reached = tokio::time::timeout(Duration::from_secs(2), seen.recv()).await;
    assert!(
        reached.is_err(),
        "a dropped hello opens no connection to the server: {reached:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ports_condition_blocks_connect_to_443_and_not_8443() {
    // A server on port 8443 of a loopback address of its own (8443 on 127.0.0.1 may be taken).
    let seed = std::process::id();
    let mut bound = None;
    for i in 0..50u32 {
        let x = seed.wrapping_add(i * 7919);
        let ip = IpAddr::from([
            127,
            100 + (x % 100) as u8,
            (x >> 8) as u8,
            1 + (x >> 16) as u8 % 250,
        ]);
        if let Ok(b) = recording_server(ip, 8443).await {
            bound = Some(b);
            break;
        }
    }
    let (server, mut seen) = bound.expect("no loopback address with port 8443 free");
    let config = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n\
         [hosts]\n\"ports.test\" = [\"{}\"]\n",
        server.ip()
    );
    let gw = Blocklab::start(&config, &[("lab.toml", CONDITION_RULES)], &["http"]);
    let hello = common::crafted_client_hello("ports.test", false);

    // :8443 is outside the condition: the hello passes.
    let mut s = connect_tunnel(gw.addr("http"), "ports.test:8443").await;
    let (back, ended) = send_hello(&mut s, &hello).await;
    assert!(back.ends_with(b"server-hello") && !ended, "{back:?}");
    drop(s);
    assert_eq!(seen.recv().await.unwrap(), hello);

    // :443 meets it: reset after the ClientHello, as the rule says.
    let mut s = connect_tunnel(gw.addr("http"), "ports.test:443").await;
    let (back, ended) = send_hello(&mut s, &hello).await;
    assert!(back.is_empty() && ended, "reset: {back:?}, ended={ended}");
    gw.wait_log(&["decision=\"tls-reset\"", "lab-443", "ports.test:443"]);
}

// ---------------------------------------------------------------------------------------------
// per-group dates and POST /date

const DATED_RULES: &str = include_str!("data/rules/wire-dated.toml");

/// One gateway at 2023-01-01 for 127.0.0.1, with group `old` (127.0.0.2) at 2021-06-01 and
/// group `new` (127.0.0.3) at 2025-06-01; DNS (upstream: the discard port, never reached by
/// the blocked answers), proxy and admin (token `s3cret`).
fn dated_config() -> String {
    "date = \"2023-01-01\"\nrules = \"rules\"\n\
     [[clients]]\nname = \"old\"\nnetworks = [\"127.0.0.2/32\"]\njurisdiction = \"lab\"\ndate = \"2021-06-01\"\n\
     [[clients]]\nname = \"new\"\nnetworks = [\"127.0.0.3/32\"]\njurisdiction = \"lab\"\ndate = \"2025-06-01\"\n\
     [[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
     [dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"127.0.0.1:9\"]\n\
     [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n\
     [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\
     [hosts]\n\"dated.test\" = [\"127.0.0.1\"]\n"
        .to_string()
}

/// `dig -b from @server name A`: (status, answers).
fn dig_from(from: &str, server: SocketAddr, name: &str) -> (String, Vec<String>) {
    let out = Command::new("dig")
        .args(["+time=2", "+tries=1", "-b", from])
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, "A"])
        .output()
        .unwrap_or_else(|e| panic!("dig is required (bind9-dnsutils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
        } else if in_answer && (line.trim().is_empty() || line.starts_with(";;")) {
            in_answer = false;
        } else if in_answer {
            if let Some(a) = line.split_whitespace().nth(4) {
                answers.push(a.to_string());
            }
        }
    }
    (status, answers)
}

/// The answer a blockpage gives, and NXDOMAIN.
fn blockpage() -> (String, Vec<String>) {
    ("NOERROR".to_string(), vec!["10.10.10.10".to_string()])
}
fn nxdomain() -> (String, Vec<String>) {
    ("NXDOMAIN".to_string(), vec![])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_serves_two_client_groups_at_their_own_dates() {
    let origin = Origin::start().await;
    let gw = Blocklab::start(
        &dated_config(),
        &[("lab.toml", DATED_RULES)],
        &["dns/udp", "http"],
    );
    let dns = gw.addr("dns/udp");
    assert_eq!(dig_from("127.0.0.2", dns, "dated.test"), blockpage());
    assert_eq!(dig_from("127.0.0.3", dns, "dated.test"), nxdomain());

    // The proxy: the 2025 client is reset on the name, the 2021 client reaches the origin.
    let proxy = format!("http://{}", gw.addr("http"));
    let url = format!("http://dated.test:{}/", origin.http.port());
    let r = curl(&["--interface", "127.0.0.2", "-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("hello from the http origin"));
    let r = curl(&["--interface", "127.0.0.3", "-x", &proxy, &url]).await;
    assert_eq!(r.code, 56, "reset for the 2025 group: {r:?}");
    gw.wait_log(&["decision=\"tls-reset\"", "lab-new", "127.0.0.3"]);
}

/// `POST path` to the admin listener with the bearer token `token`: (status, body).
async fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let url = format!("http://{admin}{path}");
    let auth = format!("Authorization: Bearer {}", token.unwrap_or(""));
    let mut args = vec!["-X", "POST", url.as_str()];
    if token.is_some() {
        args.extend(["-H", auth.as_str()]);
    }
    let r = curl(&args).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_date_moves_a_group_at_run_time_and_the_move_survives_a_reload() {
    let gw = Blocklab::start(
        &dated_config(),
        &[("lab.toml", DATED_RULES)],
        &["dns/udp", "admin"],
    );
    let (dns, admin) = (gw.addr("dns/udp"), gw.addr("admin"));
    let tok = Some("s3cret");
    assert_eq!(dig_from("127.0.0.3", dns, "dated.test"), nxdomain());

    // Behind the token, like /reload.
    let (status, _) = post(admin, "/date?at=2021-06-01&clients=new", None).await;
    assert_eq!(status, 401);
    assert_eq!(dig_from("127.0.0.3", dns, "dated.test"), nxdomain());

    // Bad dates, unknown groups and missing dates are refused and change nothing.
    for bad in [
        "/date?at=2021-02-30&clients=new",
        "/date?at=yesterday",
        "/date?at=2021-06-01&clients=nobody",
        "/date?clients=new",
    ] {
        let (status, body) = post(admin, bad, tok).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{bad}: {body}");
    }
    assert_eq!(dig_from("127.0.0.3", dns, "dated.test"), nxdomain());

    // Move group `new` back to 2021: its clients get the 2021 answer, the others keep theirs.
    let (status, body) = post(admin, "/date?at=2021-06-01&clients=new", tok).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dig_from("127.0.0.3", dns, "dated.test"), blockpage());
    gw.wait_log(&["simulated date moved", "clients=\"new\"", "to=2021-06-01"]);
    let metrics = curl(&[
        "-H",
        "Authorization: Bearer s3cret",
        &format!("http://{admin}/metrics"),
    ])
    .await;
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "blocklab_simulated_date{clients=\"*\"} 20230101",
        "blocklab_simulated_date{clients=\"old\"} 20210601",
        "blocklab_simulated_date{clients=\"new\"} 20210601",
        "blocklab_simulated_date{clients=\"127.0.0.1/32\"} 20230101",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }

    // A reload recompiles the rules; the moved date stays.
    let (status, body) = post(admin, "/reload", tok).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dig_from("127.0.0.3", dns, "dated.test"), blockpage());

    // Without `clients`, every group moves.
    let (status, body) = post(admin, "/date?at=2025-06-01", tok).await;
    assert_eq!(status, 200, "{body}");
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert_eq!(dig_from(from, dns, "dated.test"), nxdomain(), "{from}");
    }
}
