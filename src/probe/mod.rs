//! `blocklab probe`: measures from the client side what a network blocks, and classifies each
//! URL the way OONI's Web Connectivity test does.
//!
//! For each URL the probe resolves the host through the resolver under test and through the
//! control resolver, connects to every address (through `--proxy` when given), performs the
//! TLS handshake for `https://`, fetches the page, and compares the two sides with OONI's rules
//! ([`classify`]). Results are JSON Lines shaped like OONI measurements ([`report`]); blocklab's
//! own findings (throttling with both rates, matched blockpage fingerprints) are under
//! `test_keys.x_blocklab`. `--report FILE.jsonl` renders a Markdown summary and an SVG chart.
//!
//! Files: [`input`] (URL lists), [`dns`], [`net`] (TCP/TLS, proxy tunnels), [`http`],
//! [`measure`] (one side), [`classify`] (pure), [`fingerprint`] (OONI blockpages),
//! [`report`], [`failure`] (OONI failure strings), [`facts`]. CSV files are read with
//! [`crate::rules::csv`].

pub mod classify;
pub mod dns;
pub mod facts;
pub mod failure;
pub mod fingerprint;
pub mod http;
pub mod input;
pub mod measure;
pub mod net;
pub mod report;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde_json::Value;

use classify::Params;
use fingerprint::{Fingerprints, Match};
use input::Input;
use measure::{Settings, Side};
use report::{Measured, Row, RunInfo};

/// `blocklab probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// URLs to measure (http:// or https://).
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// Files of URLs: Citizen Lab test-list CSVs or one URL per line (repeatable).
    #[arg(long, value_name = "FILE")]
    pub input: Vec<PathBuf>,
    /// Resolver under test, `IP[:PORT]` (default: the first nameserver of /etc/resolv.conf).
    #[arg(long, value_name = "ADDR")]
    pub resolver: Option<String>,
    /// Control resolver, `IP[:PORT]` (default: the first nameserver of /etc/resolv.conf).
    #[arg(long, value_name = "ADDR")]
    pub control_resolver: Option<String>,
    /// HTTP proxy under test (`http://IP:PORT`); connections go through it, HTTPS via CONNECT.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Write measurements (JSON Lines) here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Trust these CA certificates (PEM) instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any TLS certificate (lab use only).
    #[arg(long)]
    pub insecure: bool,
    /// Timeout of each step (DNS, connect, TLS, response head), in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
    /// Longest time spent downloading a body, in seconds (the rate is measured over it).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub download_time: f64,
    /// Largest body downloaded, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Report `throttled` when the probe's rate is below this fraction of the control's.
    #[arg(long, default_value_t = 0.5, value_name = "FRACTION")]
    pub throttle_fraction: f64,
    /// Compare rates only when the control downloaded at least this many bytes.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub throttle_min_bytes: u64,
    /// Only contact addresses in these networks (repeatable); others are recorded, not contacted.
    #[arg(long, value_name = "CIDR")]
    pub allow_net: Vec<IpNet>,
    /// URLs measured at the same time.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// Directory with OONI's fingerprints_http.csv and fingerprints_dns.csv (default: embedded).
    #[arg(long, value_name = "DIR")]
    pub fingerprints: Option<PathBuf>,
    /// Render a report from a JSON Lines file instead of measuring: FILE.md and FILE.svg.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["urls", "input"])]
    pub report: Option<PathBuf>,
    /// No progress lines on standard error.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Why a probe run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A command-line value is unusable.
    #[error("{0}")]
    Usage(String),
    /// Input files.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// Fingerprint files.
    #[error(transparent)]
    Fingerprints(#[from] fingerprint::FingerprintError),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] net::TlsSetupError),
    /// Writing output or reading a report's input.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProbeError + '_ {
    move |source| ProbeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Runs `blocklab probe`; exit 0 when every URL was measured, 2 on bad input.
pub fn run(args: Args) -> ExitCode {
    let result = match &args.report {
        Some(p) => render_report(p),
        None => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(probe(args)),
            Err(e) => Err(ProbeError::Usage(format!("cannot start the runtime: {e}"))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocklab probe: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parses `IP` or `IP:PORT` (port 53 by default).
pub fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}` is not IP or IP:PORT"))
}

fn system_resolver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("/etc/resolv.conf: {e}; give --resolver"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|a| parse_resolver(a.trim()).ok())
        .ok_or_else(|| "no nameserver in /etc/resolv.conf; give --resolver".to_string())
}

fn parse_proxy(s: &str) -> Result<SocketAddr, String> {
    let u = url::Url::parse(s).map_err(|e| format!("--proxy `{s}`: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!("--proxy `{s}`: only http:// proxies are supported"));
    }
    let host = u.host_str().unwrap_or("").trim_matches(['[', ']']);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("--proxy `{s}`: give the proxy as an IP address"))?;
    Ok(SocketAddr::new(
        ip,
        u.port_or_known_default().unwrap_or(8080),
    ))
}

struct Ctx {
    settings: Settings,
    probe: Side,
    control: Side,
    fingerprints: Fingerprints,
    params: Params,
    run: RunInfo,
}

async fn probe(args: Args) -> Result<(), ProbeError> {
    let usage = ProbeError::Usage;
    let resolver = match &args.resolver {
        Some(r) => parse_resolver(r),
        None => system_resolver(),
    }
    .map_err(usage)?;
    let control_resolver = match &args.control_resolver {
        Some(r) => parse_resolver(r),
        None => system_resolver(),
    }
    .map_err(usage)?;
    let proxy = args
        .proxy
        .as_deref()
        .map(parse_proxy)
        .transpose()
        .map_err(usage)?;
    if let Some(p) = proxy {
        // A proxy that is not there would make every URL look blocked at the TCP level.
        let c = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(p));
        match c.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ProbeError::Usage(format!("proxy {p} unreachable: {e}"))),
            Err(_) => return Err(ProbeError::Usage(format!("proxy {p} unreachable: timeout"))),
        }
    }
    let secs = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(ProbeError::Usage(format!(
                "--{name} must be a positive number of seconds"
            )))
        }
    };
    let timeout = secs("timeout", args.timeout)?;
    let download_time = secs("download-time", args.download_time)?;
    let mut inputs: Vec<Input> = args
        .urls
        .iter()
        .map(|u| {
            input::check_url(u).map(|_| Input {
                url: u.clone(),
                category_code: None,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    for p in &args.input {
        inputs.extend(input::load(p)?);
    }
    if inputs.is_empty() {
        return Err(ProbeError::Usage(
            "nothing to measure: give URLs or --input FILE".into(),
        ));
    }
    let fingerprints = match &args.fingerprints {
        Some(d) => Fingerprints::load_dir(d)?,
        None => Fingerprints::embedded()?,
    };
    let tls = net::tls_config(args.ca.as_deref(), args.insecure)?;
    let ctx = Arc::new(Ctx {
        settings: Settings {
            timeout,
            limits: http::Limits {
                timeout,
                max_body: args.max_body,
                download_time,
            },
            tls,
            allow: args.allow_net.clone(),
        },
        probe: Side { resolver, proxy },
        control: Side {
            resolver: control_resolver,
            proxy: None,
        },
        fingerprints,
        params: Params {
            throttle_fraction: args.throttle_fraction,
            throttle_min_bytes: args.throttle_min_bytes,
        },
        run: RunInfo {
            resolver,
            control_resolver,
            proxy: args.proxy.clone(),
            throttle_fraction: args.throttle_fraction,
        },
    });
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(io_err(p))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let out_name = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("<stdout>"));
    let total = inputs.len();
    let mut rows = Vec::with_capacity(total);
    let mut set = tokio::task::JoinSet::new();
    let mut next = inputs.into_iter();
    let mut done = 0usize;
    let started = Instant::now();
    loop {
        while set.len() < args.parallel.max(1) {
            let Some(inp) = next.next() else { break };
            let ctx = Arc::clone(&ctx);
            set.spawn(async move { measure_one(&inp, &ctx).await });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        done += 1;
        let v = match joined {
            Ok(v) => v,
            Err(e) => {
                // One URL's failure must not end a long run.
                eprintln!("[{done:>4}/{total}] a measurement task failed: {e}");
                continue;
            }
        };
        let line = serde_json::to_string(&v).unwrap_or_default();
        writeln!(out, "{line}").map_err(io_err(&out_name))?;
        if let Some(r) = Row::from_json(&v) {
            if !args.quiet {
                eprintln!(
                    "[{done:>4}/{total}] {:<13} {}{}  ({:.1}s elapsed)",
                    report::category(&r),
                    r.input,
                    r.failure
                        .as_deref()
                        .map(|f| format!("  {f}"))
                        .unwrap_or_default(),
                    started.elapsed().as_secs_f64()
                );
            }
            rows.push(r);
        }
    }
    out.flush().map_err(io_err(&out_name))?;
    let summary = report::summary_text(&rows);
    if args.out.is_some() {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = write!(std::io::stdout(), "{summary}");
    } else {
        eprint!("{summary}");
    }
    Ok(())
}

/// Measures one URL from both sides and returns its measurement object.
async fn measure_one(inp: &Input, ctx: &Ctx) -> Value {
    let start_time = SystemTime::now();
    let start = Instant::now();
    let Ok(url) = url::Url::parse(&inp.url) else {
        return Value::Null;
    };
    let (probe, control) = tokio::join!(
        measure::side(&url, &ctx.probe, &ctx.settings, start),
        measure::side(&url, &ctx.control, &ctx.settings, start)
    );
    let host_is_ip = matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
    let analysis = classify::classify(
        url.scheme() == "https",
        host_is_ip,
        &probe,
        &control,
        &ctx.params,
    );
    let blockpages = blockpages(&ctx.fingerprints, &probe, &control);
    report::measurement(
        &Measured {
            input: &inp.url,
            category_code: inp.category_code.as_deref(),
            start: start_time,
            runtime: start.elapsed().as_secs_f64(),
            probe: &probe,
            control: &control,
            analysis: &analysis,
            blockpages: &blockpages,
        },
        &ctx.run,
    )
}

/// Fingerprints matched by the probe's DNS answers or HTTP response and not by the control's.
pub fn blockpages(
    f: &Fingerprints,
    probe: &facts::SideFacts,
    control: &facts::SideFacts,
) -> Vec<Match> {
    let http = |s: &facts::SideFacts| match &s.http {
        Some(h) if h.status.is_some() => {
            f.match_http(&h.headers, &String::from_utf8_lossy(&h.body))
        }
        _ => Vec::new(),
    };
    let control_http = http(control);
    let control_dns = f.match_dns(&control.dns.addrs, &control.dns.cnames);
    let mut out: Vec<Match> = f
        .match_dns(&probe.dns.addrs, &probe.dns.cnames)
        .into_iter()
        .filter(|m| !control_dns.contains(m))
        .collect();
    out.extend(
        http(probe)
            .into_iter()
            .filter(|m| !control_http.contains(m)),
    );
    out
}

fn render_report(path: &Path) -> Result<(), ProbeError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line)
            .ok()
            .as_ref()
            .and_then(Row::from_json)
        {
            Some(r) => rows.push(r),
            None => bad.push(format!(
                "{}:{}: not a probe measurement",
                path.display(),
                i + 1
            )),
        }
    }
    if !bad.is_empty() {
        return Err(ProbeError::Usage(bad.join("\n")));
    }
    let md_path = path.with_extension("md");
    let svg_path = path.with_extension("svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(&svg_path, report::svg(&rows)).map_err(io_err(&svg_path))?;
    std::fs::write(
        &md_path,
        report::markdown(&path.display().to_string(), &rows, &svg_name),
    )
    .map_err(io_err(&md_path))?;
    let _ = writeln!(
        std::io::stdout(),
        "{}wrote {} and {}",
        report::summary_text(&rows),
        md_path.display(),
        svg_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_addresses() {
        assert_eq!(parse_resolver("127.0.0.1").unwrap().port(), 53);
        assert_eq!(parse_resolver("127.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_resolver("[::1]:53").unwrap().ip().to_string(), "::1");
        assert!(parse_resolver("dns.example").is_err());
        assert_eq!(parse_proxy("http://127.0.0.1:8080").unwrap().port(), 8080);
        assert!(parse_proxy("socks5://127.0.0.1:1080").is_err());
    }
}
