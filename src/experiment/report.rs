//! Ground-truth labels and the experiment report: per-detector confusion counts, precision,
//! recall, F1 and packets-to-decision, a per-label hit table, the misclassified flows, and
//! their renderings (JSON, Markdown, an SVG chart, a terminal table).
//!
//! A detector's positive class is the label equal to its protocol (`wireguard`, `openvpn`,
//! `ike`, `pptp`); the generic detectors (`endpoints`, `fully-encrypted`) and the overall
//! `any-vpn` verdict count every label other than `none` as positive. `any-vpn` is "some
//! detector other than `fully-encrypted` fired": the fully-encrypted rule is generic and has
//! a known false-positive profile (Wu et al.), so it is scored on its own line only.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use super::flows::FlowRecord;
use crate::detect::MAX_PACKETS;
use crate::rules::{csv, Diagnostic, RulesError};

/// The label of flows nobody labelled.
pub const NONE: &str = "none";

#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerPat {
    Exact(SocketAddr),
    AnyIp(u16),
}

/// Ground truth from a CSV file: `file,label` (whole file) or `file,server,label` (one flow,
/// `server` as `ip:port`, `[v6]:port`, or `*:port` for any address). Files match by name.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    files: HashMap<String, String>,
    flows: Vec<(String, ServerPat, String)>,
}

impl Labels {
    /// Parses the CSV; every bad line is reported with its line number. `#` starts a comment
    /// line and a first line `file,...` is a header.
    pub fn parse(shown: &str, text: &str) -> Result<Labels, RulesError> {
        let table = csv::Reader::new().comment(b'#').trim().read(shown, text)?;
        let mut labels = Labels::default();
        let mut errors = RulesError::default();
        for (n, rec) in table.records.iter().enumerate() {
            if n == 0 && rec.get(0) == "file" {
                continue; // header
            }
            let bad = |m: &str| Diagnostic::at(shown, text, rec.offset, m.to_string());
            let cols: Vec<&str> = rec.fields.iter().map(String::as_str).collect();
            match cols[..] {
                [file, label] if !file.is_empty() && !label.is_empty() => {
                    labels.files.insert(file.to_string(), label.to_string());
                }
                [file, server, label] if !file.is_empty() && !label.is_empty() => {
                    let pat = if let Some(port) = server.strip_prefix("*:") {
                        port.parse().ok().map(ServerPat::AnyIp)
                    } else {
                        server.parse().ok().map(ServerPat::Exact)
                    };
                    match pat {
                        Some(p) => labels.flows.push((file.to_string(), p, label.to_string())),
                        None => errors.push(bad(&format!("`{server}` is not ip:port or *:port"))),
                    }
                }
                _ => errors.push(bad("expected `file,label` or `file,server,label`")),
            }
        }
        if errors.is_empty() {
            Ok(labels)
        } else {
            Err(errors)
        }
    }

    /// The label of a flow of `file` (a file name) to `server`.
    pub fn label(&self, file: &str, server: SocketAddr) -> &str {
        let flow = self.flows.iter().find(|(f, p, _)| {
            f == file
                && match p {
                    ServerPat::Exact(a) => *a == server,
                    ServerPat::AnyIp(port) => *port == server.port(),
                }
        });
        match flow {
            Some((_, _, l)) => l,
            None => self.files.get(file).map_or(NONE, String::as_str),
        }
    }
}

/// Misclassified flows kept per detector in the report (the first ones in `flows.jsonl`
/// order); the rest are only counted.
pub const MISSES_KEPT: usize = 1000;

/// A flow's place in `flows.jsonl`, compared bytewise: file index, epoch, first packet time,
/// transport, client, server (see [`super::output`]).
pub type OrderKey = [u8; ORDER_LEN];

/// Length of an [`OrderKey`].
pub const ORDER_LEN: usize = 4 + 4 + 8 + 1 + 19 + 19;

/// A flow a detector got wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    /// Capture file name.
    pub file: String,
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// Client address.
    pub client: String,
    /// Server address.
    pub server: String,
    /// Ground truth.
    pub label: String,
    /// `false-positive` or `false-negative`.
    pub error: &'static str,
}

/// One detector's scores.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// Detector name (or `any-vpn` for the overall verdict).
    pub detector: String,
    /// The labels it is scored against.
    pub positive: String,
    /// Flows it flagged.
    pub hits: u64,
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives (`"fn"` in JSON).
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// True negatives.
    pub tn: u64,
    /// tp / (tp + fp), null without hits.
    pub precision: Option<f64>,
    /// tp / (tp + fn), null without positives.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall.
    pub f1: Option<f64>,
    /// Median payload packets to decision over its hits.
    pub median_packets_to_decision: Option<f64>,
    /// Mean time per detector call (ns), from the run itself.
    pub ns_per_call: Option<f64>,
    /// The first [`MISSES_KEPT`] flows it got wrong, in `flows.jsonl` order.
    pub misclassified: Vec<Miss>,
    /// How many more it got wrong.
    pub misclassified_more: u64,
}

/// Hits per detector for one label.
#[derive(Debug, Clone, Serialize)]
pub struct LabelRow {
    /// The label.
    pub label: String,
    /// Flows with that label.
    pub flows: u64,
    /// Flows each detector flagged, in detector order.
    pub hits: Vec<(String, u64)>,
}

/// The whole report (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Capture files read.
    pub files: Vec<String>,
    /// Packets read.
    pub packets: u64,
    /// Flows found.
    pub flows: u64,
    /// Wall time of reading and classifying (s).
    pub seconds: f64,
    /// Packets per second over that time.
    pub packets_per_second: f64,
    /// Whether labels were given (scores are meaningless without).
    pub labelled: bool,
    /// Per-detector scores, in detector order.
    pub detectors: Vec<Score>,
    /// `any-vpn`: a detector other than `fully-encrypted` fired, scored against `label != none`.
    pub overall: Score,
    /// Per-label hit counts.
    pub per_label: Vec<LabelRow>,
}

fn positive_class(detector: &str) -> Option<&str> {
    match detector {
        "endpoints" | "fully-encrypted" | "any-vpn" => None,
        d => Some(d),
    }
}

/// Packets-to-decision of the first detector other than `fully-encrypted` that fired.
fn any_vpn(rec: &FlowRecord) -> Option<usize> {
    rec.outcomes
        .iter()
        .filter(|(d, _)| *d != "fully-encrypted")
        .filter_map(|(_, v)| v.map(|v| v.after))
        .min()
}

/// Histogram buckets of packets-to-decision: 0 ..= [`MAX_PACKETS`] (a decision never needs
/// more packets than the classifier keeps; a larger value would count in the last bucket).
const AFTER_BUCKETS: usize = MAX_PACKETS + 1;

/// One detector's counters.
#[derive(Debug, Clone)]
struct Counts {
    name: &'static str,
    class: Option<&'static str>,
    tp: u64,
    fp: u64,
    fn_: u64,
    tn: u64,
    after: [u64; AFTER_BUCKETS],
    misses: Vec<(OrderKey, Miss)>,
}

impl Counts {
    fn new(name: &'static str) -> Counts {
        Counts {
            name,
            class: positive_class(name).map(|_| name),
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
            after: [0; AFTER_BUCKETS],
            misses: Vec::new(),
        }
    }

    fn add(
        &mut self,
        at: &OrderKey,
        file: &str,
        rec: &FlowRecord,
        label: &str,
        hit: Option<usize>,
    ) {
        let positive = match self.class {
            Some(c) => label == c,
            None => label != NONE,
        };
        let error = match (hit.is_some(), positive) {
            (true, true) => {
                self.tp += 1;
                None
            }
            (true, false) => {
                self.fp += 1;
                Some("false-positive")
            }
            (false, true) => {
                self.fn_ += 1;
                Some("false-negative")
            }
            (false, false) => {
                self.tn += 1;
                None
            }
        };
        if let Some(a) = hit {
            self.after[a.min(AFTER_BUCKETS - 1)] += 1;
        }
        if let Some(error) = error {
            if self.misses.len() < MISSES_KEPT {
                self.misses.push((
                    *at,
                    Miss {
                        file: file.to_string(),
                        proto: rec.transport.as_str(),
                        client: rec.client.to_string(),
                        server: rec.server.to_string(),
                        label: label.to_string(),
                        error,
                    },
                ));
            }
        }
    }

    fn merge(&mut self, o: Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
        for (a, b) in self.after.iter_mut().zip(o.after) {
            *a += b;
        }
        self.misses.extend(o.misses);
        self.misses.sort_by_key(|m| m.0);
        self.misses.truncate(MISSES_KEPT);
    }

    /// The `k`-th smallest packets-to-decision (0-based) in the histogram.
    fn nth_after(&self, k: u64) -> usize {
        let mut seen = 0;
        for (v, n) in self.after.iter().enumerate() {
            seen += n;
            if seen > k {
                return v;
            }
        }
        AFTER_BUCKETS - 1
    }

    fn score(&self, cost: Option<f64>) -> Score {
        let hits = self.tp + self.fp;
        let precision = (hits > 0).then(|| self.tp as f64 / hits as f64);
        let recall = (self.tp + self.fn_ > 0).then(|| self.tp as f64 / (self.tp + self.fn_) as f64);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        let n: u64 = self.after.iter().sum();
        let median = match n {
            0 => None,
            n if n % 2 == 1 => Some(self.nth_after(n / 2) as f64),
            n => Some((self.nth_after(n / 2 - 1) + self.nth_after(n / 2)) as f64 / 2.0),
        };
        Score {
            detector: self.name.to_string(),
            positive: self
                .class
                .map_or_else(|| "any label but none".to_string(), str::to_string),
            hits,
            tp: self.tp,
            fp: self.fp,
            fn_: self.fn_,
            tn: self.tn,
            precision,
            recall,
            f1,
            median_packets_to_decision: median,
            ns_per_call: cost,
            misclassified: self.misses.iter().map(|(_, m)| m.clone()).collect(),
            misclassified_more: (self.fp + self.fn_).saturating_sub(self.misses.len() as u64),
        }
    }
}

/// The report's counters, added up flow by flow as flows finish (one per worker, merged at
/// the end): no flow is kept, only the first [`MISSES_KEPT`] misses per detector.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Per detector, in detector order, then `any-vpn`.
    counts: Vec<Counts>,
    /// Per label: flows, and hits per detector.
    per_label: BTreeMap<String, (u64, Vec<u64>)>,
    flows: u64,
}

impl Tally {
    /// Empty counters for `detectors` (names, in detector order).
    pub fn new(detectors: &[&'static str]) -> Tally {
        let mut counts: Vec<Counts> = detectors.iter().map(|d| Counts::new(d)).collect();
        counts.push(Counts::new("any-vpn"));
        Tally {
            counts,
            per_label: BTreeMap::new(),
            flows: 0,
        }
    }

    /// Counts one finished flow of `file` with ground truth `label`, at `at` in the output.
    pub fn add(&mut self, at: &OrderKey, file: &str, rec: &FlowRecord, label: &str) {
        self.flows += 1;
        let n = self.counts.len() - 1;
        let row = match self.per_label.get_mut(label) {
            Some(r) => r,
            None => self
                .per_label
                .entry(label.to_string())
                .or_insert_with(|| (0, vec![0; n])),
        };
        row.0 += 1;
        for (i, c) in self.counts[..n].iter_mut().enumerate() {
            let hit = rec.outcomes.get(i).and_then(|(_, v)| v.map(|v| v.after));
            if hit.is_some() {
                row.1[i] += 1;
            }
            c.add(at, file, rec, label, hit);
        }
        self.counts[n].add(at, file, rec, label, any_vpn(rec));
    }

    /// Adds `other`'s counts (of the same detectors) to these.
    pub fn merge(&mut self, other: Tally) {
        self.flows += other.flows;
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            a.merge(b);
        }
        for (label, (flows, hits)) in other.per_label {
            let row = self
                .per_label
                .entry(label)
                .or_insert_with(|| (0, vec![0; hits.len()]));
            row.0 += flows;
            for (a, b) in row.1.iter_mut().zip(hits) {
                *a += b;
            }
        }
    }

    /// Flows counted.
    pub fn flows(&self) -> u64 {
        self.flows
    }
}

/// Inputs of [`Report::build`] beyond the counters.
#[derive(Debug, Clone)]
pub struct RunStats {
    /// Capture files read.
    pub files: Vec<String>,
    /// Packets read.
    pub packets: u64,
    /// Wall time (s).
    pub seconds: f64,
    /// Detector names, in order.
    pub detectors: Vec<&'static str>,
    /// Time per detector (ns), in order.
    pub cost_ns: Vec<u64>,
    /// Calls per detector, in order.
    pub calls: Vec<u64>,
}

impl Report {
    /// Scores every detector from the counters.
    pub fn build(run: &RunStats, tally: &Tally, labelled: bool) -> Report {
        let n = tally.counts.len() - 1;
        let detectors = tally.counts[..n]
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cost = match (run.cost_ns.get(i), run.calls.get(i)) {
                    (Some(&c), Some(&n)) if n > 0 => Some(c as f64 / n as f64),
                    _ => None,
                };
                c.score(cost)
            })
            .collect();
        let overall = tally.counts[n].score(None);
        let per_label = tally
            .per_label
            .iter()
            .map(|(label, (flows, hits))| LabelRow {
                label: label.clone(),
                flows: *flows,
                hits: run
                    .detectors
                    .iter()
                    .zip(hits)
                    .map(|(d, h)| (d.to_string(), *h))
                    .collect(),
            })
            .collect();
        Report {
            files: run.files.clone(),
            packets: run.packets,
            flows: tally.flows,
            seconds: run.seconds,
            packets_per_second: if run.seconds > 0.0 {
                run.packets as f64 / run.seconds
            } else {
                0.0
            },
            labelled,
            detectors,
            overall,
            per_label,
        }
    }
    /// The terminal summary table.
    pub fn table(&self) -> String {
        let f = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>5} {:>5} {:>5} {:>9} {:>7} {:>6} {:>9} {:>9}",
            "detector",
            "hits",
            "tp",
            "fp",
            "fn",
            "precision",
            "recall",
            "f1",
            "med.pkts",
            "ns/call"
        );
        if !self.labelled {
            out.clear();
            let _ = writeln!(
                out,
                "{:<16} {:>6} {:>9} {:>9}   (no --labels: hits only)",
                "detector", "hits", "med.pkts", "ns/call"
            );
            for s in &self.detectors {
                let _ = writeln!(
                    out,
                    "{:<16} {:>6} {:>9} {:>9}",
                    s.detector,
                    s.hits,
                    s.median_packets_to_decision
                        .map_or_else(|| "-".into(), |m| format!("{m}")),
                    s.ns_per_call
                        .map_or_else(|| "-".into(), |c| format!("{c:.0}")),
                );
            }
        }
        for s in self
            .detectors
            .iter()
            .chain(std::iter::once(&self.overall))
            .filter(|_| self.labelled)
        {
            let _ = writeln!(
                out,
                "{:<16} {:>6} {:>5} {:>5} {:>5} {:>9} {:>7} {:>6} {:>9} {:>9}",
                s.detector,
                s.hits,
                s.tp,
                s.fp,
                s.fn_,
                f(s.precision),
                f(s.recall),
                f(s.f1),
                s.median_packets_to_decision
                    .map_or_else(|| "-".into(), |m| format!("{m}")),
                s.ns_per_call
                    .map_or_else(|| "-".into(), |c| format!("{c:.0}")),
            );
        }
        let _ = writeln!(
            out,
            "{} packets, {} flows, {} files in {:.3} s: {:.0} packets/s",
            self.packets,
            self.flows,
            self.files.len(),
            self.seconds,
            self.packets_per_second
        );
        out
    }

    /// `report.md`, embedding `chart.svg`.
    pub fn markdown(&self) -> String {
        let f = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
        let mut md = String::from("# blocklab VPN detection experiment\n\n");
        let _ = writeln!(
            md,
            "{} packets in {} flows from {} ({:.3} s, {:.0} packets/s).\n",
            self.packets,
            self.flows,
            self.files.join(", "),
            self.seconds,
            self.packets_per_second
        );
        if !self.labelled {
            md.push_str("No labels were given (`--labels`): every flow counts as `none`, so hits are false positives by definition.\n\n");
        }
        md.push_str("![precision and recall per detector](chart.svg)\n\n## Detectors\n\n");
        md.push_str("| detector | positive class | hits | TP | FP | FN | TN | precision | recall | F1 | median packets to decision | ns per call |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for s in self.detectors.iter().chain(std::iter::once(&self.overall)) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.detector,
                s.positive,
                s.hits,
                s.tp,
                s.fp,
                s.fn_,
                s.tn,
                f(s.precision),
                f(s.recall),
                f(s.f1),
                s.median_packets_to_decision
                    .map_or_else(|| "–".into(), |m| format!("{m}")),
                s.ns_per_call
                    .map_or_else(|| "–".into(), |c| format!("{c:.0}")),
            );
        }
        md.push_str("\n## Flows flagged per label\n\n| label | flows |");
        for s in &self.detectors {
            let _ = write!(md, " {} |", s.detector);
        }
        md.push_str("\n|---|---|");
        md.push_str(&"---|".repeat(self.detectors.len()));
        md.push('\n');
        for r in &self.per_label {
            let _ = write!(md, "| {} | {} |", r.label, r.flows);
            for (_, h) in &r.hits {
                let _ = write!(md, " {h} |");
            }
            md.push('\n');
        }
        md.push_str("\n## Misclassified flows\n\n");
        let mut any = false;
        for s in self.detectors.iter().chain(std::iter::once(&self.overall)) {
            for m in s.misclassified.iter().take(50) {
                if !any {
                    md.push_str("| detector | error | file | proto | client | server | label |\n|---|---|---|---|---|---|---|\n");
                    any = true;
                }
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    s.detector, m.error, m.file, m.proto, m.client, m.server, m.label
                );
            }
            let more = s.misclassified.len().saturating_sub(50) as u64 + s.misclassified_more;
            if more > 0 {
                let _ = writeln!(
                    md,
                    "| {} | … {more} more ({} listed in report.json) | | | | | |",
                    s.detector,
                    s.misclassified.len()
                );
            }
        }
        if !any {
            md.push_str("None.\n");
        }
        md
    }

    /// `chart.svg`: precision and recall per detector as grouped bars.
    pub fn svg(&self) -> String {
        let (bar, gap, left, top, h) = (22.0, 30.0, 50.0, 30.0, 200.0);
        let n = self.detectors.len() + 1;
        let width = left + n as f64 * (2.0 * bar + gap) + 20.0;
        let height = top + h + 70.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"16\" font-size=\"13\">precision (blue) and recall (orange) per detector</text>\n"
        );
        for i in 0..=4 {
            let v = f64::from(i) / 4.0;
            let y = top + h - v * h;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.2}</text>",
                width - 10.0,
                left - 4.0,
                y + 4.0
            );
        }
        for (i, d) in self
            .detectors
            .iter()
            .chain(std::iter::once(&self.overall))
            .enumerate()
        {
            let x = left + 10.0 + i as f64 * (2.0 * bar + gap);
            for (j, (v, color)) in [(d.precision, "#3b6fb6"), (d.recall, "#e8862a")]
                .into_iter()
                .enumerate()
            {
                let bx = x + j as f64 * bar;
                match v {
                    Some(v) => {
                        let bh = v.clamp(0.0, 1.0) * h;
                        let _ = writeln!(
                            s,
                            "<rect x=\"{bx}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{color}\"><title>{}: {v:.3}</title></rect>",
                            top + h - bh,
                            bar - 2.0,
                            d.detector
                        );
                    }
                    None => {
                        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">n/a</text>", bx + bar / 2.0, top + h - 4.0);
                    }
                }
            }
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" transform=\"rotate(-35 {} {})\">{}</text>",
                x + bar,
                top + h + 14.0,
                x + bar,
                top + h + 14.0,
                d.detector
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_by_file_by_flow_and_by_port() {
        let l = Labels::parse("l.csv", "file,label\n# comment\nudp.pcap,*:1194,openvpn\nx.pcap,10.0.0.2:51820,wireguard\nnon-vpn.pcap,none\n").unwrap();
        assert_eq!(
            l.label("udp.pcap", "10.3.0.222:1194".parse().unwrap()),
            "openvpn"
        );
        assert_eq!(
            l.label("udp.pcap", "10.3.0.222:53".parse().unwrap()),
            "none"
        );
        assert_eq!(
            l.label("x.pcap", "10.0.0.2:51820".parse().unwrap()),
            "wireguard"
        );
        assert_eq!(
            l.label("other.pcap", "10.0.0.2:51820".parse().unwrap()),
            "none"
        );
    }

    #[test]
    fn bad_label_lines_are_all_reported() {
        let err = Labels::parse("l.csv", "a.pcap,openvpn\nb.pcap\nc.pcap,nonsense,openvpn\n")
            .unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
        assert_eq!((err.diagnostics[0].line, err.diagnostics[1].line), (2, 3));
    }

    fn rec(after: Option<usize>, port: u16) -> FlowRecord {
        FlowRecord {
            transport: crate::detect::Transport::Udp,
            client: SocketAddr::from(([1, 1, 1, 1], port)),
            server: "2.2.2.2:2".parse().unwrap(),
            packets: 3,
            first_ns: u64::from(port),
            outcomes: vec![(
                "openvpn",
                after.map(|after| crate::detect::Verdict {
                    protocol: "openvpn",
                    rule: "handshake",
                    after,
                }),
            )],
            ja4: None,
        }
    }

    fn at(n: u32) -> OrderKey {
        let mut k = [0; ORDER_LEN];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    fn run() -> RunStats {
        RunStats {
            files: vec!["f".into()],
            packets: 10,
            seconds: 1.0,
            detectors: vec!["openvpn"],
            cost_ns: vec![100],
            calls: vec![10],
        }
    }

    #[test]
    fn scores_count_confusion_and_name_the_misses() {
        let flows = [
            ("openvpn", Some(2)),
            ("openvpn", Some(4)),
            ("openvpn", None),
            ("none", Some(16)),
            ("none", None),
        ];
        let mut t = Tally::new(&["openvpn"]);
        for (i, (label, after)) in flows.iter().enumerate() {
            t.add(&at(i as u32), "f", &rec(*after, i as u16), label);
        }
        let r = Report::build(&run(), &t, true);
        let s = &r.detectors[0];
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (2, 1, 1, 1));
        assert_eq!(s.precision, Some(2.0 / 3.0));
        assert_eq!(s.recall, Some(2.0 / 3.0));
        assert_eq!(s.median_packets_to_decision, Some(4.0));
        assert_eq!(s.ns_per_call, Some(10.0));
        assert_eq!(s.misclassified.len(), 2);
        assert_eq!(s.misclassified[0].client, "1.1.1.1:2", "in output order");
        assert_eq!(r.flows, 5);
        assert_eq!(r.per_label[0].label, "none");
        assert_eq!(r.per_label[1].hits, vec![("openvpn".to_string(), 2)]);
        assert!(r.markdown().contains("| openvpn | false-negative |"));
        assert!(r.svg().starts_with("<svg") && r.svg().contains("<rect x="));
        assert!(r.table().contains("openvpn"));
    }

    #[test]
    fn misses_are_bounded_and_merged_tallies_equal_one_tally() {
        // 2500 false negatives dealt to two tallies (odd/even places), and one tally of all.
        let mut one = Tally::new(&["openvpn"]);
        let mut parts = [Tally::new(&["openvpn"]), Tally::new(&["openvpn"])];
        for i in 0..2500u32 {
            let after = (i % 3 == 0).then_some((i % 7) as usize);
            let label = if i % 5 == 0 { "none" } else { "openvpn" };
            let r = rec(after, (i % 60_000) as u16);
            one.add(&at(i), "f", &r, label);
            parts[(i % 2) as usize].add(&at(i), "f", &r, label);
        }
        let [mut a, b] = parts;
        a.merge(b);
        let (x, y) = (
            Report::build(&run(), &one, true),
            Report::build(&run(), &a, true),
        );
        assert_eq!(
            serde_json::to_string(&x).unwrap(),
            serde_json::to_string(&y).unwrap()
        );
        let s = &x.detectors[0];
        assert_eq!(s.misclassified.len(), MISSES_KEPT);
        assert_eq!(
            s.misclassified.len() as u64 + s.misclassified_more,
            s.fp + s.fn_
        );
        assert!(x.markdown().contains("more (1000 listed in report.json)"));
        // The median from the histogram: hits have after = i % 7 for i % 3 == 0.
        let mut afters: Vec<usize> = (0..2500).filter(|i| i % 3 == 0).map(|i| i % 7).collect();
        afters.sort_unstable();
        let m = afters.len();
        let want = if m % 2 == 1 {
            afters[m / 2] as f64
        } else {
            (afters[m / 2 - 1] + afters[m / 2]) as f64 / 2.0
        };
        assert_eq!(s.median_packets_to_decision, Some(want));
    }
}
