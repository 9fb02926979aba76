//! One side of a measurement (the network under test, or the control): DNS lookup through its
//! resolver, the connectivity step to every address, and the web step, producing
//! [`SideFacts`]. The control is the same code with the control resolver and no proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rustls::ClientConfig;
use url::{Host, Url};

use super::dns;
use super::facts::{DnsFacts, DnsQuery, HttpFacts, SideFacts};
use super::http::{self, Limits};
use super::net;

/// How one side reaches the network.
#[derive(Debug, Clone)]
pub struct Side {
    /// The resolver asked for the URL's host.
    pub resolver: SocketAddr,
    /// The HTTP proxy every connection goes through, if any.
    pub proxy: Option<SocketAddr>,
}

/// Settings shared by both sides.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timeout of each step (DNS, connect, TLS, response head).
    pub timeout: Duration,
    /// Body download limits.
    pub limits: Limits,
    /// TLS client configuration.
    pub tls: Arc<ClientConfig>,
    /// Addresses the probe may contact (empty = any).
    pub allow: Vec<IpNet>,
}

impl Settings {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// The port of a URL (explicit, or the scheme's).
pub fn port(url: &Url) -> u16 {
    url.port_or_known_default().unwrap_or(80)
}

/// Measures `url` from one side.
pub async fn side(url: &Url, side: &Side, s: &Settings, start: Instant) -> SideFacts {
    let https = url.scheme() == "https";
    let host = url
        .host_str()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let dns = match url.host() {
        Some(Host::Ipv4(a)) => literal(IpAddr::V4(a)),
        Some(Host::Ipv6(a)) => literal(IpAddr::V6(a)),
        _ => dns::lookup(side.resolver, &host, s.timeout, start).await,
    };
    let mut facts = SideFacts {
        dns,
        ..SideFacts::default()
    };
    if let Some(f) = &facts.dns.failure {
        // The GET would have failed resolving the name, as OONI's does.
        facts.http = Some(HttpFacts {
            failure: Some(f.clone()),
            t: start.elapsed().as_secs_f64(),
            ..HttpFacts::default()
        });
        return facts;
    }
    let port = port(url);
    let mut targets = Vec::new();
    for ip in facts.dns.addrs.clone() {
        if s.allowed(ip) {
            targets.push(SocketAddr::new(ip, port));
        } else {
            facts.skipped.push(ip);
        }
    }
    if targets.is_empty() {
        return facts;
    }
    // Connectivity step, every endpoint in parallel.
    let sni = https.then(|| host.clone());
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let fut = net::endpoint(*t, side.proxy, sni.clone(), s.tls.clone(), s.timeout, start);
        set.spawn(async move { (i, fut.await) });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut streams = Vec::new();
    let mut first_failure: Option<String> = None;
    for (_, (c, t, stream)) in results {
        if first_failure.is_none() {
            first_failure = t
                .as_ref()
                .and_then(|t| t.failure.clone())
                .or_else(|| c.failure.clone());
        }
        facts.connects.push(c);
        if let Some(t) = t {
            facts.tls.push(t);
        }
        if let Some(st) = stream {
            streams.push(st);
        }
    }
    // Web step.
    facts.http = Some(if !https && side.proxy.is_some() {
        // Plain HTTP through a forward proxy: an absolute-form request on a new connection.
        // (a plain connection to the proxy itself, not a tunnel)
        match side.proxy {
            Some(proxy) => match net::connect(proxy, None, s.timeout).await {
                Ok(tcp) => http::get(Box::new(tcp), url, true, s.limits, start).await,
                Err(f) => web_failure(f, start),
            },
            None => web_failure("unknown_failure: no proxy".into(), start),
        }
    } else if let Some(stream) = streams.into_iter().next() {
        http::get(stream, url, false, s.limits, start).await
    } else {
        web_failure(
            first_failure.unwrap_or_else(|| "unknown_failure: no endpoint".into()),
            start,
        )
    });
    facts
}

fn web_failure(f: String, start: Instant) -> HttpFacts {
    HttpFacts {
        failure: Some(f),
        t: start.elapsed().as_secs_f64(),
        ..HttpFacts::default()
    }
}

fn literal(ip: IpAddr) -> DnsFacts {
    dns::combine(
        None,
        vec![DnsQuery {
            query_type: if ip.is_ipv4() { "A" } else { "AAAA" },
            failure: None,
            answers: vec![(ip, 0)],
            cnames: Vec::new(),
            t: 0.0,
        }],
    )
}
