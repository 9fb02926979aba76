//! What the block decision costs the forward proxy per request: the verdicts it computes for
//! one plain HTTP request (URL, the name's addresses, the origin address with an allow on the
//! name or address sparing it) on a `tcp/80` connection against the shipped rules, timed over
//! many requests. Used for the README's "< 5 µs" figure.
//!
//! Usage: `cargo run --release --example decision_cost`

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use blocklab::enforce::verdict;
use blocklab::policy::{At, ClientNet, Conn, Policy, Target};
use blocklab::rules::{Port, Proto, RuleSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rules = RuleSet::embedded()?;
    let nets = [ClientNet {
        net: "127.0.0.0/8".parse()?,
        jurisdiction: "ru".into(),
    }];
    let policy = Policy::compile(&rules, &nets)?;
    let at = At::Day("2022-03-10".parse()?);
    let client: IpAddr = "127.0.0.1".parse()?;
    let origin: IpAddr = "192.0.2.10".parse()?;
    let hosts = [
        "example.org",
        "www.facebook.com",
        "microsoft.com",
        "news.example.net",
    ];
    let conn = Conn {
        port: Some(Port {
            proto: Proto::Tcp,
            port: 80,
        }),
        ..Conn::NONE
    };
    let n = 2_000_000u32;
    let start = Instant::now();
    for i in 0..n {
        let host = hosts[i as usize % hosts.len()];
        let Some(j) = policy.jurisdiction_for(black_box(client)) else {
            continue;
        };
        let v = verdict::for_http(&policy, j, black_box(host), "/index.html", &conn, at)
            .and(verdict::for_target(
                &policy,
                j,
                Target::Domain(host),
                &conn,
                at,
                verdict::NAME_IPS,
            ))
            .and(verdict::for_dest(
                &policy,
                j,
                host,
                black_box(origin),
                &conn,
                at,
            ));
        black_box(v);
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("decision per plain HTTP request (shipped rules, ru, 2022-03-10): {per:.0} ns");
    Ok(())
}
