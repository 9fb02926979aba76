//! `blocklab experiment`: runs every detector over the flows of pcap/pcapng files and scores
//! them against ground-truth labels (docs/ARCHITECTURE.md, "VPN detection experiments").
//!
//! [`pcap`] reads the captures (format by magic number) and decodes frames to UDP/TCP,
//! [`flows`] groups packets into bidirectional flows and classifies each as it grows,
//! [`output`] writes each flow's `flows.jsonl` line and counts it for the report as soon as
//! it ends, [`run`] drives it all on every core, and [`report`] scores the detectors from
//! those counters (precision, recall, F1, packets-to-decision, throughput) and writes
//! `report.json`, `report.md` and `chart.svg` into `--out`. Memory holds the live flows, not
//! every flow of the run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::detect::{self, endpoints::Endpoints};

pub mod flows;
pub mod output;
pub mod pcap;
pub mod report;
pub mod run;

use run::run_files;

use report::{Labels, Report, RunStats, Tally};

/// `blocklab experiment`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng, recognised by content).
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// Ground truth: CSV lines `file,label` or `file,server,label` (`server` as ip:port or
    /// *:port); unlabelled flows are `none`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Detectors to run, comma-separated (default: wireguard, openvpn, ike, pptp,
    /// fully-encrypted, and endpoints when `--endpoints` is given).
    #[arg(long, value_delimiter = ',')]
    pub detectors: Vec<String>,
    /// Output directory (created if missing).
    #[arg(long, default_value = "experiment-out")]
    pub out: PathBuf,
    /// Known VPN server networks for the `endpoints` detector (a `cidrs` list file).
    #[arg(long)]
    pub endpoints: Option<PathBuf>,
    /// UDP flow idle timeout, seconds.
    #[arg(long, default_value_t = 120)]
    pub udp_timeout: u64,
    /// Do not print progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Worker threads (default: every core). Files run in parallel; a file gets flow shards
    /// when there are fewer files than threads.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Why an experiment failed.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// Bad labels or endpoints file.
    #[error("{0}")]
    Input(#[from] crate::rules::RulesError),
    /// Unknown detector name.
    #[error("{0}")]
    Detector(#[from] detect::UnknownDetector),
    /// A capture could not be read.
    #[error("{path}: {message}")]
    Capture {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The scored report.
    pub report: Report,
    /// Captures that could not be read (skipped) or ended early (truncated or corrupt; their
    /// flows up to that point are included), with the reason.
    pub warnings: Vec<String>,
}

/// Runs the experiment and writes its files; `progress` receives progress lines.
pub fn experiment(args: &Args, progress: &mut dyn FnMut(&str)) -> Result<Outcome, ExperimentError> {
    let labels = match &args.labels {
        Some(p) => Some(load_labels(p)?),
        None => None,
    };
    let endpoints = match &args.endpoints {
        Some(p) => {
            let (shown, text) = read_text(p)?;
            Endpoints::parse(&shown, &text)?
        }
        None => Endpoints::default(),
    };
    let detectors = if args.detectors.is_empty() {
        // Without a list the endpoints detector cannot fire: leave it out of the scores.
        let no_list = endpoints.is_empty();
        let mut all = detect::standard(endpoints);
        all.retain(|d| !(no_list && d.name() == "endpoints"));
        all
    } else {
        detect::select(&args.detectors, endpoints)?
    };
    let names: Vec<&'static str> = detectors.iter().map(|d| d.name()).collect();
    let werr = |p: &Path| {
        let path = p.display().to_string();
        move |source| ExperimentError::Write { path, source }
    };
    let dir = &args.out;
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    let started = Instant::now();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let set = run::Settings {
        detectors: &detectors,
        names: &names,
        labels: labels.as_ref(),
        udp_timeout: args.udp_timeout,
        spill_dir: dir,
        epoch_frames: output::EPOCH_FRAMES,
        spill_at: output::SPILL_AT,
    };
    let jsonl = dir.join("flows.jsonl");
    let mut w = std::io::BufWriter::with_capacity(
        1 << 16,
        std::fs::File::create(&jsonl).map_err(werr(&jsonl))?,
    );
    let mut warnings = Vec::new();
    let mut packets = 0u64;
    let mut files = Vec::new();
    let mut cost_ns = vec![0; detectors.len()];
    let mut calls = vec![0; detectors.len()];
    let mut tally = Tally::new(&names);
    let mut failed: Option<ExperimentError> = None;
    let mut commit = |r: run::FileResult| {
        warnings.extend(r.warning);
        if let Some((p, e)) = r.write_error {
            failed.get_or_insert(werr(&p)(e));
        }
        let spilled = failed.is_none();
        if spilled {
            if let Err(e) = output::assemble(r.spills, &mut w) {
                failed = Some(werr(&jsonl)(e));
            }
        } else {
            output::assemble(r.spills, &mut std::io::sink()).ok();
        }
        if !r.read {
            return;
        }
        for (i, (c, k)) in r.cost_ns.iter().zip(&r.calls).enumerate() {
            cost_ns[i] += c;
            calls[i] += k;
        }
        packets += r.packets;
        if let Some(t) = r.tally {
            tally.merge(t);
        }
        files.push(r.name);
    };
    run_files(&args.pcaps, &set, threads.max(1), progress, &mut commit);
    if let Some(e) = failed {
        return Err(e);
    }
    w.flush().map_err(werr(&jsonl))?;
    drop(w);
    let seconds = started.elapsed().as_secs_f64();
    let run = RunStats {
        files,
        packets,
        seconds,
        detectors: names.clone(),
        cost_ns,
        calls,
    };
    let report = Report::build(&run, &tally, labels.is_some());
    write_outputs(dir, &report)?;
    Ok(Outcome { report, warnings })
}

/// The shown name and text of the file at `p`; a read error names the file.
fn read_text(p: &Path) -> Result<(String, String), crate::rules::RulesError> {
    let shown = p.display().to_string();
    let text = std::fs::read_to_string(p).map_err(|e| {
        crate::rules::RulesError::single(crate::rules::Diagnostic::file(
            &shown,
            format!("cannot read: {e}"),
        ))
    })?;
    Ok((shown, text))
}

fn load_labels(p: &Path) -> Result<Labels, ExperimentError> {
    let (shown, text) = read_text(p)?;
    Ok(Labels::parse(&shown, &text)?)
}

fn write_outputs(dir: &Path, report: &Report) -> Result<(), ExperimentError> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| ExperimentError::Write {
        path: "report.json".into(),
        source: e.into(),
    })?;
    for (name, bytes) in [
        ("report.json", json),
        ("report.md", report.markdown().into_bytes()),
        ("chart.svg", report.svg().into_bytes()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|source| ExperimentError::Write {
            path: p.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Runs the experiment from the command line: progress on stderr, summary on stdout.
pub fn run(args: Args) -> ExitCode {
    let quiet = args.quiet;
    let mut progress = |s: &str| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    match experiment(&args, &mut progress) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{}", out.report.table());
            let _ = writeln!(
                stdout,
                "wrote {}/{{flows.jsonl,report.json,report.md,chart.svg}}",
                args.out.display()
            );
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            if out.warnings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("blocklab experiment: {e}");
            ExitCode::from(2)
        }
    }
}
