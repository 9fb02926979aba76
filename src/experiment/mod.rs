//! Offline detector experiments over pcap/pcapng files (placeholder while being built).

use std::path::PathBuf;
use std::process::ExitCode;

/// `blocklab experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng).
    pub pcaps: Vec<PathBuf>,
}

/// Runs the experiment.
pub fn run(args: Args) -> ExitCode {
    let _ = args;
    ExitCode::from(2)
}
