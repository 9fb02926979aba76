//! The `[[relay]]` frontends: UDP and TCP relays that forward flows to a fixed address and
//! run the VPN detectors on each new flow (docs/ARCHITECTURE.md, "VPN detection experiments", live).
//!
//! Each relay binds `listen`, logs its `listening listener=relay/udp|relay/tcp addr=...`
//! line, and forwards every flow to `forward`. Clients outside the configured `[[clients]]`
//! networks are refused (UDP datagrams dropped, TCP connections closed): a relay is never
//! open. Each flow gets an `enforce::inspect::Inspector`, which logs the detectors' verdict and, in
//! `enforce` mode, applies the client jurisdiction's `[[vpn]]` rules (the protocol blocking
//! Russia deployed against WireGuard from 2021 and OpenVPN/WireGuard from 2023-08-07, per
//! net4people/bbs#76 and #274).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::RelaySection;
use crate::detect::{self, endpoints::Endpoints, Detector};
use crate::gateway::{Gateway, StartError};
use crate::rules::Diagnostic;

pub mod tcp;
pub mod udp;

/// How long a UDP flow lives without packets.
pub const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// The detectors a relay runs, from its `detectors` and `endpoints` keys.
pub fn detectors_for(
    gw: &Gateway,
    r: &RelaySection,
) -> Result<Arc<[Box<dyn Detector>]>, StartError> {
    let endpoints = match &r.endpoints {
        Some(p) => {
            let base = gw
                .config
                .path
                .as_deref()
                .and_then(std::path::Path::parent)
                .map(PathBuf::from)
                .unwrap_or_default();
            let path = base.join(p);
            let shown = path.display().to_string();
            let bad =
                |e: String| StartError::Other(format!("[[relay]] {}: endpoints: {e}", r.listen));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                bad(Diagnostic::file(&shown, format!("cannot read: {e}")).to_string())
            })?;
            Endpoints::parse(&shown, &text).map_err(|e| bad(e.to_string()))?
        }
        None => Endpoints::default(),
    };
    let ds = match &r.detectors {
        Some(names) => detect::select(names, endpoints)
            .map_err(|e| StartError::Other(format!("[[relay]] {}: {e}", r.listen)))?,
        None => detect::standard(endpoints),
    };
    Ok(ds.into())
}

/// Binds the `[[relay]]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    for r in &gw.config.relay {
        let detectors = detectors_for(gw, r)?;
        let task = match r.protocol {
            crate::config::RelayProtocol::Udp => {
                udp::start(Arc::clone(gw), r.clone(), detectors).await?
            }
            crate::config::RelayProtocol::Tcp => {
                tcp::start(Arc::clone(gw), r.clone(), detectors).await?
            }
        };
        tasks.push(task);
    }
    Ok(tasks)
}
