//! What the TCP-facing frontends do with a connection, from the policy's decisions. Pure: the
//! frontends record a verdict through the gateway (`FlowCtx::record`).
//!
//! A frontend enacts only the techniques of its layers: a name blocked only with
//! `dns-nxdomain` passes the proxy, and an address matched only by a `quic-drop` rule (the
//! shipped `ru-quic-v1` covers every address) passes TCP untouched. [`Verdict`] is the
//! action; [`for_name`], [`for_http`] and [`for_ip`] compute it from one decision each, on
//! what the frontend knows of the connection ([`Conn`]: port, ECH, JA4, ISP, destination), so
//! rules with conditions apply only where they hold. `freeze` is a verdict that passes: the
//! flow starts and stops after `freeze_after_bytes` server->client bytes.

use std::net::IpAddr;

use crate::policy::{At, Block, Conn, Decision, JurisdictionId, Policy, RuleId, Target};
use crate::rules::Technique;

/// What to do with a connection (or request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Pass,
    /// Let it through at `kbps` in each direction.
    Throttle {
        /// Rate limit in kbit/s.
        kbps: u32,
        /// The rule.
        rule: RuleId,
    },
    /// Let it through until the server has sent `after_bytes`, then hold it silently.
    Freeze {
        /// Server->client bytes before the flow stops.
        after_bytes: u32,
        /// The rule.
        rule: RuleId,
    },
    /// Answer plain HTTP with the blockpage (302 or local 451).
    Blockpage {
        /// The rule.
        rule: RuleId,
    },
    /// Reset the connection (TCP RST).
    Reset {
        /// The rule.
        rule: RuleId,
        /// The technique enacted (`tls-reset` or `ip-reset`).
        technique: Technique,
    },
    /// Swallow the connection: read and discard until the client gives up.
    Drop {
        /// The rule.
        rule: RuleId,
        /// The technique enacted (`tls-drop` or `ip-drop`).
        technique: Technique,
    },
}

impl Verdict {
    /// Whether the connection goes on (possibly throttled, or until it freezes).
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Verdict::Pass | Verdict::Throttle { .. } | Verdict::Freeze { .. }
        )
    }

    /// The throttle rate, if throttled.
    pub fn kbps(&self) -> Option<u32> {
        match *self {
            Verdict::Throttle { kbps, .. } => Some(kbps),
            _ => None,
        }
    }

    /// The server->client bytes before the flow freezes, if it does.
    pub fn freeze_after(&self) -> Option<u32> {
        match *self {
            Verdict::Freeze { after_bytes, .. } => Some(after_bytes),
            _ => None,
        }
    }

    /// The rule behind a non-pass verdict.
    pub fn rule(&self) -> Option<RuleId> {
        match *self {
            Verdict::Pass => None,
            Verdict::Throttle { rule, .. }
            | Verdict::Freeze { rule, .. }
            | Verdict::Blockpage { rule } => Some(rule),
            Verdict::Reset { rule, .. } | Verdict::Drop { rule, .. } => Some(rule),
        }
    }

    /// The technique name, for logs (`pass` when passing).
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Throttle { .. } => "throttle",
            Verdict::Freeze { .. } => "freeze",
            Verdict::Blockpage { .. } => "http-blockpage",
            Verdict::Reset { technique, .. } | Verdict::Drop { technique, .. } => {
                technique.as_str()
            }
        }
    }

    /// The technique enacted, `None` for a pass (a throttle counts as enacted).
    pub fn technique(&self) -> Option<Technique> {
        match *self {
            Verdict::Pass => None,
            Verdict::Throttle { .. } => Some(Technique::Throttle),
            Verdict::Freeze { .. } => Some(Technique::Freeze),
            Verdict::Blockpage { .. } => Some(Technique::HttpBlockpage),
            Verdict::Reset { technique, .. } | Verdict::Drop { technique, .. } => Some(technique),
        }
    }

    /// The policy decision this verdict enacts, for metrics and the decision log.
    pub fn decision(&self, policy: &Policy, j: JurisdictionId) -> Decision {
        match self.rule() {
            Some(rule) => Decision::Block(Block {
                jurisdiction: j,
                rule,
                techniques: policy.rule(rule).techniques,
            }),
            None => Decision::Allow {
                jurisdiction: j,
                rule: None,
            },
        }
    }

    /// The stricter of two verdicts (a block beats a freeze beats a throttle beats a pass).
    pub fn and(self, other: Verdict) -> Verdict {
        fn rank(v: &Verdict) -> u8 {
            match v {
                Verdict::Pass => 0,
                Verdict::Throttle { .. } => 1,
                Verdict::Freeze { .. } => 2,
                _ => 3,
            }
        }
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

/// Precedence among the techniques a TCP frontend can enact.
const ORDER: [Technique; 7] = [
    Technique::HttpBlockpage,
    Technique::TlsReset,
    Technique::IpReset,
    Technique::TlsDrop,
    Technique::IpDrop,
    Technique::Freeze,
    Technique::Throttle,
];

/// The verdict for decision `d`, enacting only the techniques in `allowed`.
fn pick(policy: &Policy, d: Decision, allowed: &[Technique]) -> Verdict {
    let Decision::Block(b) = d else {
        return Verdict::Pass;
    };
    let rule = b.rule;
    for technique in ORDER {
        if !b.techniques.contains(technique) || !allowed.contains(&technique) {
            continue;
        }
        match technique {
            Technique::HttpBlockpage => return Verdict::Blockpage { rule },
            Technique::TlsReset | Technique::IpReset => return Verdict::Reset { rule, technique },
            Technique::TlsDrop | Technique::IpDrop => return Verdict::Drop { rule, technique },
            Technique::Freeze => {
                if let Some(after_bytes) = policy.rule(rule).freeze_after_bytes {
                    return Verdict::Freeze { after_bytes, rule };
                }
            }
            _ => {
                if let Some(kbps) = policy.rule(rule).throttle_kbps {
                    return Verdict::Throttle { kbps, rule };
                }
            }
        }
    }
    Verdict::Pass
}

/// The techniques a TLS connection gets for its name (ClientHello or CONNECT target).
pub const TLS: &[Technique] = &[
    Technique::TlsReset,
    Technique::TlsDrop,
    Technique::Freeze,
    Technique::Throttle,
];

/// The techniques a plain HTTP request gets: blockpage, or the TLS-layer techniques (a
/// censor that resets on a blocked Host), or a freeze or throttle.
pub const HTTP: &[Technique] = &[
    Technique::HttpBlockpage,
    Technique::TlsReset,
    Technique::TlsDrop,
    Technique::Freeze,
    Technique::Throttle,
];

/// The techniques a connection to an address gets.
pub const IP: &[Technique] = &[
    Technique::IpReset,
    Technique::IpDrop,
    Technique::Freeze,
    Technique::Throttle,
];

/// The techniques a rule matching a *name* applies to connections to that name's addresses
/// (e.g. a registry entry blocked "by DNS, HTTP and IP").
pub const NAME_IPS: &[Technique] = &[Technique::IpReset, Technique::IpDrop];

/// The verdict for `target` on `conn`, enacting only the techniques in `allowed` (one of
/// [`TLS`], [`HTTP`], [`IP`], [`NAME_IPS`]).
pub fn for_target(
    policy: &Policy,
    j: JurisdictionId,
    target: Target<'_>,
    conn: &Conn<'_>,
    at: At,
    allowed: &[Technique],
) -> Verdict {
    pick(policy, policy.decide_conn_in(j, target, conn, at), allowed)
}

/// A TLS connection whose ClientHello (or CONNECT target) names `name`.
pub fn for_name(
    policy: &Policy,
    j: JurisdictionId,
    name: &str,
    conn: &Conn<'_>,
    at: At,
) -> Verdict {
    for_target(policy, j, Target::Domain(name), conn, at, TLS)
}

/// A plain HTTP request for `host` and `path` (see [`HTTP`]).
pub fn for_http(
    policy: &Policy,
    j: JurisdictionId,
    host: &str,
    path: &str,
    conn: &Conn<'_>,
    at: At,
) -> Verdict {
    for_target(policy, j, Target::Url { host, path }, conn, at, HTTP)
}

/// A connection to `ip`: only `ip-reset`, `ip-drop`, `freeze` and `throttle` apply.
pub fn for_ip(policy: &Policy, j: JurisdictionId, ip: IpAddr, conn: &Conn<'_>, at: At) -> Verdict {
    for_target(policy, j, Target::Ip(ip), conn, at, IP)
}

/// The techniques an address rule applies once the connection's ClientHello (TLS or DTLS)
/// is seen: [`IP`]'s and the TLS layer's (a hello to a listed address, or with a listed JA4
/// and no name at all, as WebRTC's DTLS has, is reset or dropped there).
pub const IP_AT_HELLO: &[Technique] = &[
    Technique::IpReset,
    Technique::IpDrop,
    Technique::TlsReset,
    Technique::TlsDrop,
    Technique::Freeze,
    Technique::Throttle,
];

/// A connection to `ip` for the name `name` (empty: none seen): an allow rule matching the
/// name or the address lets it through (the 2025 allowlists), else as [`for_ip`].
pub fn for_dest(
    policy: &Policy,
    j: JurisdictionId,
    name: &str,
    ip: IpAddr,
    conn: &Conn<'_>,
    at: At,
) -> Verdict {
    for_dest_with(policy, j, name, ip, conn, at, IP)
}

/// [`for_dest`] with the address rule's techniques `by_ip`.
fn for_dest_with(
    policy: &Policy,
    j: JurisdictionId,
    name: &str,
    ip: IpAddr,
    conn: &Conn<'_>,
    at: At,
    by_ip: &[Technique],
) -> Verdict {
    if !name.is_empty() {
        let with_dst = Conn {
            dst: Some(ip),
            ..*conn
        };
        if let Decision::Allow { rule: Some(_), .. } =
            policy.decide_conn_in(j, Target::Domain(name), &with_dst, at)
        {
            return Verdict::Pass;
        }
    }
    for_target(policy, j, Target::Ip(ip), conn, at, by_ip)
}

/// `first`, then (when it passes and a name was seen) the `ip-*` techniques of a rule
/// matching `name`: the step of the pipeline before the name is resolved.
pub fn with_name_ips(
    policy: &Policy,
    j: JurisdictionId,
    first: Verdict,
    name: &str,
    conn: &Conn<'_>,
    at: At,
) -> Verdict {
    if !first.passes() || name.is_empty() {
        return first;
    }
    first.and(for_target(
        policy,
        j,
        Target::Domain(name),
        conn,
        at,
        NAME_IPS,
    ))
}

/// `v`, then (when it passes) the verdict of the destination `ip` for `name` ([`for_dest`]):
/// the step of the pipeline once the address is known.
pub fn with_dest(
    policy: &Policy,
    j: JurisdictionId,
    v: Verdict,
    name: &str,
    ip: IpAddr,
    conn: &Conn<'_>,
    at: At,
) -> Verdict {
    with_dest_using(policy, j, v, name, ip, conn, at, IP)
}

/// [`with_dest`] with the address rule's techniques `by_ip` ([`IP_AT_HELLO`] once a
/// ClientHello is seen).
#[allow(clippy::too_many_arguments)]
pub fn with_dest_using(
    policy: &Policy,
    j: JurisdictionId,
    v: Verdict,
    name: &str,
    ip: IpAddr,
    conn: &Conn<'_>,
    at: At,
    by_ip: &[Technique],
) -> Verdict {
    if !v.passes() {
        return v;
    }
    v.and(for_dest_with(policy, j, name, ip, conn, at, by_ip))
}

/// The `quic-drop` rule for a QUIC flow to `ip` whose Initials name `sni` (if read), by name
/// or by address, over connection `conn` (UDP port, the ClientHello's ECH and JA4, ISP).
pub fn for_quic(
    policy: &Policy,
    j: JurisdictionId,
    sni: Option<&str>,
    ip: IpAddr,
    conn: &Conn<'_>,
    at: At,
) -> Option<RuleId> {
    let by_name = sni.map(|n| policy.decide_conn_in(j, Target::Domain(n), conn, at));
    let by_ip = policy.decide_conn_in(j, Target::Ip(ip), conn, at);
    [by_name, Some(by_ip)]
        .into_iter()
        .flatten()
        .find(|d| d.techniques().contains(Technique::QuicDrop))
        .and_then(|d| d.rule())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ClientNet;
    use crate::rules::RuleSet;

    fn ru() -> (Policy, JurisdictionId) {
        let rules = RuleSet::embedded().unwrap();
        let p = Policy::compile(
            &rules,
            &[ClientNet {
                net: "127.0.0.0/8".parse().unwrap(),
                jurisdiction: "ru".into(),
            }],
        )
        .unwrap();
        let j = p.jurisdiction_by_code("ru").unwrap();
        (p, j)
    }

    const N: Conn<'static> = Conn::NONE;

    fn day(s: &str) -> At {
        At::Day(s.parse().unwrap())
    }

    #[test]
    fn shipped_ru_rules() {
        let (p, j) = ru();
        let at = day("2022-03-10");
        assert_eq!(
            for_name(&p, j, "www.facebook.com", &N, at).name(),
            "tls-reset"
        );
        assert_eq!(
            for_http(&p, j, "facebook.com", "/", &N, at).name(),
            "http-blockpage"
        );
        assert_eq!(
            for_name(&p, j, "facebook.com", &N, day("2022-01-01")),
            Verdict::Pass
        );
        // ru-quic-v1 covers every address with quic-drop only: TCP passes
        assert_eq!(
            for_ip(&p, j, "192.0.2.1".parse().unwrap(), &N, at),
            Verdict::Pass
        );
        let t = for_name(&p, j, "microsoft.com", &N, day("2021-04-01"));
        assert!(matches!(t, Verdict::Throttle { kbps: 140, .. }), "{t:?}");
        // linkedin: dns-blockpage, http-blockpage, ip-drop
        assert_eq!(for_name(&p, j, "linkedin.com", &N, at), Verdict::Pass);
        assert_eq!(
            for_target(&p, j, Target::Domain("linkedin.com"), &N, at, NAME_IPS).name(),
            "ip-drop"
        );
        assert_eq!(
            for_http(&p, j, "linkedin.com", "/", &N, at).name(),
            "http-blockpage"
        );
    }

    #[test]
    fn stricter_wins() {
        let r = RuleId(0);
        let t = Verdict::Throttle { kbps: 1, rule: r };
        let d = Verdict::Drop {
            rule: r,
            technique: Technique::IpDrop,
        };
        assert_eq!(Verdict::Pass.and(t), t);
        assert_eq!(t.and(d), d);
        assert_eq!(d.and(t), d);
        assert!(t.passes() && !d.passes());
    }
}
