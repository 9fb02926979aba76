//! The lookup path allocates nothing: `Policy::decide` under a counting global allocator.

use blocklab::policy::{At, ClientNet, Conn, Policy, Target};
use blocklab::rules::RuleSet;
use blocklab::rules::{Port, Proto};

#[test]
fn decide_allocates_nothing() {
    let rules = RuleSet::embedded().unwrap();
    let clients = [ClientNet {
        net: "127.0.0.0/8".parse().unwrap(),
        jurisdiction: "ru".into(),
    }];
    let p = Policy::compile(&rules, &clients).unwrap();
    let client = "127.0.0.1".parse().unwrap();
    let targets = [
        Target::Domain("a.b.c.d.e.www.facebook.com"),
        Target::Domain("MICROSOFT.COM."),
        Target::Domain("example.org"),
        Target::Domain("0.nb-novorossiysk.net"),
        Target::Ip("188.166.238.170".parse().unwrap()),
        Target::Ip("2001:db8::1".parse().unwrap()),
        Target::Url {
            host: "facebook.com",
            path: "/x",
        },
    ];
    let ats = [
        At::Day("2021-04-01".parse().unwrap()),
        At::Day("2026-08-01".parse().unwrap()),
        At::Instant(1_650_000_000),
    ];
    let mut blocks = 0;
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            for t in targets {
                for at in ats {
                    blocks += usize::from(p.decide(client, t, at).unwrap().is_block());
                }
            }
        }
    });
    assert_eq!(info.count_total, 0, "decide() allocated: {info:?}");
    assert!(blocks > 1000, "the loop did real work: {blocks} blocks");
}

#[test]
fn decide_conn_with_conditions_allocates_nothing() {
    let rules = RuleSet::embedded().unwrap();
    let clients = [ClientNet {
        net: "127.0.0.0/8".parse().unwrap(),
        jurisdiction: "ru".into(),
    }];
    let p = Policy::compile(&rules, &clients).unwrap();
    let j = p.jurisdiction_by_code("ru").unwrap();
    let mobile = p.isp_by_id(j, "mobile");
    let client = "127.0.0.1".parse().unwrap();
    let tls = Some(Port {
        proto: Proto::Tcp,
        port: 443,
    });
    let conns = [
        Conn::default(),
        Conn {
            port: tls,
            ech: true,
            ..Conn::default()
        },
        Conn {
            port: tls,
            isp: mobile,
            dst: Some("77.88.8.8".parse().unwrap()),
            ja4: Some("t13d1516h2_8daaf6152771_b186095e22b6"),
            local_minute: Some(600),
            ..Conn::default()
        },
    ];
    let targets = [
        Target::Domain("cloudflare-ech.com"),
        Target::Domain("example.org"),
        Target::Ip("104.16.1.1".parse().unwrap()),
        Target::Ip("8.8.8.8".parse().unwrap()),
    ];
    let at = At::Day("2025-10-01".parse().unwrap());
    let mut blocks = 0;
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            for t in targets {
                for c in &conns {
                    blocks += usize::from(p.decide_conn(client, t, c, at).unwrap().is_block());
                }
            }
        }
    });
    assert_eq!(info.count_total, 0, "decide_conn() allocated: {info:?}");
    assert!(blocks > 1000, "the loop did real work: {blocks} blocks");
}
