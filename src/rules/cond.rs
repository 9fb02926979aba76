//! Rule conditions added in 2026 (README, "Rules"): the value types of
//! `ports`, `hours` and `ja4`, and their parsers.
//!
//! A rule with conditions applies only to connections known to satisfy all of them: a port
//! range of the right protocol, a ClientHello with (or without) ECH, one of the listed JA4
//! fingerprints, a local time of day inside a window, a client of a listed ISP profile.

use std::fmt;
use std::str::FromStr;

/// A transport protocol of a `ports` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A `ports` entry: `PROTO/PORT` or `PROTO/LOW-HIGH` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The protocol.
    pub proto: Proto,
    /// Lowest port.
    pub low: u16,
    /// Highest port (inclusive).
    pub high: u16,
}

impl PortRange {
    /// Whether `proto`/`port` is in the range.
    #[inline]
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && self.low <= port && port <= self.high
    }
}

/// A connection's transport endpoint on the server side: protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port {
    /// The protocol.
    pub proto: Proto,
    /// The server port.
    pub port: u16,
}

fn parse_port(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{s}` is not a {what} port (1-65535)")),
    }
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    match s {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(format!("unknown protocol `{other}` (known: tcp, udp)")),
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, ports) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected PROTO/PORT or PROTO/LOW-HIGH, e.g. tcp/443"))?;
        let proto = parse_proto(proto)?;
        let (low, high) = match ports.split_once('-') {
            Some((l, h)) => (parse_port(l, "low")?, parse_port(h, "high")?),
            None => {
                let p = parse_port(ports, "")?;
                (p, p)
            }
        };
        if high < low {
            return Err(format!(
                "`{s}`: the range ends ({high}) before it starts ({low})"
            ));
        }
        Ok(PortRange { proto, low, high })
    }
}

impl FromStr for Port {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, port) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected PROTO/PORT, e.g. tcp/443"))?;
        Ok(Port {
            proto: parse_proto(proto)?,
            port: parse_port(port, "")?,
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}/{}", self.proto.as_str(), self.low)
        } else {
            write!(f, "{}/{}-{}", self.proto.as_str(), self.low, self.high)
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto.as_str(), self.port)
    }
}

/// An `hours` window `HH:MM-HH:MM` in local minutes of the day, `[start, end)`; a window whose
/// end is before its start wraps past midnight (`22:00-06:00`). `24:00` ends the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First minute inside the window (0..1440).
    pub start: u16,
    /// First minute after the window (1..=1440).
    pub end: u16,
}

impl Window {
    /// Whether local minute-of-day `m` is inside the window.
    #[inline]
    pub fn contains(&self, m: u16) -> bool {
        if self.start < self.end {
            self.start <= m && m < self.end
        } else {
            m >= self.start || m < self.end
        }
    }
}

/// Parses `HH:MM` (00:00..=24:00) into minutes of the day.
pub fn parse_hhmm(s: &str) -> Result<u16, String> {
    let b = s.as_bytes();
    let bad = || format!("`{s}` is not a time HH:MM (00:00 to 24:00)");
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return Err(bad());
    }
    let h: u16 = s[0..2].parse().map_err(|_| bad())?;
    let m: u16 = s[3..5].parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}`: expected a window HH:MM-HH:MM, e.g. 22:00-06:00"))?;
        let start = parse_hhmm(a)?;
        let end = parse_hhmm(b)?;
        if start == 1440 {
            return Err(format!("`{s}`: a window cannot start at 24:00"));
        }
        if start == end || (end == 0 && start == 0) {
            return Err(format!(
                "`{s}`: empty window (use 00:00-24:00 for the whole day)"
            ));
        }
        let end = if end == 0 { 1440 } else { end };
        Ok(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Checks a JA4 fingerprint string (FoxIO's JA4 spec): `a_b_c` where `a` is 10 characters
/// (`t`/`q`/`d`, TLS version `13`/`12`/`11`/`10`/`s3`/`d1`/`d2`/`d3`/`00`, `d`/`i`, two-digit
/// cipher and extension counts, a two-character ALPN), and `b`, `c` are 12 lowercase hex digits
/// (the hashed form) or comma-separated 4-digit hex lists (the raw `JA4_r` form; `c` may carry
/// `_`-separated signature algorithms). Returns the normalised (lowercase) string.
pub fn check_ja4(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{s}` is not a JA4 fingerprint: {why}");
    let lower = s.to_ascii_lowercase();
    let mut parts = lower.splitn(3, '_');
    let a = parts.next().unwrap_or("");
    let (Some(b), Some(c)) = (parts.next(), parts.next()) else {
        return Err(bad(
            "expected three `_`-separated parts, e.g. t13d1516h2_8daaf6152771_b186095e22b6",
        ));
    };
    let ab = a.as_bytes();
    if ab.len() != 10 {
        return Err(bad("the first part must have 10 characters"));
    }
    if !matches!(ab[0], b't' | b'q' | b'd') {
        return Err(bad("it must start with t (TCP), q (QUIC) or d (DTLS)"));
    }
    if !matches!(
        &a[1..3],
        "13" | "12" | "11" | "10" | "s3" | "s2" | "d1" | "d2" | "d3" | "00"
    ) {
        return Err(bad(
            "unknown TLS version (13, 12, 11, 10, s3, s2, d1, d2, d3, 00)",
        ));
    }
    if !matches!(ab[3], b'd' | b'i') {
        return Err(bad(
            "the 4th character must be d (SNI is a domain) or i (no SNI)",
        ));
    }
    if !ab[4..8].iter().all(u8::is_ascii_digit) {
        return Err(bad(
            "characters 5-8 must be the two-digit cipher and extension counts",
        ));
    }
    if !ab[8..10].iter().all(u8::is_ascii_alphanumeric) {
        return Err(bad("the ALPN characters (9-10) must be letters or digits"));
    }
    let hashed = |p: &str| p.len() == 12 && p.bytes().all(|x| x.is_ascii_hexdigit());
    let raw = |p: &str| {
        p.is_empty()
            || p.split([',', '_'])
                .all(|x| x.len() == 4 && x.bytes().all(|y| y.is_ascii_hexdigit()))
    };
    let ok = (hashed(b) && hashed(c)) || (raw(b) && raw(c) && !(hashed(b) || hashed(c)));
    if !ok {
        return Err(bad(
            "the 2nd and 3rd parts must be 12 hex digits each (JA4) or comma-separated 4-digit hex lists (JA4_r)",
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(
            "tcp/443".parse::<PortRange>().unwrap(),
            PortRange {
                proto: Proto::Tcp,
                low: 443,
                high: 443
            }
        );
        let r: PortRange = "udp/1000-2000".parse().unwrap();
        assert!(r.contains(Proto::Udp, 1000) && r.contains(Proto::Udp, 2000));
        assert!(!r.contains(Proto::Tcp, 1500) && !r.contains(Proto::Udp, 2001));
        for bad in [
            "443",
            "sctp/1",
            "tcp/0",
            "tcp/65536",
            "tcp/9-1",
            "tcp/",
            "tcp/a-b",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert_eq!("udp/53".parse::<Port>().unwrap().to_string(), "udp/53");
    }

    #[test]
    fn windows() {
        let w: Window = "00:00-24:00".parse().unwrap();
        assert!(w.contains(0) && w.contains(1439));
        let night: Window = "22:00-06:00".parse().unwrap();
        assert!(night.contains(23 * 60) && night.contains(5 * 60 + 59));
        assert!(!night.contains(6 * 60) && !night.contains(12 * 60));
        let to_midnight: Window = "18:00-00:00".parse().unwrap();
        assert!(to_midnight.contains(1439) && !to_midnight.contains(0));
        for bad in [
            "25:00-26:00",
            "10:00",
            "10:00-10:00",
            "1:00-2:00",
            "24:00-01:00",
            "10:60-11:00",
        ] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ja4_shapes() {
        // The example of FoxIO's JA4 specification (technical_details/JA4.md).
        assert!(check_ja4("t13d1516h2_8daaf6152771_b186095e22b6").is_ok());
        assert!(check_ja4("T13D1516H2_8DAAF6152771_B186095E22B6").is_ok());
        assert!(check_ja4("t13d1516h2_002f,0035,009c_0005,000a_0403,0804").is_ok());
        for bad in [
            "t13d1516h2_8daaf6152771",
            "x13d1516h2_8daaf6152771_b186095e22b6",
            "t14d1516h2_8daaf6152771_b186095e22b6",
            "t13d15a6h2_8daaf6152771_b186095e22b6",
            "t13d1516h2_8daaf615277_b186095e22b6",
            "t13d1516h2_8daaf6152771_b186095e22bz",
        ] {
            assert!(check_ja4(bad).is_err(), "{bad}");
        }
    }
}
