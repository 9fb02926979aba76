//! `blocklab check`: explain the decision for targets, as text or JSON lines.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::config::Config;
use crate::policy::{At, Decision, JurisdictionId, Policy, Target};
use crate::rules::{normalize_domain, Day, RuleSet};

/// `blocklab check`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["jurisdiction", "client"])))]
pub struct Args {
    /// Gateway config: its rules directory, client networks and date are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rules directory (overrides the config's; default: the shipped rules).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Decide for this jurisdiction code (e.g. `ru`, `eu`).
    #[arg(long, short, value_name = "CODE")]
    pub jurisdiction: Option<String>,
    /// Decide for this client address (mapped by the config's `[[clients]]`).
    #[arg(long, value_name = "IP")]
    pub client: Option<IpAddr>,
    /// Simulated date (default: the config's `date`, else today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub at: Option<String>,
    /// One JSON object per target and line.
    #[arg(long)]
    pub json: bool,
    /// Domains, IP addresses or URLs.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
}

fn bad(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("blocklab check: {msg}");
    ExitCode::from(2)
}

/// Runs `blocklab check`.
pub fn run(a: Args) -> ExitCode {
    let mut config = match &a.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return bad(format!("bad config:\n{e}")),
        },
        None => Config::embedded_default(),
    };
    if a.rules.is_some() {
        config.rules = a.rules.clone();
        config.path = None;
    }
    let day = match &a.at {
        Some(s) => match s.parse::<Day>() {
            Ok(d) => d,
            Err(e) => return bad(e),
        },
        None => config.date().unwrap_or_else(Day::today_utc),
    };
    let rules = match config.load_rules() {
        Ok(r) => r,
        Err(e) => return bad(format!("bad rules:\n{e}")),
    };
    let policy = match Policy::compile(&rules, &config.client_nets()) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let jid = match (&a.jurisdiction, a.client) {
        (Some(code), _) => match policy.jurisdiction_by_code(code) {
            Some(j) => j,
            None => {
                return bad(format!(
                    "unknown jurisdiction `{code}` (have: {})",
                    codes(&rules)
                ))
            }
        },
        (None, Some(ip)) => match policy.jurisdiction_for(ip) {
            Some(j) => j,
            None => return bad(format!("client {ip} is not in any configured network")),
        },
        (None, None) => return bad("give --jurisdiction or --client"),
    };
    // Normalise every target first: bad input is reported before any output.
    let mut normalised = Vec::with_capacity(a.targets.len());
    for t in &a.targets {
        match normalise_target(t) {
            Ok(n) => normalised.push(n),
            Err(e) => return bad(format!("bad target `{t}`: {e}")),
        }
    }
    for (raw, norm) in a.targets.iter().zip(&normalised) {
        let decision = policy.decide_in(jid, norm.target(), At::Day(day));
        if a.json {
            println!("{}", json_line(&policy, raw, jid, day, &decision));
        } else {
            print!("{}", text(&policy, raw, jid, day, &decision));
        }
    }
    ExitCode::SUCCESS
}

fn codes(rules: &RuleSet) -> String {
    rules
        .files
        .iter()
        .map(|f| f.jurisdiction.code.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A target with its host normalised (IDN to punycode, lower case).
pub(crate) enum Normalised {
    Ip(IpAddr),
    Domain(String),
    Url { host: String, path: String },
}

impl Normalised {
    pub(crate) fn target(&self) -> Target<'_> {
        match self {
            Normalised::Ip(ip) => Target::Ip(*ip),
            Normalised::Domain(d) => Target::Domain(d),
            Normalised::Url { host, path } => Target::Url { host, path },
        }
    }
}

pub(crate) fn normalise_target(t: &str) -> Result<Normalised, String> {
    match Target::parse(t) {
        Target::Ip(ip) => Ok(Normalised::Ip(ip)),
        Target::Domain(d) => normalize_domain(d)
            .map(|n| Normalised::Domain(n.into_owned()))
            .map_err(|e| e.to_string()),
        Target::Url { host, path } => {
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => normalize_domain(host)
                    .map_err(|e| e.to_string())?
                    .into_owned(),
            };
            Ok(Normalised::Url {
                host,
                path: path.to_string(),
            })
        }
    }
}

/// The JSON object of one decision (also used by the admin `/decide` endpoint).
pub fn json_line(
    policy: &Policy,
    target: &str,
    jid: JurisdictionId,
    day: Day,
    d: &Decision,
) -> serde_json::Value {
    let code = &policy.jurisdiction(jid).code;
    match d {
        Decision::Block(b) => {
            let r = policy.rule(b.rule);
            let mut v = json!({
                "target": target,
                "jurisdiction": code,
                "at": day.to_string(),
                "verdict": "block",
                "rule": r.id,
                "techniques": b.techniques.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "basis": r.basis,
                "source": r.source,
            });
            if let Some(k) = r.throttle_kbps {
                v["throttle_kbps"] = json!(k);
            }
            v
        }
        Decision::Allow { rule, .. } => {
            let mut v = json!({
                "target": target,
                "jurisdiction": code,
                "at": day.to_string(),
                "verdict": "allow",
                "rule": null,
                "techniques": [],
                "basis": null,
                "source": null,
            });
            if let Some(r) = rule {
                let r = policy.rule(*r);
                v["exception"] = json!(r.id);
                v["basis"] = json!(r.basis);
                v["source"] = json!(r.source);
            }
            v
        }
    }
}

fn text(policy: &Policy, target: &str, jid: JurisdictionId, day: Day, d: &Decision) -> String {
    let code = &policy.jurisdiction(jid).code;
    let mut out = String::new();
    match d {
        Decision::Block(b) => {
            let r = policy.rule(b.rule);
            out.push_str(&format!(
                "{target}: BLOCK in {code} on {day} by rule {}\n",
                r.id
            ));
            out.push_str(&format!("  techniques: {}", b.techniques));
            if let Some(k) = r.throttle_kbps {
                out.push_str(&format!(" ({k} kbit/s)"));
            }
            out.push('\n');
            if let Some(s) = &r.basis {
                out.push_str(&format!("  basis: {s}\n"));
            }
            if let Some(s) = &r.source {
                out.push_str(&format!("  source: {s}\n"));
            }
        }
        Decision::Allow { rule: Some(r), .. } => {
            let r = policy.rule(*r);
            out.push_str(&format!(
                "{target}: allow in {code} on {day} (exception {})\n",
                r.id
            ));
        }
        Decision::Allow { rule: None, .. } => {
            out.push_str(&format!(
                "{target}: allow in {code} on {day} (no rule matches)\n"
            ));
        }
    }
    out
}
