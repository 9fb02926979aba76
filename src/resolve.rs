//! Upstream name resolution shared by the frontends (the DNS forwarder and the proxies).
//!
//! [`Upstream`] wraps a `hickory-resolver` configured with the servers of the config's
//! `[dns] upstream` (each over UDP, falling back to TCP when an answer comes back truncated),
//! or with the system resolver (`/etc/resolv.conf`) when none are given. It offers address
//! lookups for the proxies ([`Upstream::lookup_ip`]) and record lookups of any type, with the
//! CNAME chain and TTLs, for the DNS forwarder ([`Upstream::query`]). It keeps no cache of its
//! own: the DNS frontend caches answers by TTL in front of it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_proto::ProtoErrorKind;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};

/// How long one upstream attempt may take before it is retried or given up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL given to a negative answer that carries no SOA.
const DEFAULT_NEGATIVE_TTL: u32 = 30;

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

/// Why the upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream failed (timeout, connection refused, SERVFAIL, ...).
    #[error("upstream failed: {0}")]
    Failed(#[from] ResolveError),
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
        match self.resolver.lookup_ip(host).await {
            Ok(l) => Ok(l.iter().collect()),
            Err(e) => Err(std::io::Error::other(format!("cannot resolve {host}: {e}"))),
        }
    }

    /// The upstream's answer for `name` (absolute) and `rtype`, CNAME chain included.
    pub async fn query(&self, name: &Name, rtype: RecordType) -> Result<Answer, UpstreamError> {
        let mut name = name.clone();
        name.set_fqdn(true);
        match self.resolver.lookup(name, rtype).await {
            Ok(lookup) => {
                let left = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                let min_record = lookup.records().iter().map(Record::ttl).min().unwrap_or(0);
                Ok(Answer {
                    rcode: ResponseCode::NoError,
                    records: lookup.records().to_vec(),
                    authority: Vec::new(),
                    ttl: min_record.min(u32::try_from(left.as_secs()).unwrap_or(u32::MAX)),
                })
            }
            Err(e) => negative(e),
        }
    }
}

/// A "no records" error as a negative answer (NXDOMAIN or NODATA); anything else is a failure.
fn negative(e: ResolveError) -> Result<Answer, UpstreamError> {
    let Some(proto) = e.proto() else {
        return Err(UpstreamError::Failed(e));
    };
    match proto.kind() {
        ProtoErrorKind::NoRecordsFound {
            soa,
            negative_ttl,
            response_code,
            ..
        } if matches!(
            *response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ) =>
        {
            let authority: Vec<Record> = soa
                .iter()
                .map(|s| s.as_ref().clone().into_record_of_rdata())
                .collect();
            Ok(Answer {
                rcode: *response_code,
                records: Vec::new(),
                authority,
                ttl: negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL),
            })
        }
        _ => Err(UpstreamError::Failed(e)),
    }
}
