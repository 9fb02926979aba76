//! `blocklab check`: explain the decision for targets, as text or JSON lines (both rendered by
//! `policy::explain`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::policy::explain::explain;
use crate::policy::Policy;
use crate::rules::{Day, RuleSet};

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
    // Explain every target first: bad input is reported before any output.
    let mut explained = Vec::with_capacity(a.targets.len());
    for t in &a.targets {
        match explain(&policy, jid, t, day) {
            Ok(e) => explained.push(e),
            Err(e) => return bad(format!("bad target `{t}`: {e}")),
        }
    }
    for e in &explained {
        if a.json {
            println!("{}", e.json());
        } else {
            print!("{}", e.text());
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
