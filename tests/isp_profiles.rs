//! The shipped `[[isp]]` profiles: every blockpage (DNS address, HTTP redirect) matches an
//! OONI fingerprint for Russia through the probe's own matcher, and a profile's technique
//! overrides change what its clients get.

use blocklab::policy::{At, ClientGroup, Conn, Decision, Policy, Target};
use blocklab::probe::fingerprint::Fingerprints;
use blocklab::rules::{RuleSet, Technique};

#[test]
fn every_shipped_isp_blockpage_matches_its_ooni_fingerprint() {
    let rules = RuleSet::embedded().unwrap();
    let fp = Fingerprints::embedded().unwrap();
    let ru = rules.jurisdiction("ru").unwrap();
    let ids: Vec<&str> = ru.jurisdiction.isps.iter().map(|p| p.id.as_str()).collect();
    for want in [
        "rostelecom",
        "mts",
        "mgts",
        "tele2",
        "beeline",
        "megafon",
        "mobile",
    ] {
        assert!(ids.contains(&want), "profile {want} is shipped: {ids:?}");
    }
    let mut checked = 0;
    for p in &ru.jurisdiction.isps {
        let source = p.source.as_deref().unwrap_or("");
        if let Some(url) = &p.http_blockpage {
            let m = fp.match_http(&[("Location".into(), url.clone())], "");
            assert!(
                m.iter()
                    .any(|m| m.confirms_block && m.expected_countries.contains("RU")),
                "{}: {url} matches no RU OONI fingerprint: {m:?}",
                p.id
            );
            assert!(
                m.iter().any(|m| source.contains(&m.name)),
                "{}: the source names the matching fingerprint ({m:?}): {source}",
                p.id
            );
            checked += 1;
        }
        for ip in &p.dns_blockpage {
            let m = fp.match_dns(&[*ip], &[]);
            assert!(
                m.iter()
                    .any(|m| m.confirms_block && m.expected_countries.contains("RU")),
                "{}: {ip} matches no RU OONI DNS fingerprint: {m:?}",
                p.id
            );
            assert!(
                m.iter().any(|m| source.contains(&m.name)),
                "{}: {source}",
                p.id
            );
            checked += 1;
        }
    }
    // The jurisdiction's own pages too.
    let j = &ru.jurisdiction;
    let m = fp.match_http(
        &[("location".into(), j.http_blockpage.clone().unwrap())],
        "",
    );
    assert!(m.iter().any(|m| m.confirms_block), "{m:?}");
    assert!(checked >= 9, "{checked} pages checked");
}

#[test]
fn isp_blockpages_and_overrides_reach_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("xx.toml");
    std::fs::write(
        &p,
        r#"[jurisdiction]
code = "xx"
http_blockpage = "http://national.example/"
dns_blockpage = ["192.0.2.1"]

[[isp]]
id = "a"
http_blockpage = "http://isp-a.example/"
techniques = { "tls-reset" = "http-blockpage" }

[[isp]]
id = "b"

[[rule]]
id = "r"
domains = ["blocked.example"]
techniques = ["tls-reset", "quic-drop"]
"#,
    )
    .unwrap();
    let rules = RuleSet::load_files(&[p]).unwrap();
    let groups = [
        ClientGroup {
            nets: vec!["10.0.0.0/24".parse().unwrap()],
            jurisdiction: "xx".into(),
            isp: Some("a".into()),
            ..ClientGroup::default()
        },
        ClientGroup {
            nets: vec!["10.0.1.0/24".parse().unwrap()],
            jurisdiction: "xx".into(),
            isp: Some("b".into()),
            ..ClientGroup::default()
        },
    ];
    let policy = Policy::compile_groups(&rules, &groups).unwrap();
    let at = At::Day("2026-01-01".parse().unwrap());
    let t = Target::Domain("www.blocked.example");
    let (a, b) = ("10.0.0.5".parse().unwrap(), "10.0.1.5".parse().unwrap());
    let da = policy.decide(a, t, at).unwrap();
    let db = policy.decide(b, t, at).unwrap();
    let ts = |d: &Decision| d.techniques().iter().collect::<Vec<Technique>>();
    assert_eq!(ts(&da), [Technique::HttpBlockpage, Technique::QuicDrop]);
    assert_eq!(ts(&db), [Technique::TlsReset, Technique::QuicDrop]);
    let j = da.jurisdiction();
    let ga = policy.group_for(a).unwrap().isp;
    let gb = policy.group_for(b).unwrap().isp;
    assert_eq!(policy.http_blockpage(j, ga), Some("http://isp-a.example/"));
    assert_eq!(
        policy.http_blockpage(j, gb),
        Some("http://national.example/")
    );
    assert_eq!(
        policy.dns_blockpage(j, ga),
        ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
    );
    // A connection naming another ISP beats the group's.
    let conn = Conn {
        isp: gb,
        ..Conn::default()
    };
    let d = policy.decide_conn(a, t, &conn, at).unwrap();
    assert_eq!(ts(&d), [Technique::TlsReset, Technique::QuicDrop]);
    // A group naming an ISP the jurisdiction lacks does not compile.
    let bad = [ClientGroup {
        nets: vec!["10.0.2.0/24".parse().unwrap()],
        jurisdiction: "xx".into(),
        isp: Some("nope".into()),
        name: Some("g".into()),
        ..ClientGroup::default()
    }];
    let e = Policy::compile_groups(&rules, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`nope`") && e.contains("have: a, b"), "{e}");
}
