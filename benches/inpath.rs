//! In-path engine cost per packet: the fast path (a decided flow, passing or policed), a new
//! flow's first packet (jurisdiction, residual, address verdict), and a flow decided on its
//! ClientHello (reassembly, SNI parse, policy, detectors), with the shipped RU rules.
//! Throughput is in packets. Run: `cargo bench --bench inpath -- --quick`.

use std::hint::black_box;
use std::net::SocketAddr;

use blocklab::inpath::packet::{ACK, PSH, SYN};
use blocklab::inpath::{Engine, EngineConfig, Moments, Output};
use blocklab::policy::{At, ClientNet, Policy};
use blocklab::rules::RuleSet;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

// The bench uses the TCP segments only.
#[allow(dead_code)]
#[path = "../src/inpath/testdata.rs"]
mod inpath_testdata;
#[path = "../src/sniff/testdata.rs"]
mod sniff_testdata;

fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    inpath_testdata::tcp_segment((src, dst), seq, ack, flags, 64, payload)
}

fn hello(name: &str) -> Vec<u8> {
    sniff_testdata::rustls_client_hello(name)
}

fn policy() -> Policy {
    let rules = RuleSet::embedded().expect("shipped rules");
    Policy::compile(
        &rules,
        &[ClientNet {
            net: "10.0.0.0/8".parse().expect("net"),
            jurisdiction: "ru".into(),
        }],
    )
    .expect("policy")
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let at = &Moments::at(At::Day("2021-04-01".parse().expect("day")));
    let s: SocketAddr = "192.0.2.10:443".parse().expect("addr");
    let mut g = c.benchmark_group("inpath");
    g.throughput(Throughput::Elements(1));

    // Fast path: an established, allowed flow (1400-byte server segments).
    for (label, name) in [
        ("fast_path_pass", "example.org"),
        ("fast_path_policed", "twitter.com"),
    ] {
        let cl: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Output::default();
        let setup = [
            tcp(cl, s, 100, 0, SYN, &[]),
            tcp(s, cl, 500, 101, SYN | ACK, &[]),
            tcp(cl, s, 101, 501, ACK, &[]),
            tcp(cl, s, 101, 501, ACK | PSH, &hello(name)),
        ];
        let mut now = 0u64;
        for p in &setup {
            now += 1000;
            engine.process(&policy, at, now, p, &mut out);
        }
        for i in 0..40u32 {
            now += 1000;
            let p = tcp(s, cl, 501 + i * 1400, 2000, ACK, &[0x17; 1400]);
            engine.process(&policy, at, now, &p, &mut out);
        }
        let data = tcp(s, cl, 100_000, 2000, ACK, &[0x17; 1400]);
        g.bench_function(label, |b| {
            b.iter(|| {
                now += 1000;
                engine.process(&policy, at, now, black_box(&data), &mut out);
                black_box(out.fate())
            })
        });
    }

    // A new flow's SYN (the flow table grows to its bound, then evicts: steady state).
    let mut engine = Engine::new(EngineConfig {
        max_flows: 65_536,
        ..EngineConfig::default()
    });
    let mut out = Output::default();
    let syns: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let cl = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 40000));
            tcp(cl, s, 100, 0, SYN, &[])
        })
        .collect();
    let mut i = 0usize;
    let mut now = 0u64;
    g.bench_function("new_flow_syn", |b| {
        b.iter(|| {
            i = (i + 1) % syns.len();
            now += 1000;
            engine.process(&policy, at, now, black_box(&syns[i]), &mut out);
            black_box(out.fate())
        })
    });

    // A whole flow decided on its ClientHello: SYN, SYN-ACK, ACK, ClientHello (4 packets).
    let ch = hello("www.facebook.com");
    let flows: Vec<[Vec<u8>; 4]> = (0..1024u32)
        .map(|i| {
            let cl = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40000));
            [
                tcp(cl, s, 100, 0, SYN, &[]),
                tcp(s, cl, 500, 101, SYN | ACK, &[]),
                tcp(cl, s, 101, 501, ACK, &[]),
                tcp(cl, s, 101, 501, ACK | PSH, &ch),
            ]
        })
        .collect();
    let at22 = &Moments::at(At::Day("2022-03-10".parse().expect("day")));
    g.throughput(Throughput::Elements(4));
    g.bench_function("flow_reset_on_client_hello", |b| {
        b.iter(|| {
            i = (i + 1) % flows.len();
            for p in &flows[i] {
                now += 1000;
                engine.process(&policy, at22, now, black_box(p), &mut out);
            }
            black_box(out.inject.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
