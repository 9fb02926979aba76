//! The shipped rules reproduce the README's table of real-world facts: `blocklab check --json`
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
    let s = Some(("ru-signal", &["tls-reset", "quic-drop"][..]));
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
    let d = Some(("ru-discord", &["tls-reset", "quic-drop"][..]));
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
                    &["dns-blockpage", "http-blockpage", "tls-reset", "quic-drop"][..],
                )),
            ),
            (
                "188.166.238.170",
                Some(("ru-registry-ips", &["ip-drop"][..])),
            ),
            // A dated rule listed first beats the snapshot for the same name.
            ("fbcdn.net", Some(("ru-facebook", SNI_BLOCK))),
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

// ---- Facts 2021-2026 (README): before, inside and after each window, with and without
// its condition (ECH on/off, right and wrong port, mobile vs home ISP, ...).

/// `blocklab check -j ru --at AT --json EXTRA... TARGET`: the one JSON line.
fn one(jurisdiction: &str, at: &str, extra: &[&str], target: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args([
            "check",
            "--jurisdiction",
            jurisdiction,
            "--at",
            at,
            "--json",
        ])
        .args(extra)
        .arg(target)
        .output()
        .expect("run blocklab");
    assert!(
        out.status.success(),
        "{extra:?} {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(v["target"], target);
    assert_eq!(v["at"], at);
    v
}

/// Asserts the rule (`None` = allow) of `target` in `ru` at `at` with `extra` flags.
fn rule_is(at: &str, extra: &[&str], target: &str, want: Option<&str>) -> Value {
    let v = one("ru", at, extra, target);
    match want {
        None => assert_eq!(v["verdict"], "allow", "{at} {extra:?} {target}: {v}"),
        Some(rule) => {
            assert_eq!(v["verdict"], "block", "{at} {extra:?} {target}: {v}");
            assert_eq!(v["rule"], rule, "{at} {extra:?} {target}: {v}");
            assert!(v["basis"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
            assert!(v["source"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        }
    }
    v
}

fn techniques(v: &Value) -> Vec<&str> {
    v["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect()
}

#[test]
fn doh_names_reset_and_udp_dns_to_8888_dropped_from_september_2021() {
    for name in [
        "dns.google",
        "1dot1dot1dot1.cloudflare-dns.com",
        "doh.opendns.com",
    ] {
        rule_is("2021-09-02", &[], name, None);
        let v = rule_is("2021-09-03", &[], name, Some("ru-doh"));
        assert_eq!(techniques(&v), ["tls-reset"]);
        rule_is("2023-01-01", &[], name, Some("ru-doh"));
    }
    rule_is("2021-09-03", &[], "dns.quad9.net", None);
    // UDP/53 to 8.8.8.8 only: another port or TCP passes.
    rule_is("2021-09-02", &["--port", "udp/53"], "8.8.8.8", None);
    let v = rule_is(
        "2021-09-03",
        &["--port", "udp/53"],
        "8.8.8.8",
        Some("ru-dns-8888"),
    );
    assert_eq!(techniques(&v), ["ip-drop"]);
    assert_eq!(v["conditions"][0], "ports = udp/53");
    rule_is("2021-09-03", &["--port", "tcp/53"], "8.8.8.8", None);
    rule_is("2021-09-03", &["--port", "udp/54"], "8.8.8.8", None);
    rule_is("2021-09-03", &[], "8.8.8.8", None);
}

#[test]
fn tor_dirauths_blocked_at_some_isps_from_december_2021() {
    let moria1 = "128.31.0.39";
    rule_is("2021-11-30", &["--isp", "mts"], moria1, None);
    let v = rule_is(
        "2021-12-01",
        &["--isp", "mts"],
        moria1,
        Some("ru-tor-dirauths"),
    );
    assert_eq!(techniques(&v), ["ip-drop"]);
    assert_eq!(v["isp"], "mts");
    rule_is(
        "2021-12-01",
        &["--isp", "beeline"],
        "2001:678:558:1000::244",
        Some("ru-tor-dirauths"),
    );
    // Not at every ISP, and not for a client of unknown ISP.
    rule_is("2021-12-01", &["--isp", "rostelecom"], moria1, None);
    rule_is("2021-12-01", &[], moria1, None);
    rule_is(
        "2024-01-01",
        &["--isp", "mts"],
        "171.25.193.9",
        Some("ru-tor-dirauths"),
    );
}

#[test]
fn torproject_in_the_registry_from_7_december_2021_to_14_july_2022() {
    rule_is("2021-12-06", &[], "www.torproject.org", None);
    let v = rule_is(
        "2021-12-07",
        &[],
        "www.torproject.org",
        Some("ru-torproject"),
    );
    assert_eq!(techniques(&v), ["http-blockpage", "tls-reset"]);
    rule_is("2022-07-13", &[], "torproject.org", Some("ru-torproject"));
    rule_is("2022-07-14", &[], "www.torproject.org", None);
    rule_is("2025-01-01", &[], "www.torproject.org", None);
}

#[test]
fn sni_quic_drop_with_the_2024_sni_blocks() {
    let v = rule_is("2024-08-09", &[], "signal.org", Some("ru-signal"));
    assert!(techniques(&v).contains(&"quic-drop"), "{v}");
    let v = rule_is("2024-10-08", &[], "discord.gg", Some("ru-discord"));
    assert!(techniques(&v).contains(&"quic-drop"), "{v}");
}

#[test]
fn googlevideo_policed_from_july_2024() {
    rule_is("2024-07-11", &[], "rr1---sn-abc.googlevideo.com", None);
    let v = rule_is(
        "2024-07-12",
        &[],
        "rr1---sn-abc.googlevideo.com",
        Some("ru-youtube-throttle"),
    );
    assert_eq!(techniques(&v), ["throttle"]);
    assert!(v["basis"].as_str().unwrap().contains("assumption"), "{v}");
}

#[test]
fn cloudflare_ech_dropped_only_with_an_ech_extension_from_november_2024() {
    rule_is("2024-11-04", &["--ech"], "cloudflare-ech.com", None);
    let v = rule_is(
        "2024-11-05",
        &["--ech"],
        "cloudflare-ech.com",
        Some("ru-ech-cloudflare"),
    );
    assert_eq!(techniques(&v), ["tls-drop", "quic-drop"]);
    assert_eq!(v["conditions"][0], "ech = true");
    // Either alone passes: the SNI without ECH, ECH with another SNI.
    rule_is("2024-11-05", &[], "cloudflare-ech.com", None);
    rule_is("2024-11-05", &["--ech"], "example.org", None);
    rule_is(
        "2026-01-01",
        &["--ech"],
        "cloudflare-ech.com",
        Some("ru-ech-cloudflare"),
    );
}

#[test]
fn foreign_hosting_freezes_after_16_kb_from_9_june_2025() {
    let cf = "104.16.1.1";
    let tls = ["--port", "tcp/443"];
    // Before: only the 2022 QUIC rule covers the address (not a TCP technique).
    rule_is("2025-06-08", &tls, cf, Some("ru-quic-v1"));
    let v = rule_is("2025-06-09", &tls, cf, Some("ru-foreign-hosting-freeze"));
    assert_eq!(techniques(&v), ["freeze"]);
    assert_eq!(v["freeze_after_bytes"], 16384);
    assert!(v.get("residual_secs").is_none(), "{v}");
    rule_is(
        "2025-06-09",
        &tls,
        "2606:4700::1",
        Some("ru-foreign-hosting-freeze"),
    );
    // The wrong port (or none) is not this rule.
    rule_is("2025-06-09", &["--port", "tcp/80"], cf, Some("ru-quic-v1"));
    rule_is("2025-06-09", &[], cf, Some("ru-quic-v1"));
    rule_is("2026-03-01", &tls, cf, Some("ru-foreign-hosting-freeze"));
}

#[test]
fn ovh_residual_rule_states_its_seconds_for_listed_addresses() {
    // The shipped OVH list is empty (no published prefixes were available): give it one.
    let dir = tempfile::tempdir().unwrap();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    std::fs::create_dir(dir.path().join("ru")).unwrap();
    std::fs::copy(format!("{rules}/ru.toml"), dir.path().join("ru.toml")).unwrap();
    for f in ["registry.lst", "ipsum.lst", "foreign-hosting.lst"] {
        std::fs::copy(format!("{rules}/ru/{f}"), dir.path().join("ru").join(f)).unwrap();
    }
    std::fs::write(dir.path().join("ru/ovh.lst"), "198.51.100.0/24\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let tls = ["--rules", d, "--port", "tcp/443"];
    rule_is("2025-05-27", &tls, "198.51.100.7", Some("ru-quic-v1"));
    let v = rule_is("2025-05-28", &tls, "198.51.100.7", Some("ru-ovh-residual"));
    assert_eq!(v["residual_secs"], 600);
    assert_eq!(techniques(&v), ["tls-drop"]);
    rule_is(
        "2025-05-28",
        &["--rules", d, "--port", "udp/443"],
        "198.51.100.7",
        Some("ru-quic-v1"),
    );
}

#[test]
fn mobile_networks_allow_only_a_list_by_sni_or_address_from_september_2025() {
    let m = ["--isp", "mobile"];
    rule_is("2025-09-06", &m, "example.org", None);
    let v = rule_is("2025-09-07", &m, "example.org", Some("ru-mobile-allowlist"));
    assert_eq!(techniques(&v), ["tls-drop"]);
    // The allowlist, by SNI ...
    let v = rule_is("2025-09-07", &m, "www.gosuslugi.ru", None);
    assert_eq!(v["exception"], "ru-mobile-allowlist-allow");
    // ... or by destination address: any SNI to a Yandex address passes.
    let v = rule_is(
        "2025-09-07",
        &["--isp", "mobile", "--dst", "77.88.8.8"],
        "example.org",
        None,
    );
    assert_eq!(v["exception"], "ru-mobile-allowlist-allow");
    rule_is(
        "2025-09-07",
        &["--isp", "mobile", "--dst", "192.0.2.1"],
        "example.org",
        Some("ru-mobile-allowlist"),
    );
    // Home ISPs are not under the regime.
    rule_is("2025-09-07", &["--isp", "rostelecom"], "example.org", None);
    rule_is("2025-09-07", &[], "example.org", None);
    // Names blocked anyway stay blocked by their own rule.
    rule_is("2025-10-01", &m, "twitter.com", Some("ru-twitter"));
}

#[test]
fn whatsapp_throttled_from_november_2025_then_removed_from_dns() {
    for n in ["whatsapp.com", "web.whatsapp.com", "whatsapp.net", "wa.me"] {
        rule_is("2025-11-27", &[], n, None);
        let v = rule_is("2025-11-28", &[], n, Some("ru-whatsapp-throttle"));
        assert_eq!(techniques(&v), ["throttle"]);
    }
    for n in ["whatsapp.com", "web.whatsapp.com"] {
        rule_is("2026-02-10", &[], n, Some("ru-whatsapp-throttle"));
        let v = rule_is("2026-02-11", &[], n, Some("ru-nsdi-2026-whatsapp"));
        assert_eq!(techniques(&v), ["dns-nxdomain", "throttle"]);
    }
    // whatsapp.net and wa.me were kept in the national DNS.
    rule_is(
        "2026-03-01",
        &[],
        "whatsapp.net",
        Some("ru-whatsapp-throttle"),
    );
    rule_is("2026-03-01", &[], "wa.me", Some("ru-whatsapp-throttle"));
}

#[test]
fn telegram_throttled_from_10_february_2026() {
    rule_is("2026-02-09", &[], "telegram.org", None);
    rule_is(
        "2026-02-10",
        &[],
        "telegram.org",
        Some("ru-telegram-throttle"),
    );
    rule_is("2026-02-10", &[], "t.me", Some("ru-telegram-throttle"));
    rule_is(
        "2026-06-01",
        &[],
        "telegram.me",
        Some("ru-telegram-throttle"),
    );
}

#[test]
fn national_dns_removals_of_february_2026() {
    rule_is("2026-02-09", &[], "youtube.com", None);
    let v = rule_is(
        "2026-02-10",
        &[],
        "www.youtube.com",
        Some("ru-nsdi-2026-youtube"),
    );
    assert_eq!(techniques(&v), ["dns-nxdomain"]);
    for n in [
        "bbc.com",
        "dw.com",
        "rferl.org",
        "themoscowtimes.com",
        "torproject.org",
        "windscribe.com",
        "apkmirror.com",
        "currenttime.tv",
    ] {
        rule_is("2026-02-10", &[], n, None);
        rule_is("2026-02-11", &[], n, Some("ru-nsdi-2026"));
    }
    // Meta's names: the 2022 TLS block before, the DNS removal on top of it after.
    let v = rule_is("2026-02-10", &[], "instagram.com", Some("ru-instagram"));
    assert!(!techniques(&v).contains(&"dns-nxdomain"));
    let v = rule_is(
        "2026-02-11",
        &[],
        "instagram.com",
        Some("ru-nsdi-2026-meta"),
    );
    assert!(techniques(&v).contains(&"dns-nxdomain") && techniques(&v).contains(&"tls-reset"));
    rule_is("2026-02-11", &[], "fbcdn.net", Some("ru-facebook"));
}

#[test]
fn eu_media_bans_2022_to_2024() {
    let nx: &[&str] = &["dns-nxdomain"];
    let rows: &[(&str, &str, &str, &[&str])] = &[
        (
            "eu-2022-879",
            "2022-06-24",
            "2022-06-25",
            &["rtr-planeta.com", "www.vesti.ru", "tvc.ru"],
        ),
        (
            "eu-2022-2474",
            "2023-01-31",
            "2023-02-01",
            &["ntv.ru", "russia.tv", "ren.tv", "www.1tv.ru"],
        ),
        (
            "eu-2023-1214",
            "2023-06-22",
            "2023-06-23",
            &["rt.rs", "tsargrad.tv", "katehon.com"],
        ),
        (
            "eu-2024-1428",
            "2024-05-17",
            "2024-05-18",
            &["ria.ru", "iz.ru", "rg.ru", "voice-of-europe.eu"],
        ),
    ];
    for (rule, before, from, names) in rows {
        let cases: Vec<Case<'_>> = names.iter().map(|n| (*n, None)).collect();
        expect("eu", before, &cases);
        let cases: Vec<Case<'_>> = names.iter().map(|n| (*n, Some((*rule, nx)))).collect();
        expect("eu", from, &cases);
        expect("eu", "2026-03-01", &cases);
        let v = one("eu", from, &[], names[0]);
        assert!(
            v["basis"].as_str().unwrap().contains("modelling choice"),
            "{v}"
        );
    }
    // The uncertain date says so.
    let v = one("eu", "2024-06-01", &[], "ria.ru");
    assert!(v["basis"].as_str().unwrap().contains("UNCERTAIN"), "{v}");
}

#[test]
fn check_hour_and_ja4_conditions_on_a_lab_rules_dir() {
    // A rules directory without the shipped jurisdictions: `--jurisdiction` needs no client map.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lab.toml"),
        r#"[jurisdiction]
code = "lab"
utc_offset = "+03:00"

[[rule]]
id = "curfew"
domains = ["."]
hours = ["22:00-06:00"]
since = "2026-01-01"
techniques = ["tls-drop"]
basis = "test"
source = "test"

[[rule]]
id = "fp"
ips = ["0.0.0.0/0"]
ports = ["udp/1-65535"]
ja4 = ["d12d1516h2_8daaf6152771_b186095e22b6"]
techniques = ["ip-drop"]
basis = "test"
source = "test"
"#,
    )
    .unwrap();
    let run = |extra: &[&str], target: &str| {
        let d = dir.path().to_str().unwrap();
        let mut args = vec!["--rules", d];
        args.extend_from_slice(extra);
        one("lab", "2026-03-01", &args, target)
    };
    assert_eq!(run(&["--hour", "23:30"], "example.org")["rule"], "curfew");
    assert_eq!(run(&["--hour", "05:59"], "example.org")["rule"], "curfew");
    assert_eq!(run(&["--hour", "06:00"], "example.org")["verdict"], "allow");
    assert_eq!(run(&[], "example.org")["verdict"], "allow");
    let fp = [
        "--port",
        "udp/3478",
        "--ja4",
        "D12D1516H2_8DAAF6152771_B186095E22B6",
    ];
    assert_eq!(run(&fp, "192.0.2.9")["rule"], "fp");
    let other = [
        "--port",
        "udp/3478",
        "--ja4",
        "d13d1516h2_8daaf6152771_b186095e22b6",
    ];
    assert_eq!(run(&other, "192.0.2.9")["verdict"], "allow");
    // Bad flag values are clear errors (exit 2), not panics.
    for bad in [["--hour", "25:00"], ["--ja4", "nope"], ["--port", "tcp/0"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
            .args([
                "check",
                "--rules",
                dir.path().to_str().unwrap(),
                "-j",
                "lab",
            ])
            .args(bad)
            .arg("example.org")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(bad[0]),
            "{bad:?}"
        );
    }
}

#[test]
fn client_groups_carry_their_own_date_and_isp() {
    // One gateway config, two RU groups: 2021 and 2025 (mobile).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blocklab.toml");
    std::fs::write(
        &cfg,
        r#"date = "2024-01-01"
[[clients]]
name = "ru2021"
networks = ["10.1.0.0/16"]
jurisdiction = "ru"
date = "2021-04-01"
[[clients]]
name = "ru2025"
networks = ["10.2.0.0/16"]
jurisdiction = "ru"
isp = "mobile"
date = "2025-10-01"
[[clients]]
networks = ["10.3.0.0/16"]
jurisdiction = "ru"
"#,
    )
    .unwrap();
    let run = |who: &[&str], target: &str| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
            .args(["check", "--config", cfg.to_str().unwrap(), "--json"])
            .args(who)
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = run(&["--client-group", "ru2021"], "microsoft.com");
    assert_eq!(
        (v["at"].as_str(), v["rule"].as_str()),
        (Some("2021-04-01"), Some("ru-twitter-throttle-2021"))
    );
    let v = run(&["--client", "10.1.2.3"], "microsoft.com");
    assert_eq!(v["rule"], "ru-twitter-throttle-2021");
    let v = run(&["--client-group", "ru2025"], "example.org");
    assert_eq!(
        (v["at"].as_str(), v["rule"].as_str(), v["isp"].as_str()),
        (
            Some("2025-10-01"),
            Some("ru-mobile-allowlist"),
            Some("mobile")
        )
    );
    let v = run(&["--client", "10.2.0.1"], "vk.com");
    assert_eq!(v["verdict"], "allow");
    // The group without its own date uses the config's.
    let v = run(&["--client", "10.3.0.1"], "microsoft.com");
    assert_eq!(
        (v["at"].as_str(), v["verdict"].as_str()),
        (Some("2024-01-01"), Some("allow"))
    );
    // --at beats the group's date.
    let v = run(
        &["--client-group", "ru2021", "--at", "2021-06-01"],
        "microsoft.com",
    );
    assert_eq!(v["verdict"], "allow");
    // An unknown group is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args([
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--client-group",
            "nope",
            "x.org",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ru2021, ru2025"));
}
