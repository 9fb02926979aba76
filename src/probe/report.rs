//! Output: one JSON object per URL shaped like an OONI measurement (`input`, `test_name`,
//! `measurement_start_time`, `test_keys` with OONI's Web Connectivity keys, blocklab's own
//! findings under `test_keys.x_blocklab`), the summary table, and the Markdown + SVG report
//! rendered from a JSON Lines file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::classify::Analysis;
use super::facts::{HttpFacts, SideFacts};
use super::fingerprint::Match;
use crate::rules::Day;

/// OONI's time format (`YYYY-MM-DD HH:MM:SS`, UTC).
pub fn ooni_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i32::try_from(secs / 86_400).unwrap_or(0);
    let (y, m, d) = Day(days).ymd();
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// What the report needs to know about the run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The resolver under test.
    pub resolver: SocketAddr,
    /// The control resolver.
    pub control_resolver: SocketAddr,
    /// The proxy under test.
    pub proxy: Option<String>,
    /// Throttling threshold.
    pub throttle_fraction: f64,
    /// The OONI base-format fields shared by every measurement of the run.
    pub base: BaseInfo,
}

/// The version of OONI's base data format (df-000-base) the measurements follow.
pub const DATA_FORMAT_VERSION: &str = "0.2.0";
/// The Web Connectivity version whose keys the measurements carry: the classic algorithm's,
/// as in the example measurement of OONI's spec ts-017-web-connectivity (2024-02-14-001).
pub const WEB_CONNECTIVITY_VERSION: &str = "0.4.0";

/// OONI's per-run base fields: who measured (country, network) and which report.
#[derive(Debug, Clone)]
pub struct BaseInfo {
    /// `probe_cc`: ISO 3166 alpha-2 code, upper case (`ZZ` = unknown).
    pub probe_cc: String,
    /// `probe_asn`: `AS` and a number (`AS0` = unknown).
    pub probe_asn: String,
    /// `report_id`: `YYYYMMDDTHHMMSSZ_webconnectivity_CC_ASN_n1_<16 random>`, as OONI's.
    pub report_id: String,
    /// `test_start_time`: when the run started (OONI time format).
    pub test_start_time: String,
}

impl BaseInfo {
    /// Checks `cc` and `asn` and makes the run's report ID; `start` is the run's start.
    pub fn new(cc: &str, asn: &str, start: SystemTime) -> Result<BaseInfo, String> {
        let cc = cc.to_ascii_uppercase();
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("--probe-cc {cc}: two letters (ZZ if unknown)"));
        }
        let number = asn
            .strip_prefix("AS")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| format!("--probe-asn {asn}: `AS` and a number (AS0 if unknown)"))?;
        let t = ooni_time(start);
        let stamp: String = t.chars().filter(char::is_ascii_digit).collect();
        let report_id = format!(
            "{}T{}Z_webconnectivity_{cc}_{number}_n1_{}",
            &stamp[..8],
            &stamp[8..],
            random_token(16)
        );
        Ok(BaseInfo {
            probe_cc: cc,
            probe_asn: format!("AS{number}"),
            report_id,
            test_start_time: t,
        })
    }
}

/// `n` random letters and digits (from the std hasher's per-process random keys).
fn random_token(n: usize) -> String {
    use std::hash::{BuildHasher, RandomState};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let state = RandomState::new();
    (0..n)
        .map(|i| char::from(ALPHABET[(state.hash_one(i) % ALPHABET.len() as u64) as usize]))
        .collect()
}

fn failure(f: &Option<String>) -> Value {
    f.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn headers_obj(h: &[(String, String)]) -> Value {
    let mut m = Map::new();
    for (k, v) in h {
        m.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Value::Object(m)
}

fn body_value(h: &HttpFacts) -> Value {
    const KEEP: usize = 8 * 1024;
    if h.body.len() <= KEEP {
        if let Ok(s) = std::str::from_utf8(&h.body) {
            return Value::String(s.to_string());
        }
    }
    Value::Null
}

fn queries(side: &SideFacts, host: &str) -> Value {
    let resolver = side.dns.resolver.map(|r| r.to_string());
    Value::Array(
        side.dns
            .queries
            .iter()
            .map(|q| {
                let answers: Vec<Value> = q
                    .answers
                    .iter()
                    .map(|(ip, ttl)| {
                        if ip.is_ipv4() {
                            json!({"answer_type": "A", "ipv4": ip.to_string(), "ttl": ttl})
                        } else {
                            json!({"answer_type": "AAAA", "ipv6": ip.to_string(), "ttl": ttl})
                        }
                    })
                    .collect();
                json!({
                    "engine": "udp",
                    "resolver_address": resolver,
                    "hostname": host,
                    "query_type": q.query_type,
                    "failure": failure(&q.failure),
                    "answers": answers,
                    "t": q.t,
                })
            })
            .collect(),
    )
}

/// OONI's `control` object (the test helper's response shape) from the control side.
fn control_obj(c: &SideFacts) -> Value {
    let mut tcp = Map::new();
    for x in &c.connects {
        tcp.insert(
            x.addr.to_string(),
            json!({"status": x.failure.is_none(), "failure": failure(&x.failure)}),
        );
    }
    let http = match &c.http {
        Some(h) => json!({
            "body_length": if h.status.is_some() { h.body.len() as i64 } else { -1 },
            "failure": failure(&h.failure),
            "title": h.title,
            "headers": headers_obj(&h.headers),
            "status_code": h.status.map_or(-1, i64::from),
        }),
        None => {
            json!({"body_length": -1, "failure": null, "title": "", "headers": {}, "status_code": -1})
        }
    };
    // The test helper reports NXDOMAIN as `dns_name_error`.
    let dns_failure = match c.dns.failure.as_deref() {
        Some("dns_nxdomain_error") => Value::String("dns_name_error".into()),
        other => other.map_or(Value::Null, |s| Value::String(s.into())),
    };
    json!({
        "tcp_connect": tcp,
        "http_request": http,
        "dns": {"failure": dns_failure, "addrs": c.dns.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()},
    })
}

/// Everything that goes into one measurement line.
#[derive(Debug)]
pub struct Measured<'a> {
    /// The URL.
    pub input: &'a str,
    /// Its Citizen Lab category, if known.
    pub category_code: Option<&'a str>,
    /// When the measurement started.
    pub start: SystemTime,
    /// How long it took, in seconds.
    pub runtime: f64,
    /// What the network under test showed.
    pub probe: &'a SideFacts,
    /// What the control showed.
    pub control: &'a SideFacts,
    /// The classification.
    pub analysis: &'a Analysis,
    /// Blockpage fingerprints matched on the probe's side only.
    pub blockpages: &'a [Match],
}

/// The measurement as a JSON object shaped like OONI's.
pub fn measurement(m: &Measured<'_>, run: &RunInfo) -> Value {
    let host = url::Url::parse(m.input)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_default();
    let p = m.probe;
    let a = m.analysis;
    let tcp: Vec<Value> = p
        .connects
        .iter()
        .map(|c| {
            let blocked = c.failure.is_some()
                && m.control.connects.iter().any(|x| x.failure.is_none());
            json!({
                "ip": c.addr.ip().to_string(),
                "port": c.addr.port(),
                "status": {"success": c.failure.is_none(), "failure": failure(&c.failure), "blocked": blocked},
                "t": c.t,
            })
        })
        .collect();
    let tls: Vec<Value> = p
        .tls
        .iter()
        .map(|t| {
            json!({
                "address": t.addr.to_string(),
                "server_name": t.server_name,
                "failure": failure(&t.failure),
                "tls_version": t.tls_version,
                "t": t.t,
            })
        })
        .collect();
    let requests: Vec<Value> = p
        .http
        .iter()
        .map(|h| {
            json!({
                "request": {"method": "GET", "url": m.input, "tor": {"is_tor": false}, "x_transport": "tcp"},
                "response": {
                    "code": h.status.map_or(0, i64::from),
                    "headers": headers_obj(&h.headers),
                    "body": body_value(h),
                    "body_is_truncated": h.body_is_truncated,
                },
                "failure": failure(&h.failure),
                "t": h.t,
            })
        })
        .collect();
    let rate = |h: &Option<HttpFacts>| h.as_ref().and_then(HttpFacts::rate_kbps);
    let confirmed = m.blockpages.iter().any(|b| b.confirms_block);
    let outcome = match (a.blocking.to_json(), a.accessible) {
        _ if confirmed => "blocked",
        (Value::Bool(false), Some(true)) => "accessible",
        (Value::Bool(false), _) => "down",
        (Value::Null, _) => "inconclusive",
        _ => "blocked",
    };
    json!({
        "data_format_version": DATA_FORMAT_VERSION,
        "input": m.input,
        "report_id": run.base.report_id,
        "probe_cc": run.base.probe_cc,
        "probe_asn": run.base.probe_asn,
        "probe_ip": "127.0.0.1",
        "test_name": "web_connectivity",
        "test_version": WEB_CONNECTIVITY_VERSION,
        "test_start_time": run.base.test_start_time,
        "software_name": "blocklab",
        "software_version": env!("CARGO_PKG_VERSION"),
        "measurement_start_time": ooni_time(m.start),
        "test_runtime": m.runtime,
        "annotations": {
            "category_code": m.category_code,
            "resolver": run.resolver.to_string(),
            "control_resolver": run.control_resolver.to_string(),
            "proxy": run.proxy,
        },
        "test_keys": {
            "client_resolver": run.resolver.ip().to_string(),
            "queries": queries(p, &host),
            "dns_experiment_failure": failure(&p.dns.failure),
            "tcp_connect": tcp,
            "tls_handshakes": tls,
            "requests": requests,
            "http_experiment_failure": p.http.as_ref().map_or(Value::Null, |h| failure(&h.failure)),
            "control": control_obj(m.control),
            "control_failure": failure(&a.control_failure),
            "dns_consistency": a.dns_consistency,
            "body_length_match": a.body_length_match,
            "body_proportion": a.body_proportion,
            "status_code_match": a.status_code_match,
            "headers_match": a.headers_match,
            "title_match": a.title_match,
            "accessible": a.accessible,
            "blocking": a.blocking.to_json(),
            "x_blocklab": {
                "outcome": outcome,
                "throttled": a.throttled,
                "throttle_fraction": run.throttle_fraction,
                "rate_kbps": {"probe": rate(&p.http), "control": rate(&m.control.http)},
                "blockpage": m.blockpages,
                "blockpage_confirmed": confirmed,
                "not_contacted": p.skipped.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "redirects_followed": false,
            },
        },
    })
}

/// One measurement, as the summary sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The URL.
    pub input: String,
    /// `false`, `null`, `dns`, ...
    pub blocking: String,
    /// accessible / down / blocked / inconclusive.
    pub outcome: String,
    /// The first failure seen on the probe's side.
    pub failure: Option<String>,
    /// blocklab's throttling verdict.
    pub throttled: bool,
    /// Names of matched blockpage fingerprints that confirm a block.
    pub blockpages: Vec<String>,
}

impl Row {
    /// Reads the fields back from a measurement object.
    pub fn from_json(v: &Value) -> Option<Row> {
        let tk = v.get("test_keys")?;
        let blocking = match tk.get("blocking")? {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::String(s) => s.clone(),
            _ => return None,
        };
        let x = tk.get("x_blocklab");
        let failure = ["dns_experiment_failure", "http_experiment_failure"]
            .iter()
            .find_map(|k| tk.get(*k).and_then(Value::as_str).map(String::from));
        Some(Row {
            input: v.get("input")?.as_str()?.to_string(),
            blocking,
            outcome: x
                .and_then(|x| x.get("outcome"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            failure,
            throttled: x
                .and_then(|x| x.get("throttled"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            blockpages: x
                .and_then(|x| x.get("blockpage"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|m| m.get("confirms_block") == Some(&Value::Bool(true)))
                        .filter_map(|m| m.get("name").and_then(Value::as_str).map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The order and wording of the summary's categories.
const CATEGORIES: &[(&str, &str)] = &[
    ("accessible", "accessible (blocking: false)"),
    ("dns", "blocking: dns"),
    ("tcp_ip", "blocking: tcp_ip"),
    ("http-failure", "blocking: http-failure"),
    ("http-diff", "blocking: http-diff"),
    ("blockpage", "blockpage only (x_blocklab; OONI: none)"),
    ("down", "unreachable on both sides (website down)"),
    ("inconclusive", "inconclusive (blocking: null)"),
];

/// The category of a row (a key of the summary table).
pub fn category(r: &Row) -> &str {
    match r.outcome.as_str() {
        "accessible" | "down" | "inconclusive" => &r.outcome,
        _ if r.blocking == "false" || r.blocking == "null" => "blockpage",
        _ => &r.blocking,
    }
}

/// Counts per category, in table order.
pub fn tally(rows: &[Row]) -> Vec<(&'static str, &'static str, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(category(r)).or_default() += 1;
    }
    CATEGORIES
        .iter()
        .map(|(k, label)| (*k, *label, counts.get(k).copied().unwrap_or(0)))
        .collect()
}

/// The plain-text summary table printed at the end of a run.
pub fn summary_text(rows: &[Row]) -> String {
    let mut s = String::new();
    let total = rows.len();
    let _ = writeln!(s, "{:<44} {:>6} {:>7}", "result", "urls", "share");
    for (_, label, n) in tally(rows) {
        let _ = writeln!(s, "{label:<44} {n:>6} {:>6.1}%", pct(n, total));
    }
    let _ = writeln!(s, "{:<44} {total:>6}", "total");
    let throttled = rows.iter().filter(|r| r.throttled).count();
    let _ = writeln!(s, "throttled (x_blocklab): {throttled}");
    let bp: Vec<&Row> = rows.iter().filter(|r| !r.blockpages.is_empty()).collect();
    let mut names: Vec<&str> = bp
        .iter()
        .flat_map(|r| r.blockpages.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let _ = writeln!(
        s,
        "blockpage fingerprints confirming a block (x_blocklab): {} ({})",
        bp.len(),
        names.join(", ")
    );
    s
}

fn pct(n: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

/// The Markdown report; `svg_name` is the chart file it embeds.
pub fn markdown(source: &str, rows: &[Row], svg_name: &str) -> String {
    let mut s = String::new();
    let total = rows.len();
    let _ = writeln!(s, "# blocklab probe report\n");
    let _ = writeln!(
        s,
        "Source: `{source}`, {total} measurements (Web Connectivity classification, OONI semantics).\n"
    );
    let _ = writeln!(s, "| result | URLs | share |\n|---|---:|---:|");
    for (_, label, n) in tally(rows) {
        let _ = writeln!(s, "| {label} | {n} | {:.1}% |", pct(n, total));
    }
    let throttled = rows.iter().filter(|r| r.throttled).count();
    let _ = writeln!(
        s,
        "| throttled (`x_blocklab`) | {throttled} | {:.1}% |",
        pct(throttled, total)
    );
    let _ = writeln!(s, "\n![results]({svg_name})\n");
    let blocked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.outcome == "blocked" || r.throttled)
        .collect();
    if !blocked.is_empty() {
        let _ = writeln!(s, "## Blocked or throttled URLs\n");
        let _ = writeln!(
            s,
            "| URL | blocking | failure | throttled | blockpage |\n|---|---|---|---|---|"
        );
        for r in blocked {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.input.replace('|', "%7C"),
                r.blocking,
                r.failure.as_deref().unwrap_or(""),
                if r.throttled { "yes" } else { "" },
                r.blockpages.join(", ")
            );
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG horizontal bar chart of the counts per category.
pub fn svg(rows: &[Row]) -> String {
    let t = tally(rows);
    let max = t.iter().map(|(_, _, n)| *n).max().unwrap_or(0).max(1);
    let (label_w, bar_w, row_h) = (330.0, 360.0, 28.0);
    let height = 40.0 + row_h * t.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="13">"#,
        label_w + bar_w + 80.0
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-weight="bold">blocklab probe: {} URLs</text>"#,
        rows.len()
    );
    for (i, (key, label, n)) in t.iter().enumerate() {
        let y = 32.0 + row_h * i as f64;
        let w = bar_w * *n as f64 / max as f64;
        let color = match *key {
            "accessible" => "#4caf50",
            "down" | "inconclusive" => "#9e9e9e",
            _ => "#e53935",
        };
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.0}">{}</text><rect x="{label_w}" y="{y:.0}" width="{w:.1}" height="20" fill="{color}"/><text x="{:.1}" y="{:.0}">{n}</text>"#,
            y + 15.0,
            esc(label),
            label_w + w + 6.0,
            y + 15.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(blocking: &str, outcome: &str, throttled: bool) -> Row {
        Row {
            input: "https://x.org/".into(),
            blocking: blocking.into(),
            outcome: outcome.into(),
            failure: None,
            throttled,
            blockpages: vec![],
        }
    }

    #[test]
    fn base_fields_follow_ooni() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_786_300);
        let b = BaseInfo::new("ru", "AS8359", t).unwrap();
        assert_eq!(
            (b.probe_cc.as_str(), b.probe_asn.as_str()),
            ("RU", "AS8359")
        );
        assert_eq!(b.test_start_time, "2025-12-03 18:25:00");
        assert!(
            b.report_id
                .starts_with("20251203T182500Z_webconnectivity_RU_8359_n1_"),
            "{}",
            b.report_id
        );
        assert_eq!(
            b.report_id.len(),
            "20251203T182500Z_webconnectivity_RU_8359_n1_".len() + 16
        );
        let other = BaseInfo::new("ZZ", "AS0", t).unwrap();
        assert_ne!(other.report_id[..], b.report_id[..]);
        assert!(BaseInfo::new("RUS", "AS1", t).is_err());
        assert!(BaseInfo::new("R1", "AS1", t).is_err());
        assert!(BaseInfo::new("RU", "8359", t).is_err());
        assert!(BaseInfo::new("RU", "AS", t).is_err());
    }

    #[test]
    fn ooni_time_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_646_913_600 + 3_723);
        assert_eq!(ooni_time(t), "2022-03-10 13:02:03");
    }

    #[test]
    fn summary_counts_each_category() {
        let rows = vec![
            row("false", "accessible", true),
            row("false", "accessible", false),
            row("dns", "blocked", false),
            row("http-failure", "blocked", false),
            row("false", "down", false),
            row("null", "inconclusive", false),
        ];
        let t = tally(&rows);
        let get = |k: &str| t.iter().find(|(key, _, _)| *key == k).map(|x| x.2);
        assert_eq!(get("accessible"), Some(2));
        assert_eq!(get("dns"), Some(1));
        assert_eq!(get("http-failure"), Some(1));
        assert_eq!(get("down"), Some(1));
        assert_eq!(get("inconclusive"), Some(1));
        assert_eq!(get("tcp_ip"), Some(0));
        let txt = summary_text(&rows);
        assert!(txt.contains("throttled (x_blocklab): 1"), "{txt}");
        let md = markdown("out.jsonl", &rows, "out.svg");
        assert!(md.contains("| blocking: dns | 1 | 16.7% |"), "{md}");
        assert!(md.contains("![results](out.svg)"));
        let svg = svg(&rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 8);
        // A confirmed blockpage where OONI's keys see none has its own row.
        let mut r = row("false", "blocked", false);
        r.blockpages.push("ooni.ru_6".into());
        assert_eq!(category(&r), "blockpage");
    }
}
