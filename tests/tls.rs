//! The transparent `[tls]` listener end to end: real `curl --connect-to` straight to the
//! listener (no redirect, so the origin is the SNI's / Host's address), and a client in its
//! own network namespace redirected by nftables (skipped only where `ip netns` is missing).

mod common;

use common::{curl, hosts_table, pattern, Gateway, Origin, LAB_RULES};

fn config(date: &str, tls_port: u16) -> String {
    format!(
        "date = \"{date}\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"ru\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\ndirect_tls_port = {tls_port}\n{}",
        hosts_table()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_sni_and_host_blocking() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config("2022-03-10", origin.https.port()), &[]);
    let l = gw.addr("tls");
    let ca = origin.ca.to_str().unwrap();
    let to = |name: &str, port: u16| format!("{name}:{port}:{}:{}", l.ip(), l.port());

    // facebook.com by SNI: reset after the ClientHello.
    let r = curl(&[
        "--connect-to",
        &to("facebook.com", 443),
        "--cacert",
        ca,
        "https://facebook.com/",
    ])
    .await;
    assert_eq!(r.code, 35, "{r:?}");
    gw.wait_log(&["decision=\"tls-reset\"", "tls.sni=\"facebook.com\""]);

    // An allowed name is spliced to its origin, byte for byte (no decryption: the test CA's
    // certificate is the origin's own).
    let r = curl(&[
        "--connect-to",
        &to("example.org", 443),
        "--cacert",
        ca,
        "https://example.org/bytes/300000",
    ])
    .await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(300_000), "spliced body differs");

    // Plain HTTP by Host: the RU redirect for facebook.com, the origin for example.org.
    let hp = origin.http.port();
    let r = curl(&[
        "--connect-to",
        &to("facebook.com", hp),
        &format!("http://facebook.com:{hp}/"),
    ])
    .await;
    assert_eq!((r.code, r.status), (0, 302), "{r:?}");
    assert!(
        r.headers.contains("Location: http://warning.rt.ru/"),
        "{r:?}"
    );
    let r = curl(&[
        "--connect-to",
        &to("example.org", hp),
        &format!("http://example.org:{hp}/bytes/1234"),
    ])
    .await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(1234));

    // Unmapped clients get nothing (reset) and are counted in the log.
    let r = curl(&[
        "--interface",
        "127.0.0.2",
        "--connect-to",
        &to("example.org", 443),
        "--cacert",
        ca,
        "https://example.org/",
    ])
    .await;
    // The reset comes right after the accept: curl sees it while connecting (7) or during
    // the handshake (35, 56), depending on timing.
    assert!([7, 35, 56].contains(&r.code), "{r:?}");
    gw.wait_log(&["decision=\"refused\"", "127.0.0.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_before_the_block_date_passes() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config("2022-01-01", origin.https.port()), &[]);
    let l = gw.addr("tls");
    let to = format!("facebook.com:443:{}:{}", l.ip(), l.port());
    let r = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        origin.ca.to_str().unwrap(),
        "https://facebook.com/bytes/777",
    ])
    .await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(777));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tls_drop_hangs_until_the_client_gives_up() {
    let origin = Origin::start().await;
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\ndirect_tls_port = {}\n{}",
        origin.https.port(),
        hosts_table()
    );
    let gw = Gateway::start(&cfg, &[("lab.toml", LAB_RULES)]);
    let l = gw.addr("tls");
    let to = format!("drop.example:443:{}:{}", l.ip(), l.port());
    let r = curl(&[
        "--connect-to",
        &to,
        "--max-time",
        "2",
        "--cacert",
        origin.ca.to_str().unwrap(),
        "https://drop.example/",
    ])
    .await;
    assert_eq!(r.code, 28, "{r:?}");
    gw.wait_log(&["decision=\"tls-drop\"", "lab-drop"]);
}

/// A lab client in its own network namespace, routed to the host over a veth pair; the host
/// redirects its TCP to the origin port into the `[tls]` listener with nftables, so the
/// gateway learns the original destination from `SO_ORIGINAL_DST`.
struct Netns {
    ns: String,
    table: String,
    /// Host side address.
    host: std::net::IpAddr,
    /// Client side address.
    client: std::net::IpAddr,
    /// Whether the nftables table exists.
    made: std::sync::Mutex<bool>,
}

fn sh(cmd: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Netns {
    /// Creates the namespace and veth pair, or says why it cannot.
    fn create() -> Result<Netns, String> {
        sh(&["ip", "netns", "list"])?;
        sh(&["nft", "list", "tables"])?;
        let id = std::process::id() % 250 + 1;
        let ns = format!("blt{id}");
        let (vh, vn) = (format!("blth{id}"), format!("bltn{id}"));
        let host = format!("10.213.{id}.1");
        let client = format!("10.213.{id}.2");
        let n = Netns {
            ns: ns.clone(),
            table: format!("blocklab_test_{id}"),
            host: host.parse().unwrap(),
            client: client.parse().unwrap(),
            made: std::sync::Mutex::new(false),
        };
        let _ = sh(&["ip", "netns", "del", &ns]);
        let _ = sh(&["ip", "link", "del", &vh]);
        sh(&["ip", "netns", "add", &ns])?;
        sh(&[
            "ip", "link", "add", &vh, "type", "veth", "peer", "name", &vn,
        ])?;
        sh(&["ip", "link", "set", &vn, "netns", &ns])?;
        sh(&["ip", "addr", "add", &format!("{host}/30"), "dev", &vh])?;
        sh(&["ip", "link", "set", &vh, "up"])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{client}/30"),
            "dev",
            &vn,
        ])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &vn, "up"])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        Ok(n)
    }

    /// Redirects the client's TCP to `port` into `to_port` on the host.
    fn redirect(&self, port: u16, to_port: u16) -> Result<(), String> {
        let t = self.table.as_str();
        if !std::mem::replace(&mut *self.made.lock().unwrap(), true) {
            sh(&["nft", "add", "table", "ip", t])?;
            sh(&["nft", &format!("add chain ip {t} pre {{ type nat hook prerouting priority dstnat; policy accept; }}")])?;
        }
        let rule = format!(
            "add rule ip {t} pre ip saddr {} tcp dport {port} redirect to :{to_port}",
            self.client
        );
        sh(&["nft", &rule])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["nft", "delete", "table", "ip", &self.table]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_client_redirected_by_nftables() {
    let net = match Netns::create() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED netns_client_redirected_by_nftables: needs root, `ip netns` and `nft`: {e}");
            return;
        }
    };
    let origin = Origin::start_on(net.host).await;
    let cfg = format!(
        "date = \"2022-03-10\"\n[[clients]]\nnetworks = [\"{}/32\"]\njurisdiction = \"ru\"\n\
         [tls]\nlisten = [\"{}:0\"]\nhold_secs = 5\n",
        net.client, net.host
    );
    let gw = Gateway::start(&cfg, &[]);
    let l = gw.addr("tls");
    net.redirect(origin.https.port(), l.port()).unwrap();
    net.redirect(origin.http.port(), l.port()).unwrap();
    let ca = origin.ca.to_str().unwrap();
    let in_ns = |scheme: &str, name: &str, port: u16, path: &str| {
        let url = format!("{scheme}://{name}:{port}{path}");
        let resolve = format!("{name}:{port}:{}", net.host);
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            net.ns.clone(),
            "curl".into(),
            "-sS".into(),
        ];
        args.extend([
            "--max-time".into(),
            "10".into(),
            "--cacert".into(),
            ca.to_string(),
            "--resolve".into(),
            resolve,
        ]);
        args.extend([
            "-o".into(),
            "-".into(),
            "-w".into(),
            "\n%{http_code}".into(),
            url,
        ]);
        args
    };
    // Runs curl in the namespace; asserts its exit code, returns what it printed.
    let run = |args: Vec<String>, code: i32| async move {
        let out = tokio::process::Command::new("ip")
            .args(&args)
            .output()
            .await
            .expect("ip netns exec curl");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        out.stdout
    };
    let sp = origin.https.port();

    let out = run(in_ns("https", "example.org", sp, "/bytes/50000"), 0).await;
    let mut want = pattern(50_000);
    want.extend(b"\n200");
    assert!(out == want, "body through the redirect differs");
    let dest = format!("dest=\"{}:{sp}\"", net.host);
    assert!(!gw.log().contains("decision=\"tls-reset\""));

    run(in_ns("https", "facebook.com", sp, "/"), 35).await;
    gw.wait_log(&["decision=\"tls-reset\"", &dest, "tls.sni=\"facebook.com\""]);

    // Plain HTTP through the same redirect: the RU blockpage by Host, the origin otherwise.
    let hp = origin.http.port();
    let out = run(in_ns("http", "facebook.com", hp, "/"), 0).await;
    assert!(
        String::from_utf8_lossy(&out).ends_with("\n302"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let out = run(in_ns("http", "example.org", hp, "/bytes/2000"), 0).await;
    let mut want = pattern(2000);
    want.extend(b"\n200");
    assert!(out == want, "plain HTTP through the redirect differs");
}

/// A UDP echo server on 127.0.0.1 standing in for a QUIC origin.
async fn udp_echo() -> std::net::SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Sends a client Initial for `sni` of `size` bytes from a fresh socket; whether it came back.
async fn quic_initial_echoed(relay: std::net::SocketAddr, sni: &str, size: usize) -> bool {
    use blocklab::sniff::quic::seal_initial;
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let mut records = Vec::new();
    conn.write_tls(&mut records).unwrap();
    let hello = &records[5..]; // the handshake message without its record header
    let dcid: Vec<u8> = (0..8u8)
        .map(|i| i ^ s.local_addr().unwrap().port() as u8)
        .collect();
    let pkt = seal_initial(&dcid, 0, 0, hello, size).unwrap();
    s.send_to(&pkt, relay).await.unwrap();
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(std::time::Duration::from_millis(700), s.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            assert_eq!(&buf[..n], &pkt[..], "the relay changed the datagram");
            true
        }
        _ => false,
    }
}

const QUIC_RULES: &str = include_str!("data/rules/tls-quic.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_drop_by_name_and_by_address() {
    let echo = udp_echo().await;
    let cfg = |date: &str, rules: &str, jur: &str| {
        format!(
            "{date}{rules}[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"{jur}\"\n\
             [tls]\nquic_listen = [\"127.0.0.1:0\"]\ndirect_quic_port = {}\n{}",
            echo.port(),
            hosts_table()
        )
    };
    // A lab rule by name: facebook.com's big Initials dropped, example.org's relayed.
    let lab = Gateway::start(
        &cfg("", "rules = \"rules\"\n", "lab"),
        &[("lab.toml", QUIC_RULES)],
    );
    let relay = lab.addr("quic");
    assert!(
        !quic_initial_echoed(relay, "facebook.com", 1200).await,
        "facebook.com Initial was relayed"
    );
    assert!(
        quic_initial_echoed(relay, "example.org", 1200).await,
        "example.org Initial was dropped"
    );
    lab.wait_log(&[
        "decision=\"quic-drop\"",
        "tls.sni=\"facebook.com\"",
        "lab-quic",
    ]);

    // The shipped ru rules: from 2022-03-04 every QUIC v1 Initial of >= 1001 bytes is dropped
    // (ru-quic-v1, by address), smaller ones pass; before that date everything passes.
    let ru = Gateway::start(&cfg("date = \"2022-03-10\"\n", "", "ru"), &[]);
    let relay = ru.addr("quic");
    assert!(!quic_initial_echoed(relay, "example.org", 1200).await);
    assert!(!quic_initial_echoed(relay, "example.org", 1001).await);
    assert!(
        quic_initial_echoed(relay, "example.org", 1000).await,
        "a 1000-byte Initial was dropped"
    );
    ru.wait_log(&["decision=\"quic-drop\"", "ru-quic-v1"]);
    let before = Gateway::start(&cfg("date = \"2022-03-01\"\n", "", "ru"), &[]);
    assert!(quic_initial_echoed(before.addr("quic"), "facebook.com", 1200).await);
}

const URL_RULES: &str = include_str!("data/rules/tls-url.toml");

/// With `[tls] intercept`, HTTPS is terminated with a certificate from the lab CA: URL rules
/// and the 451 page apply to HTTPS; other pages pass byte for byte; clients that do not trust
/// the lab CA fail certificate verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercept_applies_url_rules_to_https() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "blocklab lab interception CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let (ca_cert, ca_key) = (dir.path().join("lab-ca.pem"), dir.path().join("lab-ca.key"));
    std::fs::write(&ca_cert, ca.pem()).unwrap();
    std::fs::write(&ca_key, key.serialize_pem()).unwrap();
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_port = {}\n\
         intercept = {{ ca_cert = {:?}, ca_key = {:?}, upstream_ca = {:?} }}\n{}",
        origin.https.port(),
        ca_cert.to_str().unwrap(),
        ca_key.to_str().unwrap(),
        origin.ca.to_str().unwrap(),
        hosts_table()
    );
    let gw = Gateway::start(&cfg, &[("lab.toml", URL_RULES)]);
    let l = gw.addr("tls");
    let to = format!("example.org:443:{}:{}", l.ip(), l.port());
    let lab_ca = ca_cert.to_str().unwrap();

    let r = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        lab_ca,
        "https://example.org/secret/page",
    ])
    .await;
    assert_eq!((r.code, r.status), (0, 451), "{r:?}");
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("lab-url") && body.contains("Lab order on one page"),
        "{body}"
    );
    gw.wait_log(&["decision=\"http-blockpage\"", "intercepted=true"]);

    let r = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        lab_ca,
        "https://example.org/bytes/100000",
        "https://example.org/bytes/5",
    ])
    .await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(100_000), "intercepted body differs");

    // A client that trusts only the origin's CA sees the lab certificate and refuses it.
    let r = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        origin.ca.to_str().unwrap(),
        "https://example.org/",
    ])
    .await;
    assert_eq!(r.code, 60, "{r:?}");
}
