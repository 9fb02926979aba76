//! The transparent `[tls]` listener end to end: real `curl --connect-to` straight to the
//! listener (no redirect, so the origin is the SNI's / Host's address), and a client in its
//! own network namespace redirected by nftables (skipped only where `ip netns` is missing).

mod common;

use common::{curl, hosts_table, pattern, Blocklab, Origin};

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
    let gw = Blocklab::start(&config("2022-03-10", origin.https.port()), &[], &["tls"]);
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
    assert!(r.code == 35 || r.code == 56, "{r:?}");
    gw.wait_log(&["decision=\"refused\"", "127.0.0.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_before_the_block_date_passes() {
    let origin = Origin::start().await;
    let gw = Blocklab::start(&config("2022-01-01", origin.https.port()), &[], &["tls"]);
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

const DROP_RULES: &str = r#"
[jurisdiction]
code = "lab"
name = "Test Lab"
utc_offset = "+00:00"

[[rule]]
id = "lab-drop"
domains = ["drop.example"]
techniques = ["tls-drop"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tls_drop_hangs_until_the_client_gives_up() {
    let origin = Origin::start().await;
    let cfg = format!(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\ndirect_tls_port = {}\n{}",
        origin.https.port(),
        hosts_table()
    );
    let gw = Blocklab::start(&cfg, &[("lab.toml", DROP_RULES)], &["tls"]);
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
