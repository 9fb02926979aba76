//! The DNS frontend's per-query CPU cost without sockets: the UDP hot path
//! (`Frontend::answer_fast`: the hand-written decoder, answers written into a buffer) against
//! the general path (`Frontend::answer_now`: the `hickory-proto` parser and encoder, one `Vec`
//! per reply), in the same process, interleaved, on the two queries that make up
//! `benches/dns.sh`'s cached scenario: a cache hit (an allowed name with one A record) and a
//! DNS-blocked name of the shipped RU list (the blockpage address), both with EDNS as dnsperf
//! sends them. Both paths make the same decision (policy at 2026-08-01, the cache lookup,
//! screening, the decision counter); a test in `dns::answer` checks they write the same bytes.
//! Times are the thread's CPU time per query (`CLOCK_THREAD_CPUTIME_ID`), the best and the
//! median of ROUNDS rounds of N queries. Run: `cargo bench --bench dns_path`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use blocklab::config::Config;
use blocklab::dns::answer::{Fast, Step};
use blocklab::dns::cache::Entry;
use blocklab::dns::template::Template;
use blocklab::dns::{DnsTransport, Frontend};
use blocklab::gateway::Gateway;
use blocklab::resolve::Answer;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const N: u32 = 200_000;
const ROUNDS: usize = 7;

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4711).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.set_edns(Edns::new());
    m.to_vec().unwrap()
}

fn main() {
    let text = "date = \"2026-08-01\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"ru\"\n[dns]\nlisten = []\nupstream = [\"127.0.0.1:9\"]\nrate_limit_qps = 0\n";
    let config = Config::from_str("bench.toml", text).unwrap();
    let policy = config.compile_policy().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let front = Frontend::new(Gateway::new(config, policy).unwrap(), 1000);
    let name = Name::from_ascii("allowed-1.bench.lab.").unwrap();
    let answer = Answer {
        rcode: ResponseCode::NoError,
        records: vec![Record::from_rdata(
            name.clone(),
            3600,
            RData::A(A::new(198, 51, 0, 2)),
        )],
        authority: vec![],
        ttl: 3600,
    };
    let template = Template::build(&name, RecordType::A, &answer);
    let entry = Entry::new(answer, template, Instant::now());
    front
        .cache()
        .insert("allowed-1.bench.lab.", RecordType::A, Arc::new(entry));
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    for (label, q) in [
        ("cache hit", query("allowed-1.bench.lab.")),
        ("blocked (blockpage)", query("www.linkedin.com.")),
    ] {
        let mut out = vec![0u8; 4096];
        let mut fast = Vec::new();
        let mut general = Vec::new();
        for _ in 0..ROUNDS {
            let t = cpu_time::ThreadTime::now();
            for _ in 0..N {
                match front.answer_fast(client, black_box(&q), &mut out) {
                    Fast::Wrote(n) => {
                        black_box(&out[..n]);
                    }
                    other => panic!("{label}: the hot path did not answer: {other:?}"),
                }
            }
            fast.push(t.elapsed().as_nanos() as f64 / f64::from(N));
            let t = cpu_time::ThreadTime::now();
            for _ in 0..N {
                match front.answer_now(client, black_box(&q), DnsTransport::Udp) {
                    Step::Reply(b) => {
                        black_box(b);
                    }
                    other => panic!("{label}: the general path did not answer: {other:?}"),
                }
            }
            general.push(t.elapsed().as_nanos() as f64 / f64::from(N));
        }
        let show = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            format!("best {:.0} ns, median {:.0} ns", v[0], v[v.len() / 2])
        };
        println!(
            "{label:20} hot path: {}   general path: {}",
            show(&mut fast),
            show(&mut general)
        );
    }
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
