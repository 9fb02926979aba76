//! The blocking techniques a rule can name, and a compact, copyable set of them.
//!
//! A technique is *how* a censor blocks (README, "Techniques"); each belongs to the layer
//! whose frontend enacts it, so a DNS frontend resolves normally a name blocked only by
//! `tls-reset`, exactly as the real censor did.

use std::fmt;
use std::str::FromStr;

/// One blocking technique, as named in rules files. Its discriminant (declaration order, from
/// 0) is its bit in a [`Techniques`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Technique {
    /// DNS answer with rcode NXDOMAIN.
    DnsNxdomain,
    /// DNS answer with rcode REFUSED.
    DnsRefused,
    /// DNS answer with rcode SERVFAIL.
    DnsServfail,
    /// DNS A/AAAA answers pointing at the jurisdiction's blockpage address.
    DnsBlockpage,
    /// No DNS answer at all (the client times out).
    DnsDrop,
    /// Plain HTTP: a 302 to the jurisdiction's blockpage URL or a local 451 page.
    HttpBlockpage,
    /// TCP RST right after the ClientHello (or HTTP request) naming a blocked host.
    TlsReset,
    /// ClientHello swallowed; the connection hangs.
    TlsDrop,
    /// Connections to the blocked address are silently dropped.
    IpDrop,
    /// Connections to the blocked address are reset.
    IpReset,
    /// The flow passes, limited to the rule's `throttle_kbps` in both directions.
    Throttle,
    /// QUIC v1 Initials to the blocked name are dropped.
    QuicDrop,
    /// After the rule's `freeze_after_bytes` server->client bytes the flow silently stops
    /// both ways (no RST): Russia's 2025 "16 KB" behaviour.
    Freeze,
}

/// The layer of the network at which a technique is enacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The DNS frontend.
    Dns,
    /// Plain HTTP (forward proxy or transparent listener).
    Http,
    /// TCP/TLS connections (CONNECT tunnels, transparent TLS).
    Tls,
    /// Any connection to an address (TCP or UDP).
    Ip,
    /// Throttling or freezing of a passing flow.
    Flow,
    /// UDP/443 QUIC.
    Quic,
}

impl Technique {
    /// Every technique, in bit order.
    pub const ALL: [Technique; 13] = [
        Technique::DnsNxdomain,
        Technique::DnsRefused,
        Technique::DnsServfail,
        Technique::DnsBlockpage,
        Technique::DnsDrop,
        Technique::HttpBlockpage,
        Technique::TlsReset,
        Technique::TlsDrop,
        Technique::IpDrop,
        Technique::IpReset,
        Technique::Throttle,
        Technique::QuicDrop,
        Technique::Freeze,
    ];

    /// The name used in rules files and output (`dns-nxdomain`, `tls-reset`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Technique::DnsNxdomain => "dns-nxdomain",
            Technique::DnsRefused => "dns-refused",
            Technique::DnsServfail => "dns-servfail",
            Technique::DnsBlockpage => "dns-blockpage",
            Technique::DnsDrop => "dns-drop",
            Technique::HttpBlockpage => "http-blockpage",
            Technique::TlsReset => "tls-reset",
            Technique::TlsDrop => "tls-drop",
            Technique::IpDrop => "ip-drop",
            Technique::IpReset => "ip-reset",
            Technique::Throttle => "throttle",
            Technique::QuicDrop => "quic-drop",
            Technique::Freeze => "freeze",
        }
    }

    /// The layer whose frontend enacts this technique.
    pub const fn layer(self) -> Layer {
        match self {
            Technique::DnsNxdomain
            | Technique::DnsRefused
            | Technique::DnsServfail
            | Technique::DnsBlockpage
            | Technique::DnsDrop => Layer::Dns,
            Technique::HttpBlockpage => Layer::Http,
            Technique::TlsReset | Technique::TlsDrop => Layer::Tls,
            Technique::IpDrop | Technique::IpReset => Layer::Ip,
            Technique::Throttle | Technique::Freeze => Layer::Flow,
            Technique::QuicDrop => Layer::Quic,
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Technique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a technique name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown technique `{0}` (known: {known})", known = known_names())]
pub struct UnknownTechnique(pub String);

fn known_names() -> String {
    Technique::ALL.map(Technique::as_str).join(", ")
}

impl FromStr for Technique {
    type Err = UnknownTechnique;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Technique::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTechnique(s.to_string()))
    }
}

/// A set of techniques, as a 16-bit mask: `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Techniques(u16);

impl Techniques {
    /// The empty set.
    pub const EMPTY: Techniques = Techniques(0);

    /// The set without `t`.
    pub const fn without(self, t: Technique) -> Techniques {
        Techniques(self.0 & !t.bit())
    }

    /// The set with `t`.
    pub const fn with(self, t: Technique) -> Techniques {
        Techniques(self.0 | t.bit())
    }

    /// Whether the set holds `t`.
    pub const fn contains(self, t: Technique) -> bool {
        self.0 & t.bit() != 0
    }

    /// Adds `t` to the set.
    pub fn insert(&mut self, t: Technique) {
        self.0 |= t.bit();
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of techniques in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The techniques of the set enacted at `layer`.
    pub fn at_layer(self, layer: Layer) -> Techniques {
        self.iter()
            .filter(|t| t.layer() == layer)
            .collect::<Techniques>()
    }

    /// The first technique (in bit order) enacted at `layer`, if any.
    pub fn first_at(self, layer: Layer) -> Option<Technique> {
        self.iter().find(|t| t.layer() == layer)
    }

    /// Iterates over the techniques in bit order.
    pub fn iter(self) -> impl Iterator<Item = Technique> {
        Technique::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }
}

impl FromIterator<Technique> for Techniques {
    fn from_iter<I: IntoIterator<Item = Technique>>(iter: I) -> Self {
        let mut s = Techniques::EMPTY;
        for t in iter {
            s.insert(t);
        }
        s
    }
}

impl fmt::Display for Techniques {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_the_declaration_order() {
        for (i, t) in Technique::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(t as u8), i, "{t:?}");
        }
        assert_eq!(Technique::Freeze as u8, 12);
    }

    #[test]
    fn names_round_trip() {
        for t in Technique::ALL {
            assert_eq!(t.as_str().parse::<Technique>().unwrap(), t);
        }
        assert!("tls-rst".parse::<Technique>().is_err());
    }

    #[test]
    fn set_by_layer() {
        let s: Techniques = [
            Technique::TlsReset,
            Technique::DnsBlockpage,
            Technique::QuicDrop,
        ]
        .into_iter()
        .collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s.first_at(Layer::Dns), Some(Technique::DnsBlockpage));
        assert_eq!(s.first_at(Layer::Http), None);
        assert_eq!(s.to_string(), "dns-blockpage, tls-reset, quic-drop");
    }
}
