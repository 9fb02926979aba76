//! The forward proxy (`[http]`) end to end: the real binary, origin servers on loopback and
//! real `curl -x`. Each technique is checked by the symptom a user sees.

mod common;

use common::{curl, hosts_table, pattern, Gateway, Origin, LAB_RULES};

fn ru_config(date: &str) -> String {
    format!(
        "date = \"{date}\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"ru\"\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n{}",
        hosts_table()
    )
}

fn lab_config() -> String {
    String::from(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"lab\"\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n\
         [hosts]\n\"blocked.example\" = [\"127.0.0.1\"]\n\"drop.example\" = [\"127.0.0.1\"]\n\
         \"reset.example\" = [\"127.0.0.1\"]\n\"example.org\" = [\"127.0.0.1\"]\n\
         \"throttle.example\" = [\"127.0.0.1\"]\n\
         \"ipreset.example\" = [\"127.0.0.2\"]\n\"ipdrop.example\" = [\"127.0.0.3\"]\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ru_2022_03_10_facebook_is_blocked_and_others_pass() {
    let origin = Origin::start().await;
    let cfg = format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        ru_config("2022-03-10")
    );
    let gw = Gateway::start(&cfg, &[]);
    let proxy = format!("http://{}", gw.addr("http"));
    let ca = origin.ca.to_str().unwrap();

    // Plain HTTP: the Rostelecom redirect.
    let url = format!("http://facebook.com:{}/", origin.http.port());
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 302), "{r:?}");
    let location = header(&r.headers, "location").expect("a Location header");
    assert_eq!(location, "http://warning.rt.ru/");
    gw.wait_log(&["decision=\"http-blockpage\"", "ru-facebook"]);

    // HTTPS through CONNECT: reset right after the ClientHello (curl: 35, SSL connect error).
    let url = format!("https://facebook.com:{}/", origin.https.port());
    let r = curl(&["-x", &proxy, "--cacert", ca, &url]).await;
    assert_eq!(r.code, 35, "{r:?}");
    assert!(
        r.stderr.contains("reset") || r.stderr.contains("SSL"),
        "{r:?}"
    );
    gw.wait_log(&["decision=\"tls-reset\"", "ru-facebook"]);

    // Subdomains too, and the CONNECT target alone decides even when the SNI differs.
    let url = format!("https://www.facebook.com:{}/", origin.https.port());
    let r = curl(&[
        "-x",
        &proxy,
        "--cacert",
        ca,
        "--connect-to",
        &format!(
            "www.facebook.com:{}:facebook.com:{}",
            origin.https.port(),
            origin.https.port()
        ),
        &url,
    ])
    .await;
    assert_eq!(r.code, 35, "{r:?}");

    // Allowed names pass byte for byte (the shipped ru-quic-v1 rule covers every address
    // with quic-drop only, which must not touch TCP).
    let url = format!("http://example.org:{}/bytes/100000", origin.http.port());
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(100_000), "plain HTTP body differs");
    let url = format!("https://example.org:{}/bytes/100000", origin.https.port());
    let r = curl(&["-x", &proxy, "--cacert", ca, &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(100_000), "HTTPS body differs");

    // Keep-alive: several requests on one client connection.
    let u1 = format!("http://example.org:{}/a", origin.http.port());
    let u2 = format!("http://example.org:{}/b", origin.http.port());
    let r = curl(&["-v", "-x", &proxy, &u1, &u2]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "hello from the http origin: host=example.org:{} path=/a\n",
            origin.http.port()
        )
    );
    assert!(
        r.stderr.contains("Re-using existing connection") || r.stderr.contains("Reusing existing"),
        "{}",
        r.stderr
    );

    // Unmapped clients are refused with 403 and counted in the log.
    let url = format!("http://example.org:{}/", origin.http.port());
    let r = curl(&["--interface", "127.0.0.2", "-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 403), "{r:?}");
    let url = format!("https://example.org:{}/", origin.https.port());
    let r = curl(&[
        "--interface",
        "127.0.0.2",
        "-x",
        &proxy,
        "--cacert",
        ca,
        &url,
    ])
    .await;
    assert_eq!(r.code, 56, "{r:?}");
    assert!(r.stderr.contains("403"), "{r:?}");
    gw.wait_log(&["decision=\"refused\"", "127.0.0.2"]);

    // The refusals and the blocks are counted in /metrics.
    let r = curl(&[&format!("http://{}/metrics", gw.addr("admin"))]).await;
    let metrics = String::from_utf8_lossy(&r.body);
    assert!(
        metrics.contains("blocklab_refused_clients_total 2"),
        "{metrics}"
    );
    let block = "blocklab_decisions_total{jurisdiction=\"ru\",layer=\"http\",verdict=\"block\",technique=\"http-blockpage\",rule=\"ru-facebook\"} 1";
    assert!(metrics.contains(block), "{metrics}");
    let reset = "layer=\"tls\",verdict=\"block\",technique=\"tls-reset\",rule=\"ru-facebook\"} 2";
    assert!(metrics.contains(reset), "{metrics}");
}

/// The RU blockpage redirect matches the OONI fingerprint of a real RU ISP blockpage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ru_blockpage_matches_the_ooni_fingerprint() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&ru_config("2022-03-10"), &[]);
    let proxy = format!("http://{}", gw.addr("http"));
    let url = format!("http://facebook.com:{}/", origin.http.port());
    let r = curl(&["-x", &proxy, &url]).await;
    let location = header(&r.headers, "location").expect("a Location header");

    let path = common::ooni_http_fingerprints();
    let text = std::fs::read_to_string(&path).expect("the OONI fingerprints in src/probe/data");
    let table = blocklab::rules::csv::Reader::new()
        .header()
        .read(&path.display().to_string(), &text)
        .unwrap();
    let mut matched = Vec::new();
    for rec in &table.records {
        let cols: Vec<&str> = rec.fields.iter().map(String::as_str).collect();
        if cols.len() < 8 || cols[3] != "header.location" || !cols[7].contains("RU") {
            continue;
        }
        let hit = match cols[4] {
            "prefix" => location.starts_with(cols[5]),
            "contains" => location.contains(cols[5]),
            "full" => location == cols[5],
            _ => false,
        };
        if hit {
            matched.push(cols[0].to_string());
        }
    }
    assert_eq!(
        matched,
        vec!["ooni.ru_6".to_string()],
        "Location {location} matched {matched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ru_2022_01_01_facebook_is_not_blocked_yet() {
    use std::sync::atomic::Ordering;
    let origin = Origin::start().await;
    let gw = Gateway::start(&ru_config("2022-01-01"), &[]);
    let proxy = format!("http://{}", gw.addr("http"));
    let url = format!("http://facebook.com:{}/", origin.http.port());
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "hello from the http origin: host=facebook.com:{} path=/\n",
            origin.http.port()
        )
    );
    // A second client connection reuses the origin connection the first one left idle.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert_eq!(
        origin.http_accepted.load(Ordering::SeqCst),
        1,
        "origin connection not reused"
    );
    let url = format!("https://facebook.com:{}/bytes/5000", origin.https.port());
    let r = curl(&["-x", &proxy, "--cacert", origin.ca.to_str().unwrap(), &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(r.body == pattern(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_rules_every_technique() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&lab_config(), &[("lab.toml", LAB_RULES)]);
    let proxy = format!("http://{}", gw.addr("http"));
    let ca = origin.ca.to_str().unwrap();
    let (hp, sp) = (origin.http.port(), origin.https.port());

    // No http_blockpage in the jurisdiction: a local 451 (RFC 7725).
    let url = format!("http://blocked.example:{hp}/some/page");
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 451), "{r:?}");
    let link = header(&r.headers, "link").expect("a Link header");
    assert_eq!(
        link,
        format!("<http://{}/>; rel=\"blocked-by\"", gw.addr("http"))
    );
    let body = String::from_utf8_lossy(&r.body);
    for want in [
        "lab-page",
        "Lab order 1",
        "https://lab.example/order-1",
        "Lab Authority",
        "/some/page",
    ] {
        assert!(body.contains(want), "451 page lacks {want}: {body}");
    }

    // tls-reset on plain HTTP: the request is answered with a reset (curl 56).
    let url = format!("http://reset.example:{hp}/");
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!(r.code, 56, "{r:?}");

    // tls-drop: the ClientHello is swallowed, curl times out (28).
    let url = format!("https://drop.example:{sp}/");
    let r = curl(&["-x", &proxy, "--cacert", ca, "--max-time", "2", &url]).await;
    assert_eq!(r.code, 28, "{r:?}");
    assert!(r.elapsed.as_secs_f64() >= 1.9, "{r:?}");
    gw.wait_log(&["decision=\"tls-drop\"", "lab-drop"]);

    // A name blocked only by DNS passes the proxy.
    let url = format!("http://example.org:{hp}/bytes/1000");
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");

    // ip-reset: the origin's address is in a blocked CIDR, the connection is reset.
    let url = format!("http://ipreset.example:{hp}/");
    let r = curl(&["-x", &proxy, &url]).await;
    assert_eq!(r.code, 56, "{r:?}");
    let url = format!("https://ipreset.example:{sp}/");
    let r = curl(&["-x", &proxy, "--cacert", ca, &url]).await;
    assert!(r.code == 56 || r.code == 35, "{r:?}");
    gw.wait_log(&["decision=\"ip-reset\"", "lab-ip-reset"]);

    // ip-drop: nothing comes back, curl times out.
    let url = format!("http://ipdrop.example:{hp}/");
    let r = curl(&["-x", &proxy, "--max-time", "2", &url]).await;
    assert_eq!(r.code, 28, "{r:?}");
    let url = format!("https://ipdrop.example:{sp}/");
    let r = curl(&["-x", &proxy, "--cacert", ca, "--max-time", "2", &url]).await;
    assert_eq!(r.code, 28, "{r:?}");
    gw.wait_log(&["decision=\"ip-drop\"", "lab-ip-drop"]);
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Twitter 2021: twitter.com throttled to 140 kbit/s by SNI (1 MB in 57 s ± 15%), and the
/// sloppy `t.co` substring slows microsoft.com too (checked on a shorter plain-HTTP download).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitter_2021_throttle_and_microsoft_collateral() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&ru_config("2021-04-01"), &[]);
    let proxy = format!("http://{}", gw.addr("http"));
    let ca = origin.ca.to_str().unwrap().to_string();
    let big = format!("https://twitter.com:{}/bytes/1000000", origin.https.port());
    let small = format!("http://microsoft.com:{}/bytes/200000", origin.http.port());
    let allowed = format!("http://example.org:{}/bytes/1000000", origin.http.port());
    let (ta, ma, aa) = (
        ["-x", &proxy, "--cacert", &ca, "--max-time", "120", &big],
        ["-x", &proxy, "--max-time", "60", &small],
        ["-x", &proxy, "--max-time", "60", &allowed],
    );
    let (t, m, a) = tokio::join!(curl(&ta), curl(&ma), curl(&aa));
    assert_eq!((t.code, t.status), (0, 200), "{t:?}");
    assert!(t.body == pattern(1_000_000), "throttled body differs");
    let secs = t.elapsed.as_secs_f64();
    assert!(
        (57.0 * 0.85..=57.0 * 1.15).contains(&secs),
        "1 MB took {secs:.1} s, want 57 s ± 15%"
    );

    assert_eq!((m.code, m.status), (0, 200), "{m:?}");
    assert!(m.body == pattern(200_000));
    let rate = 200_000.0 * 8.0 / 1000.0 / m.elapsed.as_secs_f64();
    assert!(
        (110.0..=150.0).contains(&rate),
        "microsoft.com at {rate:.0} kbit/s, want about 140"
    );

    assert_eq!((a.code, a.status), (0, 200), "{a:?}");
    assert!(
        a.elapsed.as_secs_f64() < 5.0,
        "an unthrottled 1 MB took {:?}",
        a.elapsed
    );
    gw.wait_log(&[
        "decision=\"throttle\"",
        "ru-twitter-throttle-2021",
        "kbps=140",
    ]);
}

/// CONNECT to an address, then a ClientHello for `sni` written in two TCP segments: "reset"
/// when the gateway resets, "passed" when the origin's ServerHello comes back.
async fn split_hello_through(
    proxy: std::net::SocketAddr,
    origin: std::net::SocketAddr,
    sni: &str,
) -> &'static str {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hello = common::client_hello(sni);

    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "proxy closed during CONNECT"
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The name sits past byte 60 of the hello; the first segment stops before it.
    s.write_all(&hello[..60]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.write_all(&hello[60..]).await.unwrap();
    let mut buf = [0u8; 5];
    match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset",
        Ok(Ok(n)) if n > 0 && buf[0] == 0x16 => "passed",
        other => panic!("unexpected: {other:?}"),
    }
}

/// `reassemble = true` (the default) sees a ClientHello split across TCP segments;
/// `reassemble = false` only reads the first segment and misses the name, as circumvention
/// tools that split the hello exploit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_client_hello_and_reassembly() {
    let origin = Origin::start().await;
    let lazy = LAB_RULES.replace(
        "utc_offset = \"+00:00\"",
        "utc_offset = \"+00:00\"\nreassemble = false",
    );
    assert_ne!(lazy, LAB_RULES);
    let careful = Gateway::start(&lab_config(), &[("lab.toml", LAB_RULES)]);
    let lazy = Gateway::start(&lab_config(), &[("lab.toml", &lazy)]);
    assert_eq!(
        split_hello_through(careful.addr("http"), origin.https, "reset.example").await,
        "reset"
    );
    assert_eq!(
        split_hello_through(lazy.addr("http"), origin.https, "reset.example").await,
        "passed"
    );
    assert_eq!(
        split_hello_through(careful.addr("http"), origin.https, "example.org").await,
        "passed"
    );
}
