//! Gateway metrics, rendered in the Prometheus text format by the admin listener.
//!
//! Fixed counters are atomics. Counters labelled by jurisdiction, layer, technique and rule are
//! keyed by copyable ids (policy generation, jurisdiction and rule indices, static strings) in a
//! map behind a read-write lock: a decision takes the read lock and bumps an atomic, without
//! allocating; only the first decision of a new label set takes the write lock and resolves
//! the names. The upstream latency histogram has fixed buckets.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Upper bounds of the upstream latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 13],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
    }
}

/// The labels of a decision counter, as rendered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct DecisionLabels {
    jurisdiction: String,
    layer: &'static str,
    verdict: &'static str,
    technique: &'static str,
    rule: String,
}

/// The labels of a decision counter, as recorded: copyable ids, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    /// The policy's generation (rule indices are only meaningful within one).
    pub generation: u64,
    /// Jurisdiction index.
    pub jurisdiction: u16,
    /// Rule index, or `u32::MAX` for none.
    pub rule: u32,
    /// Frontend layer.
    pub layer: &'static str,
    /// `allow` or `block`.
    pub verdict: &'static str,
    /// Technique enacted, or "".
    pub technique: &'static str,
}

#[derive(Debug, Default)]
struct DecisionCounters {
    index: HashMap<DecisionKey, usize>,
    counters: Vec<(DecisionLabels, AtomicU64)>,
}

/// Every metric of the gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    /// DNS queries received (parsed or not).
    pub dns_queries: AtomicU64,
    /// Malformed packets or requests, dropped or answered FORMERR/400.
    pub malformed: AtomicU64,
    /// Requests from clients outside every configured network.
    pub refused_clients: AtomicU64,
    /// Requests refused by a rate limit.
    pub rate_limited: AtomicU64,
    /// TCP connections closed at once because their listener was full.
    pub connections_rejected: AtomicU64,
    /// Failed `accept` calls on TCP listeners (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// DNS answers served from the cache.
    pub cache_hits: AtomicU64,
    /// DNS answers that needed the upstream.
    pub cache_misses: AtomicU64,
    /// Upstream DNS failures (timeouts, errors).
    pub upstream_errors: AtomicU64,
    /// Open connections and flows (TCP connections, tunnels, relayed flows).
    pub active_flows: AtomicI64,
    /// Reloads that swapped in a new policy.
    pub reloads_ok: AtomicU64,
    /// Reloads that failed (the old policy kept serving).
    pub reloads_failed: AtomicU64,
    /// Decision-log lines dropped because the writer could not keep up.
    pub log_dropped: AtomicU64,
    /// Decision-log lines written.
    pub log_written: AtomicU64,
    /// Upstream DNS latency.
    pub upstream_latency: Histogram,
    decisions: RwLock<DecisionCounters>,
    verdicts: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    /// Counts one decision; `names` gives (jurisdiction code, rule id) the first time a key
    /// is seen.
    pub fn decision<'a>(&self, key: DecisionKey, names: impl FnOnce() -> (&'a str, &'a str)) {
        if let Ok(m) = self.decisions.read() {
            if let Some(&i) = m.index.get(&key) {
                m.counters[i].1.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if let Ok(mut m) = self.decisions.write() {
            let i = match m.index.get(&key) {
                Some(&i) => i,
                None => {
                    let (jurisdiction, rule) = names();
                    let labels = DecisionLabels {
                        jurisdiction: jurisdiction.to_string(),
                        layer: key.layer,
                        verdict: key.verdict,
                        technique: key.technique,
                        rule: rule.to_string(),
                    };
                    m.counters.push((labels, AtomicU64::new(0)));
                    let i = m.counters.len() - 1;
                    m.index.insert(key, i);
                    i
                }
            };
            m.counters[i].1.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one detector verdict.
    pub fn verdict(&self, detector: &str, action: &str) {
        if let Ok(mut m) = self.verdicts.lock() {
            *m.entry((detector.to_string(), action.to_string()))
                .or_insert(0) += 1;
        }
    }

    /// Adds `n` to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "blocklab_dns_queries_total",
                "DNS queries received.",
                &self.dns_queries,
            ),
            (
                "blocklab_malformed_total",
                "Malformed packets or requests dropped or answered with an error.",
                &self.malformed,
            ),
            (
                "blocklab_refused_clients_total",
                "Requests from clients outside every configured network.",
                &self.refused_clients,
            ),
            (
                "blocklab_rate_limited_total",
                "Requests refused by a rate limit.",
                &self.rate_limited,
            ),
            (
                "blocklab_connections_rejected_total",
                "TCP connections closed at once because their listener had no free slot.",
                &self.connections_rejected,
            ),
            (
                "blocklab_accept_errors_total",
                "Failed accepts on TCP listeners (e.g. out of file descriptors; the listener backs off).",
                &self.accept_errors,
            ),
            (
                "blocklab_dns_cache_hits_total",
                "DNS answers served from the cache.",
                &self.cache_hits,
            ),
            (
                "blocklab_dns_cache_misses_total",
                "DNS answers that needed the upstream.",
                &self.cache_misses,
            ),
            (
                "blocklab_upstream_errors_total",
                "Upstream DNS failures.",
                &self.upstream_errors,
            ),
            (
                "blocklab_reloads_ok_total",
                "Reloads that swapped in a new policy.",
                &self.reloads_ok,
            ),
            (
                "blocklab_reloads_failed_total",
                "Reloads that failed; the old policy kept serving.",
                &self.reloads_failed,
            ),
            (
                "blocklab_decision_log_dropped_total",
                "Decision-log lines dropped because the writer could not keep up.",
                &self.log_dropped,
            ),
            (
                "blocklab_decision_log_written_total",
                "Decision-log lines written.",
                &self.log_written,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let hits = self.cache_hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.cache_misses.load(Ordering::Relaxed) as f64;
        let ratio = if total > 0.0 { hits / total } else { 0.0 };
        let _ = writeln!(
            out,
            "# HELP blocklab_dns_cache_hit_ratio Share of DNS answers served from the cache.\n# TYPE blocklab_dns_cache_hit_ratio gauge\nblocklab_dns_cache_hit_ratio {ratio}"
        );
        let _ = writeln!(
            out,
            "# HELP blocklab_active_flows Open connections, tunnels and relayed flows.\n# TYPE blocklab_active_flows gauge\nblocklab_active_flows {}",
            self.active_flows.load(Ordering::Relaxed)
        );
        self.upstream_latency.render(
            "blocklab_upstream_latency_seconds",
            "Latency of upstream DNS lookups.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP blocklab_decisions_total Decisions by jurisdiction, layer, verdict, technique and rule.\n# TYPE blocklab_decisions_total counter"
        );
        if let Ok(m) = self.decisions.read() {
            // Counters of several policy generations with the same names add up.
            let mut merged: BTreeMap<&DecisionLabels, u64> = BTreeMap::new();
            for (labels, c) in &m.counters {
                *merged.entry(labels).or_insert(0) += c.load(Ordering::Relaxed);
            }
            for (k, v) in merged {
                let _ = writeln!(
                    out,
                    "blocklab_decisions_total{{jurisdiction=\"{}\",layer=\"{}\",verdict=\"{}\",technique=\"{}\",rule=\"{}\"}} {v}",
                    escape(&k.jurisdiction),
                    k.layer,
                    k.verdict,
                    k.technique,
                    escape(&k.rule)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP blocklab_detector_verdicts_total VPN detector verdicts by detector and action.\n# TYPE blocklab_detector_verdicts_total counter"
        );
        if let Ok(m) = self.verdicts.lock() {
            for ((d, a), v) in m.iter() {
                let _ = writeln!(
                    out,
                    "blocklab_detector_verdicts_total{{detector=\"{}\",action=\"{}\"}} {v}",
                    escape(d),
                    escape(a)
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.dns_queries);
        Metrics::inc(&m.cache_hits);
        Metrics::inc(&m.cache_misses);
        let key = |generation| DecisionKey {
            generation,
            jurisdiction: 0,
            rule: 3,
            layer: "dns",
            verdict: "block",
            technique: "dns-blockpage",
        };
        m.decision(key(1), || ("ru", "ru-linkedin"));
        m.decision(key(1), || panic!("names are resolved once per key"));
        m.decision(key(2), || ("ru", "ru-linkedin"));
        m.upstream_latency.observe(Duration::from_millis(3));
        m.verdict("wireguard", "drop");
        let t = m.render();
        assert!(t.contains("blocklab_dns_queries_total 1\n"), "{t}");
        assert!(t.contains("blocklab_dns_cache_hit_ratio 0.5\n"), "{t}");
        assert!(t.contains("blocklab_decisions_total{jurisdiction=\"ru\",layer=\"dns\",verdict=\"block\",technique=\"dns-blockpage\",rule=\"ru-linkedin\"} 3\n"), "{t}");
        assert!(
            t.contains("blocklab_upstream_latency_seconds_bucket{le=\"0.002\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("blocklab_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "blocklab_detector_verdicts_total{detector=\"wireguard\",action=\"drop\"} 1\n"
            ),
            "{t}"
        );
    }
}
