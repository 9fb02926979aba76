//! `blocklab rules lint` and `blocklab rules stats`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::policy::Policy;
use crate::rules::{RuleSet, RulesError};

/// `blocklab rules ...`.
#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Validate rules files; print every problem as `path:line:column: message` (exit 1).
    Lint {
        /// Rules files or directories (default: ./rules if present, else the shipped rules).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Per jurisdiction: rule and entry counts, compiled size, compile time.
    Stats {
        /// Rules directory (default: the shipped rules).
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
    },
}

/// Runs a `rules` subcommand.
pub fn run(c: RulesCommand) -> ExitCode {
    match c {
        RulesCommand::Lint { paths } => lint(&paths),
        RulesCommand::Stats { rules } => stats(rules.as_deref()),
    }
}

fn load(paths: &[PathBuf]) -> Result<RuleSet, RulesError> {
    if paths.is_empty() {
        let dir = Path::new("rules");
        return if dir.is_dir() {
            RuleSet::load_dir(dir)
        } else {
            RuleSet::embedded()
        };
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                        .collect()
                })
                .unwrap_or_default();
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    RuleSet::load_files(&files)
}

fn lint(paths: &[PathBuf]) -> ExitCode {
    match load(paths) {
        Ok(set) => {
            let rules: usize = set.files.iter().map(|f| f.rules.len() + f.vpn.len()).sum();
            println!("ok: {} file(s), {rules} rule(s)", set.files.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for d in &e.diagnostics {
                println!("{d}");
            }
            eprintln!("{} problem(s)", e.len());
            ExitCode::from(1)
        }
    }
}

fn stats(dir: Option<&Path>) -> ExitCode {
    let t0 = Instant::now();
    let set = match dir {
        Some(d) => RuleSet::load_dir(d),
        None => RuleSet::embedded(),
    };
    let set = match set {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let parsed = t0.elapsed();
    let t1 = Instant::now();
    let policy = match Policy::compile(&set, &[]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let compiled = t1.elapsed();
    println!(
        "{:<6} {:>6} {:>4} {:>10} {:>10} {:>10} {:>10}",
        "code", "rules", "vpn", "entries", "names", "cidr-ivls", "memory"
    );
    let mut total = 0;
    for j in policy.stats().jurisdictions {
        total += j.heap_bytes;
        println!(
            "{:<6} {:>6} {:>4} {:>10} {:>10} {:>10} {:>8.1}MB",
            j.code,
            j.rules,
            j.vpn_rules,
            j.entries,
            j.names,
            j.cidr_intervals,
            j.heap_bytes as f64 / 1e6
        );
    }
    println!(
        "compiled policy: {:.1} MB; load+check {:.0} ms, compile {:.0} ms",
        total as f64 / 1e6,
        parsed.as_secs_f64() * 1e3,
        compiled.as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}
