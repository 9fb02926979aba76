//! The lookup path allocates nothing: `Policy::decide` under a counting global allocator.

use blocklab::policy::{At, ClientNet, Policy, Target};
use blocklab::rules::RuleSet;

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
