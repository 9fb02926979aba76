//! The `tls` frontend and the TCP/TLS layer shared with the forward proxy's tunnels.
//!
//! - [`client_hello`]: the pure ClientHello SNI parser; [`http_head`]: the plain-HTTP Host sniffer.
//! - [`verdict`]: which technique a TCP frontend enacts for a decision.
//! - [`flow`]: sniffing first bytes, reset (RST), swallow, splice; [`throttle`]: the token bucket.
//! - [`transparent`]: the `[tls]` listener for traffic redirected by the lab router.

pub mod client_hello;
pub mod flow;
pub mod http_head;
pub mod throttle;
pub mod transparent;
pub mod verdict;

#[cfg(test)]
pub(crate) mod testdata;

pub use transparent::start;
