//! `blocklab replay`: the in-path engine over pcap/pcapng captures.
//!
//! Each capture runs through its own [`Engine`] in capture order, with the capture's own
//! timestamps as the clock (so policers and residual blocks behave as they would have live).
//! Written to `--out DIR`: `verdicts.jsonl`, one line per flow (file, client, server, proto,
//! action, rule, technique, target, after which packet, detector), and `passed.pcap` (raw IP,
//! link type 101): every packet that would have reached the other side, the engine's injected
//! RSTs and blockpages included. A capture that cannot be read is reported and skipped; the
//! exit code is then 1.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use super::engine::{Engine, EngineConfig, Fate, FlowEvent, Moments, Output, Stats, VpnMode};
use crate::config::Config;
use crate::experiment::pcap;
use crate::policy::{At, Policy};

/// `blocklab replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng, recognised by content).
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// Gateway config (its rules, client networks and date); absent = the shipped rules.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Treat every client as in this jurisdiction (else the config's client networks decide).
    #[arg(long, value_name = "J")]
    pub jurisdiction: Option<String>,
    /// Simulated date (YYYY-MM-DD); absent = the config's date, or today.
    #[arg(long, value_name = "DATE")]
    pub at: Option<String>,
    /// Output directory (created if missing).
    #[arg(long, default_value = "replay-out")]
    pub out: PathBuf,
    /// Apply `[[vpn]]` rules (`enforce`) or only name detected VPN flows (`observe`).
    #[arg(long, default_value = "enforce", value_parser = ["observe", "enforce"])]
    pub vpn: String,
    /// Do not print progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// One line of `verdicts.jsonl`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    file: &'a str,
    client: String,
    server: String,
    proto: &'static str,
    jurisdiction: Option<&'a str>,
    action: &'static str,
    rule: Option<&'a str>,
    technique: Option<&'static str>,
    target: &'a str,
    after_packet: u64,
    detector: Option<&'static str>,
}

/// What a replay of several captures did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Captures read (fully or up to a corrupt record).
    pub files: usize,
    /// Captures that could not be read, with the reason.
    pub failed: Vec<String>,
    /// Engine counters, summed over the captures.
    pub stats: Stats,
    /// Flows written to `verdicts.jsonl`.
    pub flows: usize,
    /// Packets written to `passed.pcap`.
    pub passed: u64,
    /// Frames that were not IP (skipped).
    pub not_ip: u64,
}

/// The IP packet inside a frame of link type `link`.
pub fn ip_of(link: u16, data: &[u8]) -> Option<&[u8]> {
    match link {
        101 | 12 | 14 | 228 | 229 => Some(data),
        1 => {
            let mut at = 12;
            loop {
                let et = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
                if matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                    at += 4;
                    continue;
                }
                return matches!(et, 0x0800 | 0x86dd)
                    .then(|| data.get(at + 2..))
                    .flatten();
            }
        }
        113 => data.get(16..),
        276 => data.get(20..),
        0 | 108 => data.get(4..),
        _ => None,
    }
}

/// The classic pcap writer for `passed.pcap` (raw IP, nanosecond timestamps).
struct PcapOut<W: Write> {
    w: W,
}

impl<W: Write> PcapOut<W> {
    fn new(mut w: W) -> std::io::Result<PcapOut<W>> {
        w.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&[0; 8])?;
        w.write_all(&65535u32.to_le_bytes())?;
        w.write_all(&101u32.to_le_bytes())?;
        Ok(PcapOut { w })
    }

    fn packet(&mut self, ts_ns: u64, data: &[u8]) -> std::io::Result<()> {
        let len = data.len() as u32;
        self.w
            .write_all(&((ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
        self.w
            .write_all(&((ts_ns % 1_000_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(data)
    }
}

/// Runs the engine over `pcaps`, writing `verdicts.jsonl` and `passed.pcap` into `out`.
pub fn replay(
    policy: &Policy,
    at: At,
    cfg: &EngineConfig,
    pcaps: &[PathBuf],
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> std::io::Result<Summary> {
    std::fs::create_dir_all(out)?;
    // 1 MiB buffers: passed.pcap is most of what replay writes (one write call per MiB).
    let mut verdicts = BufWriter::with_capacity(1 << 20, File::create(out.join("verdicts.jsonl"))?);
    let passed_file = File::create(out.join("passed.pcap"))?;
    let mut passed = PcapOut::new(BufWriter::with_capacity(1 << 20, passed_file))?;
    let mut sum = Summary::default();
    let mut o = Output::default();
    let mut events: Vec<FlowEvent> = Vec::new();
    // One engine, reset before each capture: a capture starts from no state, as with a new
    // engine, without a new flow table and detector set each time.
    let mut engine = Engine::new(EngineConfig {
        reserve_flows: 4096,
        ..cfg.clone()
    });
    for path in pcaps {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                progress(&format!("replay: {shown}: skipped: {e}"));
                sum.failed.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let reader = match pcap::Reader::new(&bytes) {
            Ok(r) => r,
            Err(e) => {
                progress(&format!("replay: {shown}: skipped: {e}"));
                sum.failed.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let started = Instant::now();
        engine.reset();
        let mut frames = 0u64;
        let mut last_ts = 0u64;
        let mut corrupt = None;
        for frame in reader {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    corrupt = Some(e);
                    break;
                }
            };
            frames += 1;
            last_ts = last_ts.max(frame.ts_ns);
            let Some(ip) = ip_of(frame.link, frame.data) else {
                sum.not_ip += 1;
                continue;
            };
            // The capture's own clock gives the time of day (`hours` rules); each client
            // group decides at its configured date, else at `at`.
            let when = Moments {
                at,
                groups: &[],
                unix_secs: Some((frame.ts_ns / 1_000_000_000) as i64),
            };
            engine.process(policy, &when, frame.ts_ns, ip, &mut o);
            if o.fate() == Fate::Forward {
                passed.packet(frame.ts_ns, ip)?;
                sum.passed += 1;
            }
            for (_, p) in &o.inject {
                passed.packet(frame.ts_ns, p)?;
                sum.passed += 1;
            }
            events.append(&mut o.events);
        }
        engine.finish(&mut events);
        let stats = engine.stats();
        add(&mut sum.stats, &stats);
        for e in events.drain(..) {
            let j = e.jurisdiction.map(|j| policy.jurisdiction(j).code.as_str());
            let line = Line {
                file: &shown,
                client: e.key.client.to_string(),
                server: e.key.server.to_string(),
                proto: e.key.proto.as_str(),
                jurisdiction: j,
                action: e.action,
                rule: e.rule.as_deref(),
                technique: e.technique,
                target: &e.target,
                after_packet: e.after_packet,
                detector: e.detector,
            };
            serde_json::to_writer(&mut verdicts, &line)?;
            verdicts.write_all(b"\n")?;
            sum.flows += 1;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        progress(&format!(
            "replay: {shown}: {frames} frames, {} flows, {} dropped, {} injected ({:.0} packets/s)",
            stats.flows,
            stats.dropped,
            stats.injected,
            frames as f64 / secs
        ));
        match corrupt {
            Some(e) => {
                progress(&format!(
                    "replay: {shown}: stopped at a corrupt record: {e}"
                ));
                sum.failed.push(format!("{shown}: {e}"));
            }
            None => sum.files += 1,
        }
    }
    verdicts.flush()?;
    passed.w.flush()?;
    Ok(sum)
}

fn add(a: &mut Stats, b: &Stats) {
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.dropped += b.dropped;
    a.injected += b.injected;
    a.flows += b.flows;
    a.evicted += b.evicted;
    a.reassembly_overflow += b.reassembly_overflow;
    a.detect_overflow += b.detect_overflow;
    a.unparsed += b.unparsed;
    a.policed += b.policed;
    a.unmapped += b.unmapped;
    a.resets += b.resets;
    a.drops += b.drops;
    a.blockpages += b.blockpages;
    a.throttles += b.throttles;
    a.freezes += b.freezes;
    a.quic_drops += b.quic_drops;
    a.residual_drops += b.residual_drops;
    a.vpn_actions += b.vpn_actions;
    a.gso_whole += b.gso_whole;
    a.gso_split += b.gso_split;
}

/// `blocklab replay`: exit 0, 1 when a capture was skipped, 2 on bad arguments.
pub fn run(args: Args) -> ExitCode {
    let config = match &args.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Config::embedded_default(),
    };
    let policy = match config.compile_policy() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let at = match &args.at {
        Some(d) => match d.parse() {
            Ok(day) => At::Day(day),
            Err(e) => {
                eprintln!("blocklab replay: --at {d}: {e}");
                return ExitCode::from(2);
            }
        },
        None => config.at(),
    };
    let mut cfg = match &config.inpath {
        Some(s) => s.engine_config(),
        None => EngineConfig::default(),
    };
    cfg.vpn = if args.vpn == "observe" {
        VpnMode::Observe
    } else {
        VpnMode::Enforce
    };
    if let Some(code) = &args.jurisdiction {
        match policy.jurisdiction_by_code(code) {
            Some(j) => cfg.jurisdiction = Some(j),
            None => {
                let have: Vec<&str> = policy
                    .jurisdictions()
                    .map(|(_, j)| j.code.as_str())
                    .collect();
                eprintln!(
                    "blocklab replay: --jurisdiction {code}: no rules file defines it (have: {})",
                    have.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let quiet = args.quiet;
    let mut progress = |s: &str| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let started = Instant::now();
    match replay(&policy, at, &cfg, &args.pcaps, &args.out, &mut progress) {
        Ok(s) => {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let st = &s.stats;
            println!(
                "replayed {} of {} captures: {} packets ({:.0}/s), {} flows; resets {}, drops {}, blockpages {}, throttles {} ({} packets policed), freezes {}, quic drops {}, residual drops {}, vpn actions {}; {} packets passed, {} injected",
                s.files,
                args.pcaps.len(),
                st.packets,
                st.packets as f64 / secs,
                s.flows,
                st.resets,
                st.drops,
                st.blockpages,
                st.throttles,
                st.policed,
                st.freezes,
                st.quic_drops,
                st.residual_drops,
                st.vpn_actions,
                s.passed,
                st.injected,
            );
            println!(
                "wrote {}/{{verdicts.jsonl,passed.pcap}}",
                args.out.display()
            );
            for f in &s.failed {
                eprintln!("warning: skipped {f}");
            }
            if s.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("blocklab replay: {}: {e}", args.out.display());
            ExitCode::from(2)
        }
    }
}
