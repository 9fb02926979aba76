//! Upstream name resolution shared by the frontends (the DNS forwarder and the proxies).
//!
//! `Upstream` resolves with the servers of the config's `[dns] upstream` (or the system
//! resolver when none are given), so a lab can point names at its own servers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The upstream resolver of the gateway.
#[derive(Debug, Clone)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    /// Static answers (the config's `[hosts]`), consulted before any server.
    overrides: HashMap<String, Vec<IpAddr>>,
}

impl Upstream {
    /// A resolver using `servers`, or the system resolver if empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Upstream, String> {
        Ok(Upstream {
            servers: servers.to_vec(),
            overrides: HashMap::new(),
        })
    }

    /// The same resolver, answering the names of `hosts` with their fixed addresses, like
    /// `/etc/hosts` (the config's `[hosts]` table). Names match case-insensitively.
    pub fn with_overrides<I: IntoIterator<Item = (String, Vec<IpAddr>)>>(mut self, hosts: I) -> Upstream {
        for (name, ips) in hosts {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.overrides.insert(name, ips);
        }
        self
    }

    /// The fixed addresses of `host` from the overrides, if any.
    pub fn override_for(&self, host: &str) -> Option<&[IpAddr]> {
        if self.overrides.is_empty() {
            return None;
        }
        let host = host.trim_end_matches('.');
        match self.overrides.get(host) {
            Some(v) => Some(v),
            None => self.overrides.get(&host.to_ascii_lowercase()).map(Vec::as_slice),
        }
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
        if let Some(ips) = self.override_for(host) {
            return Ok(ips.to_vec());
        }
        // Placeholder until the DNS issue lands: the system resolver only.
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}
