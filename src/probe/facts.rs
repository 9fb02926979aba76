//! What one side of a measurement (the network under test, or the control) observed, as plain
//! data: the input of the pure classification in [`super::classify`] and of the report.
//!
//! Failures are OONI failure strings (`df-007-errors`: `connection_reset`,
//! `generic_timeout_error`, `dns_nxdomain_error`, ...), produced by [`super::failure`].

use std::net::{IpAddr, SocketAddr};

/// One DNS query (A or AAAA) as sent to a resolver.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsQuery {
    /// `A` or `AAAA`.
    pub query_type: &'static str,
    /// OONI failure string, `None` on success.
    pub failure: Option<String>,
    /// Addresses answered, with their TTLs.
    pub answers: Vec<(IpAddr, u32)>,
    /// CNAME targets in the answer.
    pub cnames: Vec<String>,
    /// Seconds since the measurement started, at completion.
    pub t: f64,
}

/// The DNS lookup of the URL's host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsFacts {
    /// The resolver asked (`None` when the host is an IP address).
    pub resolver: Option<SocketAddr>,
    /// Overall failure (`None` when at least one address came back).
    pub failure: Option<String>,
    /// Every address answered (A then AAAA).
    pub addrs: Vec<IpAddr>,
    /// Every CNAME target answered.
    pub cnames: Vec<String>,
    /// The individual queries.
    pub queries: Vec<DnsQuery>,
}

/// A TCP connect to one endpoint (through the proxy when one is used).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectFacts {
    /// The endpoint.
    pub addr: SocketAddr,
    /// OONI failure string, `None` on success.
    pub failure: Option<String>,
    /// Seconds since the measurement started, at completion.
    pub t: f64,
}

/// A TLS handshake on an established connection.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFacts {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The SNI sent.
    pub server_name: String,
    /// OONI failure string, `None` on success.
    pub failure: Option<String>,
    /// Negotiated version, e.g. `TLSv1.3`.
    pub tls_version: Option<String>,
    /// Seconds since the measurement started, at completion.
    pub t: f64,
}

/// The HTTP GET of the URL (the web step).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpFacts {
    /// OONI failure string, `None` when a response was read.
    pub failure: Option<String>,
    /// Status code, when a response head arrived.
    pub status: Option<u16>,
    /// Response headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes read (up to the body limit).
    pub body: Vec<u8>,
    /// Whether the body was cut by the size or time limit.
    pub body_is_truncated: bool,
    /// The page title, OONI's way (`<title>...</title>`, empty if none).
    pub title: String,
    /// Body bytes downloaded and the seconds it took (for rate measurement).
    pub download: Option<(u64, f64)>,
    /// Seconds since the measurement started, at completion.
    pub t: f64,
}

impl HttpFacts {
    /// Download rate in kbit/s, when something was downloaded over a measurable time.
    pub fn rate_kbps(&self) -> Option<f64> {
        let (bytes, secs) = self.download?;
        (secs > 0.0 && bytes > 0).then(|| bytes as f64 * 8.0 / 1000.0 / secs)
    }
}

/// Everything one side observed for one URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideFacts {
    /// The DNS lookup.
    pub dns: DnsFacts,
    /// TCP connects to every resolved address.
    pub connects: Vec<ConnectFacts>,
    /// TLS handshakes (https URLs only).
    pub tls: Vec<TlsFacts>,
    /// The GET; `None` when no request could be attempted.
    pub http: Option<HttpFacts>,
    /// Resolved addresses not contacted because `--allow-net` excludes them.
    pub skipped: Vec<IpAddr>,
}
