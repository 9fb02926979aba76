//! CPU time per policy decision on the shipped rules (RU client, 2026-08-01), measured as
//! the thread's own on-CPU time (`/proc/thread-self/schedstat`), so that a loaded machine's
//! scheduling does not count, and simple enough to `perf record`. For A/B runs of two builds
//! on a busy machine, where criterion's wall-clock numbers swing by 2x.
//!
//! `cargo bench --bench decide_cpu -- [ip|name] [N]` (default `ip`, 20M decisions): 4096
//! random IPv4 addresses, or 4096 names no rule lists; prints ns per decision.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use blocklab::policy::{At, ClientNet, Policy, Target};
use blocklab::rules::{Day, RuleSet};

fn main() {
    // cargo bench passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().cloned().unwrap_or_else(|| "ip".into());
    let n: usize = args.get(1).map_or(20_000_000, |s| s.parse().expect("N"));
    let rules = RuleSet::embedded().expect("rules");
    let clients = vec![ClientNet {
        net: "127.0.0.0/8".parse().unwrap(),
        jurisdiction: "ru".into(),
    }];
    let policy = Policy::compile(&rules, &clients).expect("compile");
    let client: IpAddr = "127.0.0.1".parse().unwrap();
    let at = At::Day("2026-08-01".parse::<Day>().unwrap());
    let mut x: u32 = 0x1234_5678;
    let ips: Vec<IpAddr> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            IpAddr::V4(Ipv4Addr::from(x))
        })
        .collect();
    let names: Vec<String> = (0..4096)
        .map(|i| format!("host{i}.miss-{}.example", i * 7))
        .collect();
    let cpu = || -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let t = cpu();
    let mut blocks = 0usize;
    for i in 0..n {
        let d = match mode.as_str() {
            "ip" => policy.decide(client, Target::Ip(black_box(ips[i & 4095])), at),
            _ => policy.decide(client, Target::Domain(black_box(&names[i & 4095])), at),
        };
        blocks += usize::from(black_box(d).map(|d| d.is_block()).unwrap_or(false));
    }
    eprintln!(
        "{mode}: {n} decisions, {blocks} blocks, {:.1} ns each",
        (cpu() - t) as f64 / n as f64
    );
}
