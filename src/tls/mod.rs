//! The `tls` frontend and the TCP/TLS layer shared with the forward proxy's tunnels.
//!
//! - [`client_hello`]: the pure ClientHello SNI parser; [`http_head`]: the plain-HTTP Host sniffer.
//! - [`verdict`]: which technique a TCP frontend enacts for a decision.
//! - [`flow`]: sniffing first bytes, reset (RST), swallow, splice; [`throttle`]: the token bucket.
//! - [`transparent`]: the `[tls]` listener for traffic redirected by the lab router.
//! - [`intercept`]: optional TLS interception with a lab CA (off by default).
//! - [`quic`]: QUIC v1 Initial decryption (RFC 9001) and SNI; [`quic_relay`]: the UDP relay
//!   enacting `quic-drop`.

pub mod client_hello;
pub mod flow;
pub mod http_head;
pub mod intercept;
pub mod quic;
pub mod quic_relay;
pub mod throttle;
pub mod transparent;
pub mod verdict;

#[cfg(test)]
pub(crate) mod testdata;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::gateway::{Gateway, StartError};

/// Binds the `[tls]` listeners (TCP, and UDP for `quic_listen`) and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = transparent::start(gw).await?;
    tasks.extend(quic_relay::start(gw).await?);
    Ok(tasks)
}
