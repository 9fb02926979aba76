//! The `tls` frontend: the transparent listener and QUIC relay for traffic the lab router
//! redirects to the gateway. The parsers live in `crate::sniff`, what a flow gets in
//! `crate::enforce`.
//!
//! - [`transparent`]: the `[tls]` listener for traffic redirected by the lab router.
//! - [`intercept`]: optional TLS interception with a lab CA (off by default).
//! - [`quic_relay`]: the UDP relay enacting `quic-drop` on QUIC v1 Initials.

pub mod intercept;
pub mod quic_relay;
pub mod transparent;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::gateway::{Gateway, StartError};

/// Binds the `[tls]` listeners (TCP, and UDP for `quic_listen`) and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = transparent::start(gw).await?;
    tasks.extend(quic_relay::start(gw).await?);
    Ok(tasks)
}
