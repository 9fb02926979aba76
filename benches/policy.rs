//! Benchmarks of the policy's lookup path (`Policy::decide`) and its build.
//!
//! Two rule sets: (a) the shipped rules with the real RU list (86k names, 31k CIDRs, from
//! `rules/ru/`, a copy of `../shared/data/ru-blocked/`), and (b) a deterministic synthetic set
//! of 1M domains + 1M CIDRs shaped like the registry. Queries: hits, misses and deep
//! subdomains (6+ labels), names and addresses. A naive baseline runs in the same process:
//! a `HashSet<String>` suffix walk (lower-casing into a new `String` per query) and a linear
//! CIDR scan over a 10k sample. Besides criterion's timings, the bench prints build time,
//! bytes per domain and per CIDR, and peak RSS, for the README.
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so
//! that other processes on a shared machine do not inflate them (they can still pollute the
//! caches). Run: `cargo bench --bench policy`.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use blocklab::policy::{At, ClientNet, Policy, Target};
use blocklab::rules::{
    Day, Import, ImportFormat, IpNet, Jurisdiction, Rule, RuleSet, RulesFile, Technique,
};

/// Criterion measurement by the calling thread's CPU time.
struct ThreadCpu;

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;
    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }
    fn end(&self, i: Self::Intermediate) -> Self::Value {
        i.elapsed()
    }
    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }
    fn zero(&self) -> Self::Value {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Self::Value) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

type Cpu = Criterion<ThreadCpu>;

fn cpu_criterion() -> Cpu {
    Criterion::default().with_measurement(ThreadCpu)
}

/// A small deterministic PRNG (xorshift64*), so every run benches the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TLDS: &[(&str, u64)] = &[
    ("com", 40),
    ("ru", 15),
    ("net", 8),
    ("org", 7),
    ("info", 5),
    ("xyz", 5),
    ("io", 4),
    ("top", 4),
    ("site", 3),
    ("online", 3),
    ("su", 2),
    ("me", 2),
    ("pro", 2),
];

/// A registry-shaped name: a 4-16 character label under a weighted TLD, 30% with a subdomain.
fn synth_name(r: &mut Rng) -> String {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let label = |r: &mut Rng, min: u64, max: u64| -> String {
        let len = min + r.below(max - min + 1);
        (0..len)
            .map(|i| {
                // No leading or trailing hyphen.
                let n = if i == 0 || i == len - 1 { 36 } else { 37 };
                ALPHA[r.below(n) as usize] as char
            })
            .collect()
    };
    let total: u64 = TLDS.iter().map(|t| t.1).sum();
    let mut pick = r.below(total);
    let tld = TLDS
        .iter()
        .find(|t| {
            if pick < t.1 {
                true
            } else {
                pick -= t.1;
                false
            }
        })
        .map_or("com", |t| t.0);
    let base = format!("{}.{tld}", label(r, 4, 16));
    if r.below(10) < 3 {
        format!("{}.{base}", label(r, 2, 8))
    } else {
        base
    }
}

/// A registry-shaped CIDR: 85% IPv4 /32, 10% /24, 4% /16-/22, 1% IPv6 /32-/64.
fn synth_cidr(r: &mut Rng) -> IpNet {
    let k = r.below(100);
    if k < 99 {
        let len = match k {
            0..=84 => 32,
            85..=94 => 24,
            _ => 16 + r.below(7) as u8,
        };
        IpNet::new(IpAddr::V4(Ipv4Addr::from(r.next() as u32)), len)
            .expect("valid length")
            .trunc()
    } else {
        let len = 32 + 16 * r.below(3) as u8;
        let a = (u128::from(r.next()) << 64) | u128::from(r.next());
        IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len)
            .expect("valid length")
            .trunc()
    }
}

struct Synthetic {
    names: Vec<String>,
    nets: Vec<IpNet>,
}

fn synthetic(n_names: usize, n_nets: usize) -> Synthetic {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = HashSet::with_capacity(n_names);
    let mut names = Vec::with_capacity(n_names);
    while names.len() < n_names {
        let n = synth_name(&mut r);
        if seen.insert(n.clone()) {
            names.push(n);
        }
    }
    let nets = (0..n_nets).map(|_| synth_cidr(&mut r)).collect();
    Synthetic { names, nets }
}

fn header() -> Jurisdiction {
    Jurisdiction {
        code: "xx".into(),
        name: "Synthetic".into(),
        authority: None,
        utc_offset: 10_800,
        dns_blockpage: Vec::new(),
        http_blockpage: None,
        reassemble: true,
        isps: Vec::new(),
    }
}

fn rule(id: &str, import: Import, technique: Technique) -> Rule {
    Rule {
        id: id.into(),
        since: Some("2020-01-01".parse().expect("date")),
        techniques: [technique].into_iter().collect(),
        import: Some(import),
        ..Rule::default()
    }
}

/// The synthetic rules as a rule set: one domains import and one cidrs import.
fn synthetic_rules(s: &Synthetic, with_names: bool, with_nets: bool) -> RuleSet {
    let mut rules = Vec::new();
    if with_names {
        let text = s.names.join("\n").into_bytes();
        let imp =
            Import::new("synthetic-names".into(), ImportFormat::Domains, text).expect("valid");
        rules.push(rule("synthetic-names", imp, Technique::TlsReset));
    }
    if with_nets {
        let text = s
            .nets
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        let imp = Import::new("synthetic-nets".into(), ImportFormat::Cidrs, text).expect("valid");
        rules.push(rule("synthetic-nets", imp, Technique::IpDrop));
    }
    RuleSet {
        files: vec![RulesFile {
            path: "synthetic".into(),
            jurisdiction: header(),
            rules,
            vpn: Vec::new(),
        }],
    }
}

fn clients(code: &str) -> Vec<ClientNet> {
    vec![ClientNet {
        net: "127.0.0.0/8".parse().expect("net"),
        jurisdiction: code.into(),
    }]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The naive baseline: a `HashSet<String>` of names walked suffix by suffix, and a linear
/// scan over CIDRs.
struct Naive {
    names: HashSet<String>,
    nets: Vec<IpNet>,
}

impl Naive {
    fn blocked_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_lowercase();
        let mut s = name.as_str();
        loop {
            if self.names.contains(s) {
                return true;
            }
            match s.find('.') {
                Some(i) => s = &s[i + 1..],
                None => return false,
            }
        }
    }
    fn blocked_ip(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Query sets: hits, misses, deep (6+ labels) hits and misses, addresses.
struct Queries {
    hits: Vec<String>,
    misses: Vec<String>,
    deep_hits: Vec<String>,
    deep_misses: Vec<String>,
    ip_hits: Vec<IpAddr>,
    ip_misses: Vec<IpAddr>,
}

fn queries(names: &[String], nets: &[IpNet], policy: &Policy) -> Queries {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let n = 4096;
    let pick = |r: &mut Rng| names[r.below(names.len() as u64) as usize].clone();
    let hits: Vec<String> = (0..n).map(|_| pick(&mut r)).collect();
    let deep_hits: Vec<String> = (0..n)
        .map(|_| format!("a1.b2.c3.d4.e5.{}", pick(&mut r)))
        .collect();
    let j = policy.jurisdictions().next().expect("one jurisdiction").0;
    let at = At::Day("2026-08-01".parse::<Day>().expect("date"));
    let mut misses = Vec::new();
    let mut deep_misses = Vec::new();
    let mut mr = Rng(0xdead_beef_cafe_f00d);
    while misses.len() < n {
        let m = format!("{}.miss-{}.example", synth_name(&mut mr), mr.below(1000));
        if !policy.decide_in(j, Target::Domain(&m), at).is_block() {
            deep_misses.push(format!("w.x.y.z.{m}"));
            misses.push(m);
        }
    }
    let ip_hits: Vec<IpAddr> = (0..n)
        .map(|_| nets[r.below(nets.len() as u64) as usize].network())
        .collect();
    let mut ip_misses = Vec::new();
    while ip_misses.len() < n {
        let ip = IpAddr::V4(Ipv4Addr::from(mr.next() as u32));
        if !policy.decide_in(j, Target::Ip(ip), at).is_block() {
            ip_misses.push(ip);
        }
    }
    Queries {
        hits,
        misses,
        deep_hits,
        deep_misses,
        ip_hits,
        ip_misses,
    }
}

fn bench_names(c: &mut Cpu, group: &str, policy: &Policy, q: &Queries, naive: Option<&Naive>) {
    let client: IpAddr = "127.0.0.1".parse().expect("ip");
    let at = At::Day("2026-08-01".parse::<Day>().expect("date"));
    let mut g = c.benchmark_group(group);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    let sets: [(&str, &Vec<String>); 4] = [
        ("hit", &q.hits),
        ("miss", &q.misses),
        ("deep-hit", &q.deep_hits),
        ("deep-miss", &q.deep_misses),
    ];
    for (name, set) in sets {
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("blocklab", name), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(policy.decide(client, Target::Domain(&set[i]), at))
            })
        });
        if let Some(nv) = naive {
            let mut i = 0usize;
            g.bench_function(BenchmarkId::new("naive-hashset", name), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(nv.blocked_name(&set[i]))
                })
            });
        }
    }
    for (name, set) in [("ip-hit", &q.ip_hits), ("ip-miss", &q.ip_misses)] {
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("blocklab", name), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(policy.decide(client, Target::Ip(set[i]), at))
            })
        });
        if let Some(nv) = naive {
            let mut i = 0usize;
            g.bench_function(BenchmarkId::new("naive-linear-10k", name), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(nv.blocked_ip(set[i]))
                })
            });
        }
    }
    g.finish();
}

fn real_ru(c: &mut Cpu) {
    let t = Instant::now();
    let rules = RuleSet::embedded().expect("shipped rules");
    let policy = Policy::compile(&rules, &clients("ru")).expect("compile");
    eprintln!(
        "[policy] shipped rules (real RU list): load+compile {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let ru = rules.jurisdiction("ru").expect("ru");
    let mut names = Vec::new();
    let mut nets = Vec::new();
    for r in &ru.rules {
        if let Some(imp) = &r.import {
            imp.for_each(|e| match e {
                blocklab::rules::Entry::Domain { name, .. } => names.push(name.into_owned()),
                blocklab::rules::Entry::Ip { net, .. } => nets.push(net),
                blocklab::rules::Entry::Url { .. } => {}
            });
        }
    }
    let naive = Naive {
        names: names.iter().cloned().collect(),
        nets: nets.iter().copied().take(10_000).collect(),
    };
    // The real list's policy also holds the dated rules (root QUIC rule covers every address),
    // so "misses" are names and addresses the registry does not list.
    let q = queries(&names, &nets, &policy);
    bench_names(c, "ru-real", &policy, &q, Some(&naive));
}

fn synthetic_1m(c: &mut Cpu) {
    let t = Instant::now();
    let s = synthetic(1_000_000, 1_000_000);
    eprintln!(
        "[policy] generated 1M names + 1M CIDRs in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    // Bytes per entry, from domain-only and CIDR-only builds.
    let names_only = synthetic_rules(&s, true, false);
    let nets_only = synthetic_rules(&s, false, true);
    let pn = Policy::compile(&names_only, &clients("xx")).expect("compile");
    let bytes_names = pn.stats().jurisdictions[0].heap_bytes;
    drop(pn);
    let pc = Policy::compile(&nets_only, &clients("xx")).expect("compile");
    let st = &pc.stats().jurisdictions[0];
    let (bytes_nets, intervals) = (st.heap_bytes, st.cidr_intervals);
    drop(pc);
    drop(names_only);
    drop(nets_only);
    eprintln!(
        "[policy] memory: {:.1} bytes/domain ({} names), {:.1} bytes/CIDR ({} CIDRs -> {} intervals)",
        bytes_names as f64 / s.names.len() as f64,
        s.names.len(),
        bytes_nets as f64 / s.nets.len() as f64,
        s.nets.len(),
        intervals
    );
    // Build from 1M + 1M: parse/check of the imports is done; time the compile, and the
    // resident memory it adds (peak and after).
    let rules = synthetic_rules(&s, true, true);
    // Reset the peak-RSS mark (Linux: writing 5 to clear_refs), so VmHWM after the build is
    // the peak during it.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss0 = rss_kib();
    let t = Instant::now();
    let policy = Policy::compile(&rules, &clients("xx")).expect("compile");
    let build = t.elapsed();
    eprintln!(
        "[policy] compile 1M names + 1M CIDRs: {:.0} ms; peak RSS during the build +{:.1} MB over the {:.1} MB before; compiled heap {:.1} MB",
        build.as_secs_f64() * 1e3,
        peak_rss_kib().saturating_sub(rss0) as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        policy.stats().jurisdictions[0].heap_bytes as f64 / 1e6
    );
    let naive = Naive {
        names: s.names.iter().cloned().collect(),
        nets: s.nets.iter().copied().take(10_000).collect(),
    };
    let q = queries(&s.names, &s.nets, &policy);
    bench_names(c, "synthetic-1m", &policy, &q, Some(&naive));
    drop(naive);
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("compile-1m-names-1m-cidrs", |b| {
        b.iter(|| black_box(Policy::compile(&rules, &clients("xx")).expect("compile")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = cpu_criterion();
    targets = real_ru, synthetic_1m
}
criterion_main!(benches);
