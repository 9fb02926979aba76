//! The compiled policy's semantics: precedence, dates, imports (the real RKN 2014 dump), VPN
//! rules, client mapping.

use std::net::IpAddr;
use std::path::Path;

use blocklab::policy::{At, ClientNet, Decision, Policy, Target};
use blocklab::rules::{normalize_domain, Day, RuleSet};

fn day(s: &str) -> At {
    At::Day(s.parse::<Day>().unwrap())
}

fn policy_from(dir: &Path, files: &[(&str, &str)]) -> Policy {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let rules = RuleSet::load_dir(dir).unwrap_or_else(|e| panic!("{e}"));
    Policy::compile(
        &rules,
        &[ClientNet {
            net: "127.0.0.0/8".parse().unwrap(),
            jurisdiction: "xx".into(),
        }],
    )
    .unwrap()
}

fn rule_of(p: &Policy, d: Decision) -> Option<String> {
    match d {
        Decision::Block(b) => Some(p.rule(b.rule).id.clone()),
        Decision::Allow { .. } => None,
    }
}

fn decide(p: &Policy, target: &str, at: &str) -> Option<String> {
    let j = p.jurisdiction_by_code("xx").unwrap();
    rule_of(p, p.decide_in(j, Target::parse(target), day(at)))
}

const HEADER: &str = "[jurisdiction]\ncode = \"xx\"\nname = \"Test\"\nutc_offset = \"+03:00\"\n";

#[test]
fn precedence_allow_then_most_specific_then_first_listed() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}
[[rule]]
id = \"broad\"
domains = [\"example.com\"]
techniques = [\"dns-nxdomain\"]

[[rule]]
id = \"narrow\"
domains = [\"deep.example.com\"]
techniques = [\"tls-reset\"]

[[rule]]
id = \"tie-second\"
domains = [\"example.com\"]
techniques = [\"tls-drop\"]

[[rule]]
id = \"exception\"
exact = [\"ok.deep.example.com\"]
allow = true

[[rule]]
id = \"exact-only\"
exact = [\"exact.example.org\"]
techniques = [\"dns-refused\"]

[[rule]]
id = \"net16\"
ips = [\"10.1.0.0/16\"]
techniques = [\"ip-drop\"]

[[rule]]
id = \"net24\"
ips = [\"10.1.2.0/24\"]
techniques = [\"ip-reset\"]

[[rule]]
id = \"net-exception\"
ips = [\"10.1.2.3\"]
allow = true
"
    );
    let p = policy_from(dir.path(), &[("xx.toml", &text)]);
    let at = "2022-01-01";
    assert_eq!(
        decide(&p, "example.com", at).as_deref(),
        Some("broad"),
        "ties go to the rule listed first"
    );
    assert_eq!(decide(&p, "www.example.com", at).as_deref(), Some("broad"));
    assert_eq!(
        decide(&p, "deep.example.com", at).as_deref(),
        Some("narrow"),
        "longest suffix wins"
    );
    assert_eq!(
        decide(&p, "a.b.deep.example.com", at).as_deref(),
        Some("narrow")
    );
    assert_eq!(
        decide(&p, "ok.deep.example.com", at),
        None,
        "allow beats block"
    );
    assert_eq!(
        decide(&p, "x.ok.deep.example.com", at).as_deref(),
        Some("narrow"),
        "exact does not cover subdomains"
    );
    assert_eq!(
        decide(&p, "exact.example.org", at).as_deref(),
        Some("exact-only")
    );
    assert_eq!(decide(&p, "www.exact.example.org", at), None);
    assert_eq!(decide(&p, "example.org", at), None);
    assert_eq!(decide(&p, "10.1.9.9", at).as_deref(), Some("net16"));
    assert_eq!(
        decide(&p, "10.1.2.9", at).as_deref(),
        Some("net24"),
        "longest prefix wins"
    );
    assert_eq!(decide(&p, "10.1.2.3", at), None, "allow beats block");
    assert_eq!(decide(&p, "10.2.0.0", at), None);
    // The allow exception names itself.
    let j = p.jurisdiction_by_code("xx").unwrap();
    match p.decide_in(j, Target::Domain("ok.deep.example.com"), day(at)) {
        Decision::Allow { rule: Some(r), .. } => assert_eq!(p.rule(r).id, "exception"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dates_start_at_local_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{HEADER}\n[[rule]]\nid = \"r\"\ndomains = [\"a.example\"]\nsince = \"2022-03-14\"\nuntil = \"2022-03-20\"\ntechniques = [\"tls-reset\"]\n");
    let p = policy_from(dir.path(), &[("xx.toml", &text)]);
    let j = p.jurisdiction_by_code("xx").unwrap();
    let at = |t: i64| {
        rule_of(
            &p,
            p.decide_in(j, Target::Domain("a.example"), At::Instant(t)),
        )
    };
    // 2022-03-14 00:00 at +03:00 is 2022-03-13T21:00:00Z = 1647205200.
    assert_eq!(at(1_647_205_199), None);
    assert_eq!(at(1_647_205_200).as_deref(), Some("r"));
    // until is exclusive: 2022-03-20 00:00 +03:00 = 1647723600.
    assert_eq!(at(1_647_723_599).as_deref(), Some("r"));
    assert_eq!(at(1_647_723_600), None);
}

#[test]
fn substrings_match_anywhere_and_longest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\n[[rule]]\nid = \"short\"\nsubstrings = [\"t.co\"]\ntechniques = [\"throttle\"]\nthrottle_kbps = 140\n\n[[rule]]\nid = \"long\"\nsubstrings = [\"soft.com\"]\ntechniques = [\"tls-reset\"]\n"
    );
    let p = policy_from(dir.path(), &[("xx.toml", &text)]);
    assert_eq!(
        decide(&p, "reddit.com", "2022-01-01").as_deref(),
        Some("short")
    );
    assert_eq!(
        decide(&p, "MICROSOFT.COM", "2022-01-01").as_deref(),
        Some("long")
    );
    assert_eq!(decide(&p, "example.com", "2022-01-01"), None);
}

/// Every domain and IP of the real Roskomnadzor dump of 2014 (its first 300 entries, in
/// `tests/data/`) is blocked from its own decision date on, and not before (unless an earlier
/// entry covers it).
#[test]
fn rkn_2014_dump_imports_with_per_entry_dates() {
    let dump = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rkn-dump-2014-head.csv"
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\n[[rule]]\nid = \"rkn\"\nimport = {{ path = \"{dump}\", format = \"rkn-csv\" }}\ntechniques = [\"dns-blockpage\", \"ip-drop\"]\n"
    );
    let p = policy_from(dir.path(), &[("xx.toml", &text)]);
    // An independent reading of the dump: windows-1251, `;`-separated.
    let bytes = std::fs::read(dump).unwrap();
    let (text, _, bad) = encoding_rs::WINDOWS_1251.decode(&bytes);
    assert!(!bad);
    let mut first_date: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    let mut lines = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(';').collect();
        let date = f[f.len() - 1].trim().to_string();
        let mut keys: Vec<String> = f[0]
            .split('|')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        // Callers hand the policy normalised names (punycode for IDN).
        keys.extend(
            f[1].split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| normalize_domain(s).unwrap().into_owned()),
        );
        for k in keys {
            let e = first_date.entry(k).or_insert_with(|| date.clone());
            if date < *e {
                *e = date.clone();
            }
        }
        lines += 1;
    }
    assert!(
        lines == 300 && first_date.len() > 300,
        "{lines} lines, {} keys",
        first_date.len()
    );
    let j = p.jurisdiction_by_code("xx").unwrap();
    let mut checked = 0;
    for (key, date) in &first_date {
        let d: Day = date.parse().unwrap();
        let target = if key.parse::<IpAddr>().is_ok() {
            Target::Ip(key.parse().unwrap())
        } else {
            Target::Domain(key)
        };
        let on = p.decide_in(j, target, At::Day(d));
        assert!(on.is_block(), "{key} blocked on {date}");
        assert_eq!(p.rule(on.rule().unwrap()).id, "rkn");
        let later = p.decide_in(j, target, day("2014-04-22"));
        assert!(later.is_block(), "{key} still blocked at the dump's date");
        // The day before its first decision it is allowed, unless a parent name was listed earlier.
        if let Target::Domain(name) = target {
            let parent_earlier = first_date
                .iter()
                .any(|(k, dd)| name.ends_with(&format!(".{k}")) && dd < date);
            if !parent_earlier {
                let before = p.decide_in(j, target, At::Day(Day(d.0 - 1)));
                assert!(!before.is_block(), "{key} not blocked before {date}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, first_date.len());
    // Subdomains of a listed domain are blocked too.
    assert!(p
        .decide_in(j, Target::Domain("www.0chan.hk"), day("2014-04-22"))
        .is_block());
}

#[test]
fn wildcards_match_subdomains_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dump.csv"),
        "Updated: 2014-04-22 11:05:00 +0000\n1.2.3.4;*.wild.example;http://wild.example/;Org;1;2013-01-01\n",
    )
    .unwrap();
    let text = format!("{HEADER}\n[[rule]]\nid = \"rkn\"\nimport = {{ path = \"dump.csv\", format = \"rkn-csv\" }}\ntechniques = [\"dns-nxdomain\"]\n");
    let p = policy_from(dir.path(), &[("xx.toml", &text)]);
    assert_eq!(
        decide(&p, "a.wild.example", "2014-01-01").as_deref(),
        Some("rkn")
    );
    assert_eq!(
        decide(&p, "x.y.wild.example", "2014-01-01").as_deref(),
        Some("rkn")
    );
    assert_eq!(
        decide(&p, "wild.example", "2014-01-01"),
        None,
        "the wildcard itself is not its apex"
    );
    assert_eq!(
        decide(&p, "http://wild.example/", "2014-01-01").as_deref(),
        Some("rkn"),
        "the URL is listed"
    );
    assert_eq!(decide(&p, "1.2.3.4", "2014-01-01").as_deref(), Some("rkn"));
    assert_eq!(decide(&p, "1.2.3.4", "2012-12-31"), None);
}

#[test]
fn other_import_formats() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hosts"),
        "# hosts\n127.0.0.1 localhost\n0.0.0.0 ads.example tracker.example # c\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nets.lst"),
        "192.0.2.0/24\n2001:db8::/32 # doc\n198.51.100.7\n",
    )
    .unwrap();
    let list = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/citizenlab-ru-head.csv"
    );
    let text = format!(
        "{HEADER}
[[rule]]
id = \"hosts\"
import = {{ path = \"hosts\", format = \"hosts\" }}
techniques = [\"dns-nxdomain\"]

[[rule]]
id = \"nets\"
import = {{ path = \"nets.lst\", format = \"cidrs\" }}
techniques = [\"ip-drop\"]

[[rule]]
id = \"citizenlab\"
import = {{ path = \"{list}\", format = \"ooni-csv\" }}
techniques = [\"tls-reset\"]
"
    );
    let p = policy_from(dir.path(), &[("xx.toml", &text)]);
    let at = "2022-01-01";
    assert_eq!(decide(&p, "ads.example", at).as_deref(), Some("hosts"));
    assert_eq!(decide(&p, "localhost", at), None);
    assert_eq!(decide(&p, "192.0.2.55", at).as_deref(), Some("nets"));
    assert_eq!(decide(&p, "2001:db8::1", at).as_deref(), Some("nets"));
    assert_eq!(decide(&p, "198.51.100.7", at).as_deref(), Some("nets"));
    assert_eq!(decide(&p, "198.51.100.8", at), None);
    // First data line of the Citizen Lab RU list.
    assert_eq!(decide(&p, "ipvnews.org", at).as_deref(), Some("citizenlab"));
    assert_eq!(
        decide(&p, "https://ipvnews.org/", at).as_deref(),
        Some("citizenlab")
    );
}

#[test]
fn vpn_rules_follow_dates() {
    let rules = RuleSet::embedded().unwrap();
    let p = Policy::compile(&rules, &[]).unwrap();
    let ru = p.jurisdiction_by_code("ru").unwrap();
    assert!(p.vpn_rule(ru, "wireguard", day("2021-08-31")).is_none());
    assert_eq!(
        p.vpn_rule(ru, "wireguard", day("2022-06-01")).unwrap().id,
        "ru-vpn-wireguard-2021"
    );
    assert!(p.vpn_rule(ru, "openvpn", day("2023-01-01")).is_none());
    assert_eq!(
        p.vpn_rule(ru, "openvpn", day("2023-09-01")).unwrap().id,
        "ru-vpn-2023"
    );
    assert_eq!(
        p.vpn_rule(ru, "wireguard", day("2023-09-01")).unwrap().id,
        "ru-vpn-2023"
    );
    assert!(p.vpn_rule(ru, "pptp", day("2023-09-01")).is_none());
    let eu = p.jurisdiction_by_code("eu").unwrap();
    assert!(p.vpn_rule(eu, "openvpn", day("2023-09-01")).is_none());
}

#[test]
fn unmapped_clients_are_refused() {
    let rules = RuleSet::embedded().unwrap();
    let clients = [ClientNet {
        net: "10.7.0.0/16".parse().unwrap(),
        jurisdiction: "ru".into(),
    }];
    let p = Policy::compile(&rules, &clients).unwrap();
    assert!(p
        .decide(
            "10.7.3.4".parse().unwrap(),
            Target::Domain("facebook.com"),
            day("2022-03-10")
        )
        .unwrap()
        .is_block());
    let err = p
        .decide(
            "10.8.0.1".parse().unwrap(),
            Target::Domain("facebook.com"),
            day("2022-03-10"),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "client 10.8.0.1 is not in any configured network"
    );
    let bad = [ClientNet {
        net: "10.0.0.0/8".parse().unwrap(),
        jurisdiction: "zz".into(),
    }];
    assert!(Policy::compile(&rules, &bad)
        .unwrap_err()
        .to_string()
        .contains("`zz`"));
}
