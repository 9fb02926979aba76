//! The shipped rules reproduce the README's table of real-world facts: `blocklab check --json`
//! (the real binary) gives the right verdict before, inside and after every dated window, with
//! and without its condition (ECH on/off, right and wrong port, mobile vs home ISP, ...).
//!
//! Each fact is a test over a table of rows (see [`Row`]); a fact that does not hold fails
//! with every row of it that does not, each named by its jurisdiction, date, flags and target.

use std::process::{Command, Output};

use serde_json::Value;

/// Runs the real `blocklab` binary with `args`.
fn blocklab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args(args)
        .output()
        .expect("run blocklab")
}

/// One row of a fact: `(jurisdiction, date, flags, target, verdict, checks)`.
///
/// `blocklab check --jurisdiction J --at DATE --json FLAGS... TARGET` must answer `verdict`:
/// `allow`, or the id of the rule that blocks the target (a block states its basis and source).
/// Every check must hold too: `key=value` (the field is `value`; a list is its items joined by
/// `,`; `absent`: there is no such field), `key~part` (the list has the item `part`, or the
/// text contains `part`), `key!~part` (it does not). `conditions.0` is the first item of
/// `conditions`.
type Row<'a> = (
    &'a str,
    &'a str,
    &'a [&'a str],
    &'a str,
    &'a str,
    &'a [&'a str],
);

/// Checks every row (the rows with the same jurisdiction, date and flags in one run of the
/// binary) and fails at the end, naming each row that does not hold and why.
fn fact(rows: &[Row<'_>]) {
    let mut failures = Vec::new();
    let mut done = vec![false; rows.len()];
    for i in 0..rows.len() {
        if done[i] {
            continue;
        }
        let (j, at, flags, ..) = rows[i];
        let group: Vec<usize> = (i..rows.len())
            .filter(|&k| (rows[k].0, rows[k].1, rows[k].2) == (j, at, flags))
            .collect();
        let targets: Vec<&str> = group.iter().map(|&k| rows[k].3).collect();
        let answers = check(j, at, flags, &targets);
        for (n, &k) in group.iter().enumerate() {
            done[k] = true;
            let problems = match &answers {
                Ok(answers) => verify(&rows[k], &answers[n]),
                Err(e) => vec![e.clone()],
            };
            let (j, at, flags, target, ..) = rows[k];
            for p in problems {
                failures.push(format!("row {k} ({j} {at} {flags:?} {target}): {p}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows do not hold:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// `blocklab check --json` for `targets`: one JSON answer each, or why there is none.
fn check(j: &str, at: &str, flags: &[&str], targets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["check", "--jurisdiction", j, "--at", at, "--json"];
    args.extend_from_slice(flags);
    args.extend_from_slice(targets);
    let out = blocklab(&args);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("exit {:?}: {err}", out.status));
    }
    let answers = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not one JSON object a line: {e}")))
        .collect::<Result<Vec<Value>, String>>()?;
    if answers.len() != targets.len() {
        return Err(format!(
            "{} answers for {} targets",
            answers.len(),
            targets.len()
        ));
    }
    Ok(answers)
}

/// What is wrong with `v` as the answer to `row` (nothing: empty).
fn verify(row: &Row<'_>, v: &Value) -> Vec<String> {
    let &(j, at, _, target, verdict, checks) = row;
    let mut wrong = Vec::new();
    for (key, want) in [("target", target), ("jurisdiction", j), ("at", at)] {
        if v[key] != want {
            wrong.push(format!("{key} is {}, not {want}", v[key]));
        }
    }
    if verdict == "allow" {
        if v["verdict"] != "allow" || !v["rule"].is_null() {
            wrong.push(format!("not allowed: {} by {}", v["verdict"], v["rule"]));
        }
    } else {
        if v["verdict"] != "block" || v["rule"] != verdict {
            wrong.push(format!(
                "not blocked by {verdict}: {} by {}",
                v["verdict"], v["rule"]
            ));
        }
        for key in ["basis", "source"]
            .into_iter()
            .filter(|_| v["verdict"] == "block")
        {
            if v[key].as_str().is_none_or(str::is_empty) {
                wrong.push(format!("every fact carries a {key}"));
            }
        }
    }
    for c in checks {
        if !holds(v, c) {
            wrong.push(format!("`{c}` does not hold"));
        }
    }
    if !wrong.is_empty() {
        wrong.push(format!("answer: {v}"));
    }
    wrong
}

/// Whether the check `c` (`key=value`, `key~part`, `key!~part`; see [`Row`]) holds for `v`.
fn holds(v: &Value, c: &str) -> bool {
    let op = c
        .find(['=', '~'])
        .expect("a check is key=value, key~part or key!~part");
    let (key, want) = (&c[..op], &c[op + 1..]);
    let (key, negated) = match key.strip_suffix('!') {
        Some(k) => (k, true),
        None => (key, false),
    };
    let got = key.split('.').try_fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => v.get(i),
        Err(_) => v.get(k),
    });
    let yes = if c.as_bytes()[op] == b'=' {
        got.map_or("absent".to_string(), text) == want
    } else {
        match got {
            Some(Value::Array(items)) => items.iter().any(|x| text(x) == want),
            Some(x) => text(x).contains(want),
            None => false,
        }
    };
    yes != negated
}

/// A JSON value as a check compares it: text unquoted, a list as its items joined by `,`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

const SNI: &[&str] = &["techniques=http-blockpage,tls-reset,quic-drop"];
const SNI_NO_HTTP: &[&str] = &["techniques=tls-reset,quic-drop"];
const THROTTLE: &[&str] = &["techniques=throttle"];
const QUIC: &[&str] = &["techniques=quic-drop"];
const NX: &[&str] = &["techniques=dns-nxdomain"];

#[test]
fn linkedin_blocked_from_17_november_2016() {
    const LI: &[&str] = &["techniques=dns-blockpage,http-blockpage,ip-drop"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2016-11-16", &[], "linkedin.com", "allow", &[]),
        ("ru", "2016-11-16", &[], "www.linkedin.com", "allow", &[]),
        ("ru", "2016-11-17", &[], "linkedin.com", "ru-linkedin", LI),
        ("ru", "2016-11-17", &[], "static.licdn.com", "ru-linkedin", LI),
        ("ru", "2024-01-01", &[], "www.linkedin.com", "ru-linkedin", LI),
    ];
    fact(rows);
}

#[test]
fn twitter_throttled_in_2021_with_substring_collateral() {
    const T: &str = "ru-twitter-throttle-2021";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2021-03-09", &[], "twitter.com", "allow", &[]),
        ("ru", "2021-03-09", &[], "microsoft.com", "allow", &[]),
        ("ru", "2021-03-09", &[], "reddit.com", "allow", &[]),
        ("ru", "2021-03-10", &[], "twitter.com", T, THROTTLE),
        ("ru", "2021-03-10", &[], "pbs.twimg.com", T, THROTTLE),
        ("ru", "2021-04-01", &[], "twitter.com", T, THROTTLE),
        ("ru", "2021-04-01", &[], "microsoft.com", T, THROTTLE),
        ("ru", "2021-04-01", &[], "reddit.com", T, THROTTLE),
        ("ru", "2021-04-01", &[], "t.co", T, THROTTLE),
        ("ru", "2021-04-01", &[], "example.org", "allow", &[]),
        ("ru", "2021-05-16", &[], "twitter.com", T, THROTTLE),
        ("ru", "2021-05-16", &[], "microsoft.com", T, THROTTLE),
        ("ru", "2021-05-17", &[], "twitter.com", "allow", &[]),
        ("ru", "2021-05-17", &[], "microsoft.com", "allow", &[]),
        ("ru", "2021-06-01", &[], "twitter.com", "allow", &[]),
        ("ru", "2021-06-01", &[], "microsoft.com", "allow", &[]),
    ];
    fact(rows);
}

#[test]
fn twitter_throttled_then_blocked_in_2022() {
    const T: &str = "ru-twitter-throttle-2022";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2022-02-25", &[], "twitter.com", "allow", &[]),
        ("ru", "2022-02-25", &[], "x.com", "allow", &[]),
        ("ru", "2022-02-26", &[], "twitter.com", T, THROTTLE),
        ("ru", "2022-02-26", &[], "x.com", T, THROTTLE),
        ("ru", "2022-02-26", &[], "t.co", T, THROTTLE),
        ("ru", "2022-02-26", &[], "abs.twimg.com", T, THROTTLE),
        ("ru", "2022-02-26", &[], "microsoft.com", "allow", &[]),
        ("ru", "2022-03-04", &[], "twitter.com", "ru-twitter", SNI),
        ("ru", "2022-03-04", &[], "x.com", "ru-twitter", SNI),
        ("ru", "2022-03-04", &[], "t.co", "ru-twitter", SNI),
        ("ru", "2022-03-04", &[], "abs.twimg.com", "ru-twitter", SNI),
        ("ru", "2025-01-01", &[], "twitter.com", "ru-twitter", SNI),
        ("ru", "2025-01-01", &[], "api.x.com", "ru-twitter", SNI),
    ];
    fact(rows);
}

#[test]
fn facebook_and_instagram_2022() {
    const FB: &str = "ru-facebook";
    const IG: &str = "ru-instagram";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2022-03-03", &[], "facebook.com", "allow", &[]),
        ("ru", "2022-03-03", &[], "instagram.com", "allow", &[]),
        ("ru", "2022-03-04", &[], "facebook.com", FB, SNI),
        ("ru", "2022-03-04", &[], "www.facebook.com", FB, SNI),
        ("ru", "2022-03-04", &[], "fb.com", FB, SNI),
        ("ru", "2022-03-04", &[], "static.xx.fbcdn.net", FB, SNI),
        ("ru", "2022-03-04", &[], "connect.facebook.net", FB, SNI),
        ("ru", "2022-03-04", &[], "messenger.com", FB, SNI),
        ("ru", "2022-03-04", &[], "instagram.com", "allow", &[]),
        ("ru", "2022-03-13", &[], "instagram.com", "allow", &[]),
        ("ru", "2022-03-13", &[], "facebook.com", FB, SNI),
        ("ru", "2022-03-14", &[], "instagram.com", IG, SNI),
        ("ru", "2022-03-14", &[], "scontent.cdninstagram.com", IG, SNI),
        // Not a suffix on a label boundary: not blocked.
        ("ru", "2022-03-14", &[], "notfacebook.com", "allow", &[]),
        ("ru", "2022-03-14", &[], "facebook.com.example", "allow", &[]),
    ];
    fact(rows);
}

#[test]
fn quic_v1_to_foreign_hosts_from_4_march_2022() {
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2022-03-03", &[], "8.8.8.8", "allow", &[]),
        ("ru", "2022-03-03", &[], "2001:db8::1", "allow", &[]),
        ("ru", "2022-03-04", &[], "8.8.8.8", "ru-quic-v1", QUIC),
        ("ru", "2022-03-04", &[], "2001:db8::1", "ru-quic-v1", QUIC),
    ];
    fact(rows);
}

#[test]
fn youtube_signal_discord_2024() {
    const YT: &str = "rr1---sn-abc.googlevideo.com";
    const SIGNAL_SERVICE: &str = "textsecure-service.whispersystems.org";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2024-07-11", &[], YT, "allow", &[]),
        ("ru", "2024-07-12", &[], YT, "ru-youtube-throttle", THROTTLE),
        ("ru", "2024-08-08", &[], "signal.org", "allow", &[]),
        ("ru", "2024-08-09", &[], "signal.org", "ru-signal", SNI_NO_HTTP),
        ("ru", "2024-08-09", &[], "updates.signal.org", "ru-signal", SNI_NO_HTTP),
        ("ru", "2024-08-09", &[], SIGNAL_SERVICE, "ru-signal", SNI_NO_HTTP),
        ("ru", "2024-10-07", &[], "discord.com", "allow", &[]),
        ("ru", "2024-10-08", &[], "discord.com", "ru-discord", SNI_NO_HTTP),
        ("ru", "2024-10-08", &[], "discord.gg", "ru-discord", SNI_NO_HTTP),
        ("ru", "2024-10-08", &[], "cdn.discordapp.com", "ru-discord", SNI_NO_HTTP),
    ];
    fact(rows);
}

#[test]
fn registry_snapshot_speaks_only_from_its_date() {
    // First entries of rules/ru/registry.lst and rules/ru/ipsum.lst.
    const REGISTRY: &[&str] = &["techniques=dns-blockpage,http-blockpage,tls-reset,quic-drop"];
    const IP_DROP: &[&str] = &["techniques=ip-drop"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2026-07-03", &[], "0.nb-novorossiysk.net", "allow", &[]),
        ("ru", "2026-07-03", &[], "188.166.238.170", "ru-quic-v1", QUIC),
        ("ru", "2026-07-04", &[], "0.nb-novorossiysk.net", "ru-registry", REGISTRY),
        ("ru", "2026-07-04", &[], "188.166.238.170", "ru-registry-ips", IP_DROP),
        // A dated rule listed first beats the snapshot for the same name.
        ("ru", "2026-07-04", &[], "fbcdn.net", "ru-facebook", SNI),
    ];
    fact(rows);
}

#[test]
fn eu_blocks_rt_and_sputnik_by_dns_and_russia_does_not() {
    const E: &str = "eu-rt-sputnik";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("eu", "2022-03-01", &[], "rt.com", "allow", &[]),
        ("eu", "2022-03-01", &[], "sputniknews.com", "allow", &[]),
        ("eu", "2022-03-02", &[], "rt.com", E, NX),
        ("eu", "2022-03-02", &[], "de.rt.com", E, NX),
        ("eu", "2022-03-02", &[], "francais.rt.com", E, NX),
        ("eu", "2022-03-02", &[], "sputniknews.com", E, NX),
        ("eu", "2022-03-10", &[], "rt.com", E, NX),
        ("eu", "2022-03-10", &[], "facebook.com", "allow", &[]),
        ("eu", "2022-03-10", &[], "twitter.com", "allow", &[]),
        ("ru", "2022-03-10", &[], "rt.com", "allow", &[]),
        ("ru", "2022-03-10", &[], "sputniknews.com", "allow", &[]),
    ];
    fact(rows);
}

#[test]
fn urls_and_case_and_idn_targets() {
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2022-03-10", &[], "https://www.facebook.com/some/page", "ru-facebook", SNI),
        ("ru", "2022-03-10", &[], "FaceBook.COM.", "ru-facebook", SNI),
    ];
    fact(rows);
    let out = blocklab(&[
        "check",
        "-j",
        "ru",
        "--at",
        "2022-03-10",
        "--json",
        "пример.рф",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "allow");
}

/// The one JSON answer of `blocklab ARGS` (which must succeed).
fn json(args: &[&str]) -> Value {
    let out = blocklab(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON answer")
}

#[test]
fn text_output_explains_the_decision() {
    let out = blocklab(&[
        "check",
        "--jurisdiction",
        "ru",
        "--at",
        "2021-04-01",
        "microsoft.com",
    ]);
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
    for args in [
        &["check", "-j", "xx", "--at", "2022-03-10", "a.com"][..],
        &["check", "-j", "ru", "--at", "2022-02-30", "a.com"],
        &["check", "-j", "ru", "--at", "2022-03-10", "bad name.com"],
        &["check", "--client", "192.0.2.1", "a.com"],
        &["check", "a.com"],
    ] {
        let out = blocklab(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains the error");
        assert!(out.stdout.is_empty(), "{args:?} prints no verdict");
    }
    let out = blocklab(&["check", "--client", "192.0.2.1", "a.com"]);
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
    let cfg = cfg.to_str().unwrap();
    let run = |client: &str| {
        json(&[
            "check", "--config", cfg, "--client", client, "--json", "rt.com",
        ])
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

// ---- Facts 2021-2026 (README).

const UDP53: &[&str] = &["--port", "udp/53"];
const TLS: &[&str] = &["--port", "tcp/443"];
const MTS: &[&str] = &["--isp", "mts"];
const ECH: &[&str] = &["--ech"];
const MOBILE: &[&str] = &["--isp", "mobile"];

#[test]
fn doh_names_reset_and_udp_dns_to_8888_dropped_from_september_2021() {
    const RESET: &[&str] = &["techniques=tls-reset"];
    const G: &str = "dns.google";
    const CF: &str = "1dot1dot1dot1.cloudflare-dns.com";
    const ODNS: &str = "doh.opendns.com";
    const UDP53_DROP: &[&str] = &["techniques=ip-drop", "conditions.0=ports = udp/53"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2021-09-02", &[], G, "allow", &[]),
        ("ru", "2021-09-03", &[], G, "ru-doh", RESET),
        ("ru", "2023-01-01", &[], G, "ru-doh", &[]),
        ("ru", "2021-09-02", &[], CF, "allow", &[]),
        ("ru", "2021-09-03", &[], CF, "ru-doh", RESET),
        ("ru", "2023-01-01", &[], CF, "ru-doh", &[]),
        ("ru", "2021-09-02", &[], ODNS, "allow", &[]),
        ("ru", "2021-09-03", &[], ODNS, "ru-doh", RESET),
        ("ru", "2023-01-01", &[], ODNS, "ru-doh", &[]),
        ("ru", "2021-09-03", &[], "dns.quad9.net", "allow", &[]),
        // UDP/53 to 8.8.8.8 only: another port or TCP passes.
        ("ru", "2021-09-02", UDP53, "8.8.8.8", "allow", &[]),
        ("ru", "2021-09-03", UDP53, "8.8.8.8", "ru-dns-8888", UDP53_DROP),
        ("ru", "2021-09-03", &["--port", "tcp/53"], "8.8.8.8", "allow", &[]),
        ("ru", "2021-09-03", &["--port", "udp/54"], "8.8.8.8", "allow", &[]),
        ("ru", "2021-09-03", &[], "8.8.8.8", "allow", &[]),
    ];
    fact(rows);
}

#[test]
fn tor_dirauths_blocked_at_some_isps_from_december_2021() {
    const MORIA1: &str = "128.31.0.39";
    const R: &str = "ru-tor-dirauths";
    const BEELINE: &[&str] = &["--isp", "beeline"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2021-11-30", MTS, MORIA1, "allow", &[]),
        ("ru", "2021-12-01", MTS, MORIA1, R, &["techniques=ip-drop", "isp=mts"]),
        ("ru", "2021-12-01", BEELINE, "2001:678:558:1000::244", R, &[]),
        // Not at every ISP, and not for a client of unknown ISP.
        ("ru", "2021-12-01", &["--isp", "rostelecom"], MORIA1, "allow", &[]),
        ("ru", "2021-12-01", &[], MORIA1, "allow", &[]),
        ("ru", "2024-01-01", MTS, "171.25.193.9", R, &[]),
    ];
    fact(rows);
}

#[test]
fn torproject_in_the_registry_from_7_december_2021_to_14_july_2022() {
    const WWW: &str = "www.torproject.org";
    const R: &str = "ru-torproject";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2021-12-06", &[], WWW, "allow", &[]),
        ("ru", "2021-12-07", &[], WWW, R, &["techniques=http-blockpage,tls-reset"]),
        ("ru", "2022-07-13", &[], "torproject.org", R, &[]),
        ("ru", "2022-07-14", &[], WWW, "allow", &[]),
        ("ru", "2025-01-01", &[], WWW, "allow", &[]),
    ];
    fact(rows);
}

#[test]
fn sni_quic_drop_with_the_2024_sni_blocks() {
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2024-08-09", &[], "signal.org", "ru-signal", &["techniques~quic-drop"]),
        ("ru", "2024-10-08", &[], "discord.gg", "ru-discord", &["techniques~quic-drop"]),
    ];
    fact(rows);
}

#[test]
fn googlevideo_policed_from_july_2024() {
    const YT: &str = "rr1---sn-abc.googlevideo.com";
    const ASSUMED: &[&str] = &["techniques=throttle", "basis~assumption"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2024-07-11", &[], YT, "allow", &[]),
        ("ru", "2024-07-12", &[], YT, "ru-youtube-throttle", ASSUMED),
    ];
    fact(rows);
}

#[test]
fn cloudflare_ech_dropped_only_with_an_ech_extension_from_november_2024() {
    const CF: &str = "cloudflare-ech.com";
    const R: &str = "ru-ech-cloudflare";
    const ECH_DROP: &[&str] = &["techniques=tls-drop,quic-drop", "conditions.0=ech = true"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2024-11-04", ECH, CF, "allow", &[]),
        ("ru", "2024-11-05", ECH, CF, R, ECH_DROP),
        // Either alone passes: the SNI without ECH, ECH with another SNI.
        ("ru", "2024-11-05", &[], CF, "allow", &[]),
        ("ru", "2024-11-05", ECH, "example.org", "allow", &[]),
        ("ru", "2026-01-01", ECH, CF, R, &[]),
    ];
    fact(rows);
}

#[test]
fn foreign_hosting_freezes_after_16_kb_from_9_june_2025() {
    const CF: &str = "104.16.1.1";
    const R: &str = "ru-foreign-hosting-freeze";
    const FREEZE: &[&str] = &[
        "techniques=freeze",
        "freeze_after_bytes=16384",
        "residual_secs=absent",
    ];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Before: only the 2022 QUIC rule covers the address (not a TCP technique).
        ("ru", "2025-06-08", TLS, CF, "ru-quic-v1", &[]),
        ("ru", "2025-06-09", TLS, CF, R, FREEZE),
        ("ru", "2025-06-09", TLS, "2606:4700::1", R, &[]),
        // The wrong port (or none) is not this rule.
        ("ru", "2025-06-09", &["--port", "tcp/80"], CF, "ru-quic-v1", &[]),
        ("ru", "2025-06-09", &[], CF, "ru-quic-v1", &[]),
        ("ru", "2026-03-01", TLS, CF, R, &[]),
    ];
    fact(rows);
}

/// The JA4 of pion's default DTLS ClientHello, as `tests/data/webrtc/` recorded it.
const PION_JA4: &str = "dd2i060600_b94582744588_4bbccbffe950";

#[test]
fn snowflake_dtls_with_pions_default_ja4_dropped_from_30_march_2026() {
    const R: &str = "ru-snowflake-dtls-2026";
    const PROXY: &str = "198.51.100.20";
    let pion = ["--port", "udp/50000", "--ja4", PION_JA4];
    // A DTLS 1.3 ClientHello (what the browser-extension proxies sent, which passed).
    let other = [
        "--port",
        "udp/50000",
        "--ja4",
        "dd3i0912h2_8daaf6152771_b186095e22b6",
    ];
    let tcp = ["--port", "tcp/443", "--ja4", PION_JA4];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Before: every address has only the 2022 QUIC rule (QUIC Initials, not DTLS).
        ("ru", "2026-03-29", &pion, PROXY, "ru-quic-v1", &[]),
        ("ru", "2026-03-30", &pion, PROXY, R, &["techniques=tls-drop"]),
        ("ru", "2026-03-30", &pion, "2001:db8::20", R, &[]),
        ("ru", "2026-12-01", &pion, PROXY, R, &[]),
        // Another fingerprint, no fingerprint, or TCP: not this rule.
        ("ru", "2026-03-30", &other, PROXY, "ru-quic-v1", &[]),
        ("ru", "2026-03-30", &["--port", "udp/50000"], PROXY, "ru-quic-v1", &[]),
        ("ru", "2026-03-30", &tcp, PROXY, "ru-quic-v1", &[]),
        // Not a fact of the EU.
        ("eu", "2026-03-30", &pion, PROXY, "allow", &[]),
    ];
    fact(rows);
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
    let (tls, quic) = (
        ["--rules", d, "--port", "tcp/443"],
        ["--rules", d, "--port", "udp/443"],
    );
    const OVH: &str = "198.51.100.7";
    const RESIDUAL: &[&str] = &["residual_secs=600", "techniques=tls-drop"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2025-05-27", &tls, OVH, "ru-quic-v1", &[]),
        ("ru", "2025-05-28", &tls, OVH, "ru-ovh-residual", RESIDUAL),
        ("ru", "2025-05-28", &quic, OVH, "ru-quic-v1", &[]),
    ];
    fact(rows);
}

#[test]
fn mobile_networks_allow_only_a_list_by_sni_or_address_from_september_2025() {
    const R: &str = "ru-mobile-allowlist";
    const EXCEPTION: &[&str] = &["exception=ru-mobile-allowlist-allow"];
    const YANDEX: &[&str] = &["--isp", "mobile", "--dst", "77.88.8.8"];
    const ELSEWHERE: &[&str] = &["--isp", "mobile", "--dst", "192.0.2.1"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2025-09-06", MOBILE, "example.org", "allow", &[]),
        ("ru", "2025-09-07", MOBILE, "example.org", R, &["techniques=tls-drop"]),
        // The allowlist, by SNI ...
        ("ru", "2025-09-07", MOBILE, "www.gosuslugi.ru", "allow", EXCEPTION),
        // ... or by destination address: any SNI to a Yandex address passes.
        ("ru", "2025-09-07", YANDEX, "example.org", "allow", EXCEPTION),
        ("ru", "2025-09-07", ELSEWHERE, "example.org", R, &[]),
        // Home ISPs are not under the regime.
        ("ru", "2025-09-07", &["--isp", "rostelecom"], "example.org", "allow", &[]),
        ("ru", "2025-09-07", &[], "example.org", "allow", &[]),
        // Names blocked anyway stay blocked by their own rule.
        ("ru", "2025-10-01", MOBILE, "twitter.com", "ru-twitter", &[]),
    ];
    fact(rows);
}

#[test]
fn whatsapp_throttled_from_november_2025_then_removed_from_dns() {
    const T: &str = "ru-whatsapp-throttle";
    const DNS: &str = "ru-nsdi-2026-whatsapp";
    const NX_THROTTLE: &[&str] = &["techniques=dns-nxdomain,throttle"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2025-11-27", &[], "whatsapp.com", "allow", &[]),
        ("ru", "2025-11-28", &[], "whatsapp.com", T, THROTTLE),
        ("ru", "2025-11-27", &[], "web.whatsapp.com", "allow", &[]),
        ("ru", "2025-11-28", &[], "web.whatsapp.com", T, THROTTLE),
        ("ru", "2025-11-27", &[], "whatsapp.net", "allow", &[]),
        ("ru", "2025-11-28", &[], "whatsapp.net", T, THROTTLE),
        ("ru", "2025-11-27", &[], "wa.me", "allow", &[]),
        ("ru", "2025-11-28", &[], "wa.me", T, THROTTLE),
        ("ru", "2026-02-10", &[], "whatsapp.com", T, &[]),
        ("ru", "2026-02-11", &[], "whatsapp.com", DNS, NX_THROTTLE),
        ("ru", "2026-02-10", &[], "web.whatsapp.com", T, &[]),
        ("ru", "2026-02-11", &[], "web.whatsapp.com", DNS, NX_THROTTLE),
        // whatsapp.net and wa.me were kept in the national DNS.
        ("ru", "2026-03-01", &[], "whatsapp.net", T, &[]),
        ("ru", "2026-03-01", &[], "wa.me", T, &[]),
    ];
    fact(rows);
}

#[test]
fn telegram_throttled_from_10_february_2026() {
    const T: &str = "ru-telegram-throttle";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2026-02-09", &[], "telegram.org", "allow", &[]),
        ("ru", "2026-02-10", &[], "telegram.org", T, &[]),
        ("ru", "2026-02-10", &[], "t.me", T, &[]),
        ("ru", "2026-06-01", &[], "telegram.me", T, &[]),
    ];
    fact(rows);
}

#[test]
fn national_dns_removals_of_february_2026() {
    const R: &str = "ru-nsdi-2026";
    const NOT_DNS: &[&str] = &["techniques!~dns-nxdomain"];
    const DNS_TOO: &[&str] = &["techniques~dns-nxdomain", "techniques~tls-reset"];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("ru", "2026-02-09", &[], "youtube.com", "allow", &[]),
        ("ru", "2026-02-10", &[], "www.youtube.com", "ru-nsdi-2026-youtube", NX),
        ("ru", "2026-02-10", &[], "bbc.com", "allow", &[]),
        ("ru", "2026-02-11", &[], "bbc.com", R, &[]),
        ("ru", "2026-02-10", &[], "dw.com", "allow", &[]),
        ("ru", "2026-02-11", &[], "dw.com", R, &[]),
        ("ru", "2026-02-10", &[], "rferl.org", "allow", &[]),
        ("ru", "2026-02-11", &[], "rferl.org", R, &[]),
        ("ru", "2026-02-10", &[], "themoscowtimes.com", "allow", &[]),
        ("ru", "2026-02-11", &[], "themoscowtimes.com", R, &[]),
        ("ru", "2026-02-10", &[], "torproject.org", "allow", &[]),
        ("ru", "2026-02-11", &[], "torproject.org", R, &[]),
        ("ru", "2026-02-10", &[], "windscribe.com", "allow", &[]),
        ("ru", "2026-02-11", &[], "windscribe.com", R, &[]),
        ("ru", "2026-02-10", &[], "apkmirror.com", "allow", &[]),
        ("ru", "2026-02-11", &[], "apkmirror.com", R, &[]),
        ("ru", "2026-02-10", &[], "currenttime.tv", "allow", &[]),
        ("ru", "2026-02-11", &[], "currenttime.tv", R, &[]),
        // Meta's names: the 2022 TLS block before, the DNS removal on top of it after.
        ("ru", "2026-02-10", &[], "instagram.com", "ru-instagram", NOT_DNS),
        ("ru", "2026-02-11", &[], "instagram.com", "ru-nsdi-2026-meta", DNS_TOO),
        ("ru", "2026-02-11", &[], "fbcdn.net", "ru-facebook", &[]),
    ];
    fact(rows);
}

#[test]
fn eu_media_bans_2022_to_2024() {
    const MODELLED: &[&str] = &["techniques=dns-nxdomain", "basis~modelling choice"];
    let bans: &[(&str, &str, &str, &[&str])] = &[
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
    let mut rows: Vec<Row<'_>> = Vec::new();
    for &(rule, before, from, names) in bans {
        for (i, &n) in names.iter().enumerate() {
            rows.push(("eu", before, &[], n, "allow", &[]));
            rows.push(("eu", from, &[], n, rule, if i == 0 { MODELLED } else { NX }));
            rows.push(("eu", "2026-03-01", &[], n, rule, NX));
        }
    }
    // The uncertain date says so.
    rows.push((
        "eu",
        "2024-06-01",
        &[],
        "ria.ru",
        "eu-2024-1428",
        &["basis~UNCERTAIN"],
    ));
    fact(&rows);
}

#[test]
fn check_hour_and_ja4_conditions_on_a_lab_rules_dir() {
    // A rules directory without the shipped jurisdictions: `--jurisdiction` needs no client map.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lab.toml"),
        include_str!("data/rules/hours-ja4.toml"),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let at = |hour: &'static str| ["--rules", d, "--hour", hour];
    let (late, early, morning) = (at("23:30"), at("05:59"), at("06:00"));
    let stun = |ja4: &'static str| ["--rules", d, "--port", "udp/3478", "--ja4", ja4];
    let fp = stun("D12D1516H2_8DAAF6152771_B186095E22B6");
    let other = stun("d13d1516h2_8daaf6152771_b186095e22b6");
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("lab", "2026-03-01", &late, "example.org", "curfew", &[]),
        ("lab", "2026-03-01", &early, "example.org", "curfew", &[]),
        ("lab", "2026-03-01", &morning, "example.org", "allow", &[]),
        ("lab", "2026-03-01", &["--rules", d], "example.org", "allow", &[]),
        ("lab", "2026-03-01", &fp, "192.0.2.9", "fp", &[]),
        ("lab", "2026-03-01", &other, "192.0.2.9", "allow", &[]),
    ];
    fact(rows);
    // Bad flag values are clear errors (exit 2), not panics.
    for bad in [["--hour", "25:00"], ["--ja4", "nope"], ["--port", "tcp/0"]] {
        let out = blocklab(&[
            "check",
            "--rules",
            d,
            "-j",
            "lab",
            bad[0],
            bad[1],
            "example.org",
        ]);
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
    let cfg = cfg.to_str().unwrap();
    let run = |who: &[&str], target: &str| {
        let mut args = vec!["check", "--config", cfg, "--json"];
        args.extend_from_slice(who);
        args.push(target);
        json(&args)
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
    let out = blocklab(&["check", "--config", cfg, "--client-group", "nope", "x.org"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ru2021, ru2025"));
}
