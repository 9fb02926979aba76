//! Upstream name resolution shared by the frontends (the DNS forwarder and the proxies).
//!
//! `Upstream` resolves with the servers of the config's `[dns] upstream` (or the system
//! resolver when none are given), so a lab can point names at its own servers.

use std::net::{IpAddr, SocketAddr};

/// The upstream resolver of the gateway.
#[derive(Debug, Clone)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
}

impl Upstream {
    /// A resolver using `servers`, or the system resolver if empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Upstream, String> {
        Ok(Upstream {
            servers: servers.to_vec(),
        })
    }

    /// The configured servers (empty = system resolver).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The addresses of `host` (A and AAAA), or the literal address itself.
    pub async fn lookup_ip(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // Placeholder until the DNS issue lands: the system resolver only.
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}
