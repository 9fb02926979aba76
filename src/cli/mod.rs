//! The `blocklab` command line: argument parsing and one function per subcommand.
//!
//! Exit codes: 0 success (a `check` says allow or block), 1 a problem found (`rules lint`), 2 bad
//! input or a failure to start.

pub mod check;
pub mod lab;
pub mod rules;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A network gateway that behaves like a national censor, for censorship research labs.
#[derive(Debug, Parser)]
#[command(name = "blocklab", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain what a jurisdiction does to targets (domains, IPs, URLs) at a date.
    Check(check::Args),
    /// Validate rules files or show the compiled policy's size.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Run the gateway: the DNS, HTTP/TLS and relay listeners of the config.
    Serve(ServeArgs),
    /// Run the VPN detectors over pcap/pcapng files and report precision and recall.
    Experiment(crate::experiment::Args),
    /// Measure what a network blocks, classified like OONI's Web Connectivity (or --report).
    Probe(crate::probe::Args),
    /// Run the in-path packet engine over pcap/pcapng captures: verdicts per flow, passed packets.
    Replay(crate::inpath::replay::Args),
    /// A censored network on this machine: client namespaces, blocklab on the path, origins.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

/// `blocklab serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Gateway config (blocklab.toml). Without it: shipped rules, DNS on 127.0.0.1:5353, the
    /// HTTP proxy on 127.0.0.1:8080, admin/metrics on 127.0.0.1:9153 (loopback only),
    /// loopback clients mapped to `ru`, the system resolver upstream, today's date.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Simulated date (YYYY-MM-DD), overriding the config's `date`.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// Jurisdiction code (e.g. `ru`, `eu`) for every client group, overriding the config.
    #[arg(long, value_name = "CODE")]
    pub jurisdiction: Option<String>,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Rules(c) => rules::run(c),
        Command::Serve(a) => serve(a),
        Command::Experiment(a) => crate::experiment::run(a),
        Command::Probe(a) => crate::probe::run(a),
        Command::Replay(a) => crate::inpath::replay::run(a),
        Command::Lab(c) => lab::run(c),
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn serve(a: ServeArgs) -> ExitCode {
    let mut config = match &a.config {
        Some(p) => match crate::config::Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => crate::config::Config::embedded_default(),
    };
    if let Err(e) = config.override_with(a.date.as_deref(), a.jurisdiction.as_deref()) {
        eprintln!("blocklab: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blocklab: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(crate::serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocklab: {e}");
            ExitCode::from(2)
        }
    }
}
