//! The in-path packet censor: one engine for live traffic (a TUN device on the path) and for
//! pcap replay (`blocklab replay`).
//!
//! [`packet`] holds checked zero-copy packet views and crafting, [`flow`] the bounded flow
//! table, [`reassembly`] TCP stream and IP fragment reassembly, [`engine`] the pure
//! packet-in, verdict-out core. [`tun`] is the thin live I/O (started by `serve` from the
//! `[inpath]` section, and by `blocklab lab` in a namespace), [`replay`] the offline driver.

pub mod engine;
pub mod flow;
pub mod packet;
pub mod reassembly;
pub mod replay;
pub mod tun;

#[cfg(test)]
pub(crate) mod testdata;

pub use engine::{Engine, EngineConfig, Extras, Fate, FlowEvent, Moments, Output, Stats, VpnMode};

/// The sniffers and the decision helpers the engine uses, in one place.
pub(crate) mod deps {
    pub(crate) use crate::enforce::blockpage;
    pub(crate) use crate::enforce::conn::{Hello, Known};
    pub(crate) use crate::enforce::verdict::{self, Verdict};
    pub(crate) use crate::sniff::{client_hello, http_head, quic};
}
