//! `blocklab check`: explain the decision for targets, as text or JSON lines (both rendered by
//! `policy::explain`), optionally for a connection (port, ECH, JA4, hour, ISP, destination).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::policy::explain::explain_conn;
use crate::policy::{Conn, Policy};
use crate::rules::{check_ja4, parse_hhmm, Day, Port};

/// `blocklab check`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["jurisdiction", "client", "client_group"])))]
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
    /// Decide for the config's `[[clients]]` group of this `name` (its jurisdiction, ISP
    /// and date).
    #[arg(long, value_name = "NAME")]
    pub client_group: Option<String>,
    /// Simulated date (default: the client group's `date`, else the config's, else today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub at: Option<String>,
    /// The connection's server protocol and port (`tcp/443`, `udp/53`), for `ports` rules.
    #[arg(long, value_name = "PROTO/PORT")]
    pub port: Option<String>,
    /// The ClientHello carries an ECH extension (for `ech` rules).
    #[arg(long)]
    pub ech: bool,
    /// The ClientHello's JA4 fingerprint (for `ja4` rules).
    #[arg(long, value_name = "FP")]
    pub ja4: Option<String>,
    /// Local time of day in the jurisdiction (for `hours` rules).
    #[arg(long, value_name = "HH:MM")]
    pub hour: Option<String>,
    /// The client's ISP profile (an `[[isp]]` id of the jurisdiction; default: the client
    /// group's).
    #[arg(long, value_name = "ID")]
    pub isp: Option<String>,
    /// The destination address of a connection to a name (an allow rule on the address wins).
    #[arg(long, value_name = "IP")]
    pub dst: Option<IpAddr>,
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
    if a.config.is_none() && a.jurisdiction.is_some() {
        // No client map is needed to ask about a jurisdiction (and the default one names `ru`,
        // which a rules directory may not define).
        config.clients.clear();
    }
    if a.rules.is_some() {
        config.rules = a.rules.clone();
        config.path = None;
    }
    let at_flag = match a.at.as_deref().map(str::parse::<Day>).transpose() {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let port = match a.port.as_deref().map(str::parse::<Port>).transpose() {
        Ok(p) => p,
        Err(e) => return bad(format!("--port: {e}")),
    };
    let ja4 = match a.ja4.as_deref().map(check_ja4).transpose() {
        Ok(f) => f,
        Err(e) => return bad(format!("--ja4: {e}")),
    };
    let minute = match a.hour.as_deref().map(parse_hhmm).transpose() {
        Ok(Some(1440)) => return bad("--hour: 24:00 is not a time of day (use 00:00)"),
        Ok(m) => m,
        Err(e) => return bad(format!("--hour: {e}")),
    };
    let rules = match config.load_rules() {
        Ok(r) => r,
        Err(e) => return bad(format!("bad rules:\n{e}")),
    };
    let policy = match Policy::compile_groups(&rules, &config.client_groups()) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let (jid, group_isp, group_date) = match (&a.jurisdiction, a.client, &a.client_group) {
        (Some(code), _, _) => match policy.jurisdiction_by_code(code) {
            Some(j) => (j, None, None),
            None => {
                return bad(format!(
                    "unknown jurisdiction `{code}` (have: {})",
                    rules.codes()
                ))
            }
        },
        (None, Some(ip), _) => match policy.group_for(ip) {
            Some(g) => (g.jurisdiction, g.isp, g.date),
            None => return bad(format!("client {ip} is not in any configured network")),
        },
        (None, None, Some(name)) => match policy.group_by_name(name) {
            Some(g) => (g.jurisdiction, g.isp, g.date),
            None => {
                let have: Vec<&str> = policy
                    .groups()
                    .iter()
                    .filter_map(|g| g.name.as_deref())
                    .collect();
                return bad(format!(
                    "no [[clients]] group named `{name}` (have: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ));
            }
        },
        (None, None, None) => return bad("give --jurisdiction, --client or --client-group"),
    };
    let isp = match &a.isp {
        Some(id) => match policy.isp_by_id(jid, id) {
            Some(i) => Some(i),
            None => {
                let have: Vec<&str> = policy
                    .jurisdiction(jid)
                    .isps
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect();
                return bad(format!(
                    "unknown ISP profile `{id}` in `{}` (have: {})",
                    policy.jurisdiction(jid).code,
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ));
            }
        },
        None => group_isp,
    };
    let day = at_flag
        .or(group_date)
        .or_else(|| config.date())
        .unwrap_or_else(Day::today_utc);
    let conn = Conn {
        port,
        ech: a.ech,
        ja4: ja4.as_deref(),
        local_minute: minute,
        isp,
        dst: a.dst,
    };
    // Explain every target first: bad input is reported before any output.
    let mut explained = Vec::with_capacity(a.targets.len());
    for t in &a.targets {
        match explain_conn(&policy, jid, t, day, &conn) {
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
