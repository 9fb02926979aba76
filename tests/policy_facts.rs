//! The shipped rules reproduce DESIGN.md's table of real-world facts: `blocklab check --json`
//! (the real binary) gives the right verdict before, inside and after every dated window.

use std::process::Command;

use serde_json::Value;

fn check(jurisdiction: &str, at: &str, targets: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args([
            "check",
            "--jurisdiction",
            jurisdiction,
            "--at",
            at,
            "--json",
        ])
        .args(targets)
        .output()
        .expect("run blocklab");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), targets.len());
    lines
}

/// A target and its expected verdict: `None` = allow, `Some((rule, techniques))` = block.
type Case<'a> = (&'a str, Option<(&'a str, &'a [&'a str])>);

/// Asserts each target's verdict.
fn expect(jurisdiction: &str, at: &str, cases: &[Case<'_>]) {
    let targets: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for (v, (target, want)) in check(jurisdiction, at, &targets).iter().zip(cases) {
        assert_eq!(v["target"], *target);
        assert_eq!(v["jurisdiction"], jurisdiction);
        assert_eq!(v["at"], at);
        match want {
            None => {
                assert_eq!(v["verdict"], "allow", "{jurisdiction} {at} {target}: {v}");
                assert_eq!(v["rule"], Value::Null);
            }
            Some((rule, techniques)) => {
                assert_eq!(v["verdict"], "block", "{jurisdiction} {at} {target}: {v}");
                assert_eq!(v["rule"], *rule, "{jurisdiction} {at} {target}");
                let mut got: Vec<&str> = v["techniques"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect();
                got.sort_unstable();
                let mut want: Vec<&str> = techniques.to_vec();
                want.sort_unstable();
                assert_eq!(got, want, "{jurisdiction} {at} {target}");
                assert!(
                    v["source"].as_str().is_some_and(|s| !s.is_empty()),
                    "every fact carries a source: {v}"
                );
                assert!(
                    v["basis"].as_str().is_some_and(|s| !s.is_empty()),
                    "every fact carries a basis: {v}"
                );
            }
        }
    }
}

const SNI_BLOCK: &[&str] = &["tls-reset", "http-blockpage", "quic-drop"];
const THROTTLE: &[&str] = &["throttle"];

#[test]
fn linkedin_blocked_from_17_november_2016() {
    let li: &[&str] = &["dns-blockpage", "http-blockpage", "ip-drop"];
    expect(
        "ru",
        "2016-11-16",
        &[("linkedin.com", None), ("www.linkedin.com", None)],
    );
    expect(
        "ru",
        "2016-11-17",
        &[
            ("linkedin.com", Some(("ru-linkedin", li))),
            ("static.licdn.com", Some(("ru-linkedin", li))),
        ],
    );
    expect(
        "ru",
        "2024-01-01",
        &[("www.linkedin.com", Some(("ru-linkedin", li)))],
    );
}

#[test]
fn twitter_throttled_in_2021_with_substring_collateral() {
    let t = Some(("ru-twitter-throttle-2021", THROTTLE));
    expect(
        "ru",
        "2021-03-09",
        &[
            ("twitter.com", None),
            ("microsoft.com", None),
            ("reddit.com", None),
        ],
    );
    expect(
        "ru",
        "2021-03-10",
        &[("twitter.com", t), ("pbs.twimg.com", t)],
    );
    expect(
        "ru",
        "2021-04-01",
        &[
            ("twitter.com", t),
            ("microsoft.com", t),
            ("reddit.com", t),
            ("t.co", t),
            ("example.org", None),
        ],
    );
    expect(
        "ru",
        "2021-05-16",
        &[("twitter.com", t), ("microsoft.com", t)],
    );
    expect(
        "ru",
        "2021-05-17",
        &[("twitter.com", None), ("microsoft.com", None)],
    );
    expect(
        "ru",
        "2021-06-01",
        &[("twitter.com", None), ("microsoft.com", None)],
    );
}

#[test]
fn twitter_throttled_then_blocked_in_2022() {
    expect(
        "ru",
        "2022-02-25",
        &[("twitter.com", None), ("x.com", None)],
    );
    let t = Some(("ru-twitter-throttle-2022", THROTTLE));
    expect(
        "ru",
        "2022-02-26",
        &[
            ("twitter.com", t),
            ("x.com", t),
            ("t.co", t),
            ("abs.twimg.com", t),
            ("microsoft.com", None),
        ],
    );
    let b = Some(("ru-twitter", SNI_BLOCK));
    expect(
        "ru",
        "2022-03-04",
        &[
            ("twitter.com", b),
            ("x.com", b),
            ("t.co", b),
            ("abs.twimg.com", b),
        ],
    );
    expect("ru", "2025-01-01", &[("twitter.com", b), ("api.x.com", b)]);
}

#[test]
fn facebook_and_instagram_2022() {
    let fb = Some(("ru-facebook", SNI_BLOCK));
    let ig = Some(("ru-instagram", SNI_BLOCK));
    expect(
        "ru",
        "2022-03-03",
        &[("facebook.com", None), ("instagram.com", None)],
    );
    expect(
        "ru",
        "2022-03-04",
        &[
            ("facebook.com", fb),
            ("www.facebook.com", fb),
            ("fb.com", fb),
            ("static.xx.fbcdn.net", fb),
            ("connect.facebook.net", fb),
            ("messenger.com", fb),
            ("instagram.com", None),
        ],
    );
    expect(
        "ru",
        "2022-03-13",
        &[("instagram.com", None), ("facebook.com", fb)],
    );
    expect(
        "ru",
        "2022-03-14",
        &[("instagram.com", ig), ("scontent.cdninstagram.com", ig)],
    );
    // Not a suffix on a label boundary: not blocked.
    expect(
        "ru",
        "2022-03-14",
        &[("notfacebook.com", None), ("facebook.com.example", None)],
    );
}

#[test]
fn quic_v1_to_foreign_hosts_from_4_march_2022() {
    let q = Some(("ru-quic-v1", &["quic-drop"][..]));
    expect(
        "ru",
        "2022-03-03",
        &[("8.8.8.8", None), ("2001:db8::1", None)],
    );
    expect("ru", "2022-03-04", &[("8.8.8.8", q), ("2001:db8::1", q)]);
}

#[test]
fn youtube_signal_discord_2024() {
    expect(
        "ru",
        "2024-07-11",
        &[("rr1---sn-abc.googlevideo.com", None)],
    );
    expect(
        "ru",
        "2024-07-12",
        &[(
            "rr1---sn-abc.googlevideo.com",
            Some(("ru-youtube-throttle", THROTTLE)),
        )],
    );
    let s = Some(("ru-signal", &["tls-reset"][..]));
    expect("ru", "2024-08-08", &[("signal.org", None)]);
    expect(
        "ru",
        "2024-08-09",
        &[
            ("signal.org", s),
            ("updates.signal.org", s),
            ("textsecure-service.whispersystems.org", s),
        ],
    );
    let d = Some(("ru-discord", &["tls-reset"][..]));
    expect("ru", "2024-10-07", &[("discord.com", None)]);
    expect(
        "ru",
        "2024-10-08",
        &[
            ("discord.com", d),
            ("discord.gg", d),
            ("cdn.discordapp.com", d),
        ],
    );
}

#[test]
fn registry_snapshot_speaks_only_from_its_date() {
    // First entries of rules/ru/registry.lst and rules/ru/ipsum.lst.
    expect(
        "ru",
        "2026-07-03",
        &[
            ("0.nb-novorossiysk.net", None),
            ("188.166.238.170", Some(("ru-quic-v1", &["quic-drop"][..]))),
        ],
    );
    expect(
        "ru",
        "2026-07-04",
        &[
            (
                "0.nb-novorossiysk.net",
                Some((
                    "ru-registry",
                    &["dns-blockpage", "http-blockpage", "tls-reset"][..],
                )),
            ),
            (
                "188.166.238.170",
                Some(("ru-registry-ips", &["ip-drop"][..])),
            ),
            // A dated rule listed first beats the snapshot for the same name.
            ("facebook.com", Some(("ru-facebook", SNI_BLOCK))),
        ],
    );
}

#[test]
fn eu_blocks_rt_and_sputnik_by_dns_and_russia_does_not() {
    expect(
        "eu",
        "2022-03-01",
        &[("rt.com", None), ("sputniknews.com", None)],
    );
    let e = Some(("eu-rt-sputnik", &["dns-nxdomain"][..]));
    expect(
        "eu",
        "2022-03-02",
        &[
            ("rt.com", e),
            ("de.rt.com", e),
            ("francais.rt.com", e),
            ("sputniknews.com", e),
        ],
    );
    expect(
        "eu",
        "2022-03-10",
        &[("rt.com", e), ("facebook.com", None), ("twitter.com", None)],
    );
    expect(
        "ru",
        "2022-03-10",
        &[("rt.com", None), ("sputniknews.com", None)],
    );
}

#[test]
fn urls_and_case_and_idn_targets() {
    let fb = Some(("ru-facebook", SNI_BLOCK));
    expect(
        "ru",
        "2022-03-10",
        &[
            ("https://www.facebook.com/some/page", fb),
            ("FaceBook.COM.", fb),
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args([
            "check",
            "-j",
            "ru",
            "--at",
            "2022-03-10",
            "--json",
            "пример.рф",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "allow");
}

#[test]
fn text_output_explains_the_decision() {
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args([
            "check",
            "--jurisdiction",
            "ru",
            "--at",
            "2021-04-01",
            "microsoft.com",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("BLOCK") && text.contains("ru-twitter-throttle-2021"),
        "{text}"
    );
    assert!(text.contains("throttle (140 kbit/s)"), "{text}");
    assert!(
        text.contains("basis:") && text.contains("source: https://censoredplanet.org/throttling"),
        "{text}"
    );
}

#[test]
fn bad_input_exits_2() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_blocklab"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["check", "-j", "xx", "--at", "2022-03-10", "a.com"][..],
        &["check", "-j", "ru", "--at", "2022-02-30", "a.com"],
        &["check", "-j", "ru", "--at", "2022-03-10", "bad name.com"],
        &["check", "--client", "192.0.2.1", "a.com"],
        &["check", "a.com"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains the error");
        assert!(out.stdout.is_empty(), "{args:?} prints no verdict");
    }
    let out = run(&["check", "--client", "192.0.2.1", "a.com"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in any configured network"));
}

#[test]
fn client_addresses_map_through_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blocklab.toml");
    std::fs::write(
        &cfg,
        "date = \"2022-03-10\"\n[[clients]]\nnetworks = [\"10.7.0.0/16\"]\njurisdiction = \"ru\"\n[[clients]]\nnetworks = [\"10.7.9.0/24\", \"2001:db8::/32\"]\njurisdiction = \"eu\"\n",
    )
    .unwrap();
    let run = |client: &str| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
            .args([
                "check",
                "--config",
                cfg.to_str().unwrap(),
                "--client",
                client,
                "--json",
                "rt.com",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = run("10.7.1.1");
    assert_eq!(
        (
            v["jurisdiction"].as_str(),
            v["verdict"].as_str(),
            v["at"].as_str()
        ),
        (Some("ru"), Some("allow"), Some("2022-03-10"))
    );
    // The longest prefix wins: 10.7.9.0/24 is `eu`.
    let v = run("10.7.9.1");
    assert_eq!(
        (v["jurisdiction"].as_str(), v["verdict"].as_str()),
        (Some("eu"), Some("block"))
    );
    assert_eq!(run("2001:db8::5")["jurisdiction"], "eu");
}
