//! The resolve-and-check pipeline, written once for every TCP frontend: the name's verdict,
//! then the `ip-*` techniques of a rule matching the name, then the name's address (resolved
//! with the gateway's resolver unless the frontend already knows it, e.g. from
//! `SO_ORIGINAL_DST`), then that address's verdict, combined with [`Verdict::and`]. An allow
//! rule matching the name or the address spares the address's blocks (the 2025 allowlists).
//! Every decision is made on the flow's connection ([`FlowCtx::conn`]: port, ECH, JA4, the
//! client group's ISP) at the group's simulated moment. The frontend records the result
//! ([`FlowCtx::record`]) and enacts it.
//!
//! A name already blocked by its own verdict, or whose addresses are blocked by name, is not
//! resolved: the censor needs no DNS answer to block it.

use std::net::IpAddr;

use super::flow::FlowCtx;
use super::verdict::{self, Verdict};

/// What the pipeline found for one connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The combined verdict (the stricter of the name's and the address's).
    pub verdict: Verdict,
    /// The destination address: the known one, or the name's first address (IPv4 first).
    pub addr: Option<IpAddr>,
    /// Why the name could not be resolved (the resolver's error), if it was tried and failed.
    pub unresolved: Option<String>,
}

impl FlowCtx {
    /// Runs the pipeline for a connection to `name` (empty: no name was seen) whose own
    /// verdict is `first`; `known` is the destination address when the frontend has it.
    pub async fn route(&self, first: Verdict, name: &str, known: Option<IpAddr>) -> Route {
        let mut route = Route {
            verdict: first,
            addr: known,
            unresolved: None,
        };
        if !first.passes() {
            return route;
        }
        let (at, conn) = (self.at, self.conn());
        if !name.is_empty() {
            route.verdict =
                verdict::with_name_ips(&self.policy, self.j, route.verdict, name, &conn, at);
            if !route.verdict.passes() {
                return route;
            }
            if known.is_none() {
                match self.gw.upstream.lookup_ip(name).await {
                    Ok(addrs) => {
                        route.addr = addrs
                            .iter()
                            .find(|a| a.is_ipv4())
                            .or(addrs.first())
                            .copied();
                        if route.addr.is_none() {
                            route.unresolved = Some("no addresses".to_string());
                        }
                    }
                    Err(e) => route.unresolved = Some(e.to_string()),
                }
            }
        }
        if let Some(ip) = route.addr {
            route.verdict =
                verdict::with_dest(&self.policy, self.j, route.verdict, name, ip, &conn, at);
        }
        route
    }
}
