//! Detector cost: each detector asked after every packet of a flow until it decides (as the
//! classifier does), on a flow of its own protocol and on a flow it must reject; and the
//! whole offline pipeline (pcap parse, flows, all detectors) over our own OpenVPN and
//! non-VPN captures (`tests/data/captures`, or `BLOCKLAB_BENCH_PCAPS=DIR`). Throughput is in packets. Run: `cargo bench --bench detect -- --quick`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;

use blocklab::detect::fully_encrypted::pseudo_random as noise;
use blocklab::detect::{self, Detector, Dir, Flow, Packet, Transport};
use blocklab::experiment::{flows::FlowTable, pcap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Packets of a flow extracted from a shared capture (tests/data).
fn load(name: &str) -> Vec<(Dir, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.txt"));
    let text = std::fs::read_to_string(path).expect("tests/data flow");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once(' '))
        .map(|(d, h)| {
            (
                if d == "c" {
                    Dir::ToServer
                } else {
                    Dir::ToClient
                },
                hex(h.trim()),
            )
        })
        .collect()
}

/// Asks `d` after each packet until it decides; returns the packets it looked at.
fn drive(
    d: &dyn Detector,
    transport: Transport,
    server: SocketAddr,
    raw: &[(Dir, Vec<u8>)],
) -> usize {
    let packets = Packet::all(raw);
    let client: SocketAddr = "10.0.0.1:40000".parse().unwrap_or(server);
    for n in 1..=packets.len() {
        let flow = Flow {
            transport,
            client,
            server,
            packets: &packets[..n],
        };
        if d.detect(black_box(&flow)).is_ok() {
            return n;
        }
    }
    packets.len()
}

fn detectors(c: &mut Criterion) {
    use detect::wireguard::build;
    let wg = vec![
        (Dir::ToServer, build::initiation(0x1234, 0x5a)),
        (Dir::ToClient, build::response(0x99, 0x1234, 0xa5)),
    ];
    let quic_like: Vec<(Dir, Vec<u8>)> = (0..20u64)
        .map(|i| {
            (
                if i % 3 == 2 {
                    Dir::ToClient
                } else {
                    Dir::ToServer
                },
                noise(1200 + (i as usize % 7) * 13, i + 1),
            )
        })
        .collect();
    let tls = vec![(Dir::ToServer, {
        let mut p = noise(517, 9);
        p[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
        p
    })];
    let mut sa = vec![0u8; 4];
    sa.extend(detect::ike::build::ike_sa_init(7, 0, false, 300));
    let mut sr = vec![0u8; 4];
    sr.extend(detect::ike::build::ike_sa_init(7, 9, true, 280));
    let ike = vec![(Dir::ToServer, sa), (Dir::ToClient, sr)];
    let pptp = vec![(Dir::ToServer, detect::pptp::sccrq())];
    let random_tcp = vec![(Dir::ToServer, noise(600, 3))];

    let port = |p: u16| SocketAddr::from(([10, 0, 0, 2], p));
    type Case = (
        &'static str,
        Box<dyn Detector>,
        Transport,
        u16,
        Vec<(Dir, Vec<u8>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "wireguard/handshake",
            Box::new(detect::wireguard::WireGuard::default()),
            Transport::Udp,
            51820,
            wg,
        ),
        (
            "wireguard/reject-random-udp",
            Box::new(detect::wireguard::WireGuard::default()),
            Transport::Udp,
            4001,
            quic_like.clone(),
        ),
        (
            "openvpn/udp-tls-auth",
            Box::new(detect::openvpn::OpenVpn::default()),
            Transport::Udp,
            1194,
            load("openvpn-udp-tls"),
        ),
        (
            "openvpn/tcp-tls-auth",
            Box::new(detect::openvpn::OpenVpn::default()),
            Transport::Tcp,
            1194,
            load("openvpn-tcp-tls"),
        ),
        (
            "openvpn/udp-static-key",
            Box::new(detect::openvpn::OpenVpn::default()),
            Transport::Udp,
            1194,
            load("openvpn-udp-static"),
        ),
        (
            "openvpn/reject-random-udp",
            Box::new(detect::openvpn::OpenVpn::default()),
            Transport::Udp,
            4001,
            quic_like,
        ),
        (
            "ike/ikev2-nat-t",
            Box::new(detect::ike::Ike::default()),
            Transport::Udp,
            4500,
            ike,
        ),
        (
            "pptp/sccrq",
            Box::new(detect::pptp::Pptp),
            Transport::Tcp,
            1723,
            pptp,
        ),
        (
            "fully-encrypted/random",
            Box::new(detect::fully_encrypted::FullyEncrypted::default()),
            Transport::Tcp,
            8388,
            random_tcp,
        ),
        (
            "fully-encrypted/tls",
            Box::new(detect::fully_encrypted::FullyEncrypted::default()),
            Transport::Tcp,
            443,
            tls,
        ),
    ];
    let mut g = c.benchmark_group("detector");
    for (name, d, transport, p, raw) in &cases {
        let looked = drive(d.as_ref(), *transport, port(*p), raw);
        g.throughput(Throughput::Elements(looked as u64));
        g.bench_function(*name, |b| {
            b.iter(|| drive(d.as_ref(), *transport, port(*p), raw))
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    // Our own captures (tests/data/make-captures.sh); BLOCKLAB_BENCH_PCAPS=DIR runs the same
    // pipeline over every *.pcap of a larger directory instead.
    let dir = std::env::var_os("BLOCKLAB_BENCH_PCAPS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures"),
        std::path::PathBuf::from,
    );
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("captures in {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    names.sort();
    let files: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let packets: usize = files
        .iter()
        .map(|b| pcap::Reader::new(b).map_or(0, |r| r.count()))
        .sum();
    let ds = detect::standard(Default::default());
    let mut g = c.benchmark_group("experiment");
    g.throughput(Throughput::Elements(packets as u64));
    g.bench_function("openvpn-and-plain-pcaps", |b| {
        b.iter(|| {
            let mut flows = 0;
            for bytes in &files {
                let mut t = FlowTable::new(&ds);
                for f in pcap::Reader::new(bytes).into_iter().flatten().flatten() {
                    if let Some(d) = pcap::decode(f.link, f.data) {
                        t.push(f.ts_ns, &d);
                    }
                }
                flows += t.finish_all().len();
            }
            flows
        })
    });
    g.finish();
}

criterion_group!(benches, detectors, pipeline);
criterion_main!(benches);
