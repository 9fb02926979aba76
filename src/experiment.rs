//! Offline detector experiments over pcap/pcapng files (not yet implemented: its issue builds it).

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
    eprintln!("blocklab experiment: not yet implemented (VPN detection experiments)");
    ExitCode::from(2)
}
