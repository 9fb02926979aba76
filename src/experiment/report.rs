//! Ground-truth labels and the experiment report: per-detector confusion counts, precision,
//! recall, F1 and packets-to-decision, a per-label hit table, the misclassified flows, and
//! their renderings (JSON, Markdown, an SVG chart, a terminal table).
//!
//! A detector's positive class is the label equal to its protocol (`wireguard`, `openvpn`,
//! `ike`, `pptp`); the generic detectors (`endpoints`, `fully-encrypted`) and the overall
//! `any-vpn` verdict count every label other than `none` as positive. `any-vpn` is "some
//! detector other than `fully-encrypted` fired": the fully-encrypted rule is generic and has
//! a known false-positive profile (Wu et al.), so it is scored on its own line only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use super::flows::FlowRecord;
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

/// One flow as written to `flows.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct FlowLine {
    /// Capture file name.
    pub file: String,
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// Client address.
    pub client: String,
    /// Server address.
    pub server: String,
    /// Packets in the flow.
    pub packets: u64,
    /// Protocol of the first detector that fired, or null.
    pub verdict: Option<&'static str>,
    /// That detector.
    pub detector: Option<&'static str>,
    /// The detector's rule that fired.
    pub rule: Option<&'static str>,
    /// Payload packets needed to decide.
    pub decided_after: Option<usize>,
    /// Ground-truth label (only with `--labels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Every detector's packets-to-decision, or null when it did not fire.
    pub detectors: std::collections::BTreeMap<&'static str, Option<usize>>,
}

impl FlowLine {
    /// The line for `flow` of `file`.
    pub fn new(file: &str, flow: &FlowRecord, labels: Option<&Labels>) -> FlowLine {
        let v = flow.verdict();
        FlowLine {
            file: file.to_string(),
            proto: flow.transport.as_str(),
            client: flow.client.to_string(),
            server: flow.server.to_string(),
            packets: flow.packets,
            verdict: v.map(|(_, v)| v.protocol),
            detector: v.map(|(n, _)| n),
            rule: v.map(|(_, v)| v.rule),
            decided_after: v.map(|(_, v)| v.after),
            label: labels.map(|l| l.label(file, flow.server).to_string()),
            detectors: flow
                .outcomes
                .iter()
                .map(|(n, o)| (*n, o.map(|v| v.after)))
                .collect(),
        }
    }

    /// The flow's label (`none` without labels).
    fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(NONE)
    }
}

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
    pub hits: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// False negatives (`"fn"` in JSON).
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// True negatives.
    pub tn: usize,
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
    /// Flows it got wrong.
    pub misclassified: Vec<Miss>,
}

/// Hits per detector for one label.
#[derive(Debug, Clone, Serialize)]
pub struct LabelRow {
    /// The label.
    pub label: String,
    /// Flows with that label.
    pub flows: usize,
    /// Flows each detector flagged, in detector order.
    pub hits: Vec<(String, usize)>,
}

/// The whole report (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Capture files read.
    pub files: Vec<String>,
    /// Packets read.
    pub packets: u64,
    /// Flows found.
    pub flows: usize,
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
fn any_vpn(l: &FlowLine) -> Option<usize> {
    l.detectors
        .iter()
        .filter(|(d, _)| **d != "fully-encrypted")
        .filter_map(|(_, a)| *a)
        .min()
}

fn score(
    name: &str,
    lines: &[FlowLine],
    hit: impl Fn(&FlowLine) -> Option<usize>,
    cost: Option<f64>,
) -> Score {
    let class = positive_class(name);
    let positive = |l: &FlowLine| match class {
        Some(c) => l.label() == c,
        None => l.label() != NONE,
    };
    let mut s = Score {
        detector: name.to_string(),
        positive: class.map_or_else(|| "any label but none".to_string(), str::to_string),
        hits: 0,
        tp: 0,
        fp: 0,
        fn_: 0,
        tn: 0,
        precision: None,
        recall: None,
        f1: None,
        median_packets_to_decision: None,
        ns_per_call: cost,
        misclassified: Vec::new(),
    };
    let mut afters = Vec::new();
    for l in lines {
        let h = hit(l);
        let miss = |error| Miss {
            file: l.file.clone(),
            proto: l.proto,
            client: l.client.clone(),
            server: l.server.clone(),
            label: l.label().to_string(),
            error,
        };
        match (h.is_some(), positive(l)) {
            (true, true) => s.tp += 1,
            (true, false) => {
                s.fp += 1;
                s.misclassified.push(miss("false-positive"));
            }
            (false, true) => {
                s.fn_ += 1;
                s.misclassified.push(miss("false-negative"));
            }
            (false, false) => s.tn += 1,
        }
        afters.extend(h);
    }
    s.hits = s.tp + s.fp;
    s.precision = (s.hits > 0).then(|| s.tp as f64 / s.hits as f64);
    s.recall = (s.tp + s.fn_ > 0).then(|| s.tp as f64 / (s.tp + s.fn_) as f64);
    s.f1 = match (s.precision, s.recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    afters.sort_unstable();
    s.median_packets_to_decision = match afters.len() {
        0 => None,
        n if n % 2 == 1 => Some(afters[n / 2] as f64),
        n => Some((afters[n / 2 - 1] + afters[n / 2]) as f64 / 2.0),
    };
    s
}

/// Inputs of [`Report::build`] beyond the flows.
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
    /// Scores every detector on the flow lines.
    pub fn build(run: &RunStats, lines: &[FlowLine], labelled: bool) -> Report {
        let detectors = run
            .detectors
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let cost = match (run.cost_ns.get(i), run.calls.get(i)) {
                    (Some(&c), Some(&n)) if n > 0 => Some(c as f64 / n as f64),
                    _ => None,
                };
                score(d, lines, |l| l.detectors.get(d).copied().flatten(), cost)
            })
            .collect();
        let overall = score("any-vpn", lines, any_vpn, None);
        let mut labels: Vec<&str> = lines.iter().map(FlowLine::label).collect();
        labels.sort_unstable();
        labels.dedup();
        let per_label = labels
            .iter()
            .map(|&label| {
                let of: Vec<&FlowLine> = lines.iter().filter(|l| l.label() == label).collect();
                LabelRow {
                    label: label.to_string(),
                    flows: of.len(),
                    hits: run
                        .detectors
                        .iter()
                        .map(|&d| {
                            (
                                d.to_string(),
                                of.iter()
                                    .filter(|l| l.detectors.get(d).copied().flatten().is_some())
                                    .count(),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        Report {
            files: run.files.clone(),
            packets: run.packets,
            flows: lines.len(),
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
            if s.misclassified.len() > 50 {
                let _ = writeln!(
                    md,
                    "| {} | … {} more in report.json | | | | | |",
                    s.detector,
                    s.misclassified.len() - 50
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

    fn line(label: &str, after: Option<usize>) -> FlowLine {
        FlowLine {
            file: "f".into(),
            proto: "udp",
            client: "1.1.1.1:1".into(),
            server: "2.2.2.2:2".into(),
            packets: 3,
            verdict: after.map(|_| "openvpn"),
            detector: after.map(|_| "openvpn"),
            rule: None,
            decided_after: after,
            label: Some(label.into()),
            detectors: [("openvpn", after)].into_iter().collect(),
        }
    }

    #[test]
    fn scores_count_confusion_and_name_the_misses() {
        let lines = [
            line("openvpn", Some(2)),
            line("openvpn", Some(4)),
            line("openvpn", None),
            line("none", Some(16)),
            line("none", None),
        ];
        let run = RunStats {
            files: vec!["f".into()],
            packets: 10,
            seconds: 1.0,
            detectors: vec!["openvpn"],
            cost_ns: vec![100],
            calls: vec![10],
        };
        let r = Report::build(&run, &lines, true);
        let s = &r.detectors[0];
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (2, 1, 1, 1));
        assert_eq!(s.precision, Some(2.0 / 3.0));
        assert_eq!(s.recall, Some(2.0 / 3.0));
        assert_eq!(s.median_packets_to_decision, Some(4.0));
        assert_eq!(s.ns_per_call, Some(10.0));
        assert_eq!(s.misclassified.len(), 2);
        assert!(r.markdown().contains("| openvpn | false-negative |"));
        assert!(r.svg().starts_with("<svg") && r.svg().contains("<rect x="));
        assert!(r.table().contains("openvpn"));
    }
}
