//! Upstream name resolution shared by the frontends, and the answer type the DNS cache holds.
//!
//! [`Upstream`] wraps a `hickory-resolver` configured with the servers of the config's
//! `[dns] upstream` (each over UDP, falling back to TCP when an answer comes back truncated),
//! or with the system resolver (`/etc/resolv.conf`) when none are given. It offers address
//! lookups for the proxies ([`Upstream::lookup_ip`]). The DNS frontend does not go through
//! it: its cache misses take the lean forwarder (`dns::forward`) to the same servers, and
//! [`Answer`] is what that forwarder reads an upstream response into.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Record;
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

/// How long one upstream attempt may take before it is retried or given up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most one upstream question may take in all (attempts over UDP and TCP included): past
/// it the DNS frontend answers SERVFAIL, so a dead or slow upstream never piles queries up.
pub const QUERY_DEADLINE: Duration = Duration::from_millis(4500);

/// The upstream resolver of the gateway.
#[derive(Clone)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    resolver: TokioResolver,
    /// Static answers (the config's `[hosts]`), consulted by [`Upstream::lookup_ip`] before
    /// any server.
    overrides: HashMap<String, Vec<IpAddr>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// An upstream answer to one question, as the DNS forwarder relays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `NoError` (records, or none of this type) or `NXDomain` (the name does not exist).
    pub rcode: ResponseCode,
    /// The answer section: the CNAME chain, then the records of the asked type.
    pub records: Vec<Record>,
    /// The authority section of a negative answer (its SOA), if the upstream sent one.
    pub authority: Vec<Record>,
    /// How long the answer may be cached, in seconds.
    pub ttl: u32,
}

impl Upstream {
    /// A resolver using `servers`, or the system resolver if empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Upstream, String> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    // No system config (e.g. a container without resolv.conf): serve with no
                    // servers, so every lookup fails cleanly instead of going somewhere
                    // nobody configured.
                    tracing::warn!(error = %e, "cannot read the system resolver config; upstream lookups will fail");
                    TokioResolver::builder_with_config(ResolverConfig::new(), provider)
                }
            }
        } else {
            let mut config = ResolverConfig::new();
            for &addr in servers {
                // UDP first; the pool retries over TCP when a UDP answer is truncated.
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.preserve_intermediates = true;
        opts.edns0 = true;
        opts.check_names = false;
        opts.timeout = ATTEMPT_TIMEOUT;
        opts.attempts = 2;
        opts.num_concurrent_reqs = 1;
        if !servers.is_empty() {
            opts.ndots = 0;
        }
        Ok(Upstream {
            servers: servers.to_vec(),
            resolver: builder.build(),
            overrides: HashMap::new(),
        })
    }

    /// The same resolver, answering the names of `hosts` with their fixed addresses, like
    /// `/etc/hosts` (the config's `[hosts]` table). Names match case-insensitively.
    pub fn with_overrides<I: IntoIterator<Item = (String, Vec<IpAddr>)>>(
        mut self,
        hosts: I,
    ) -> Upstream {
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
            None => self
                .overrides
                .get(&host.to_ascii_lowercase())
                .map(Vec::as_slice),
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
        match tokio::time::timeout(QUERY_DEADLINE, self.resolver.lookup_ip(host)).await {
            Ok(Ok(l)) => Ok(l.iter().collect()),
            Ok(Err(e)) => Err(std::io::Error::other(format!("cannot resolve {host}: {e}"))),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("cannot resolve {host}: no answer within {QUERY_DEADLINE:?}"),
            )),
        }
    }
}
