//! Classification of one measurement the way OONI's Web Connectivity test does: a pure
//! function from what the probe and the control observed to OONI's test keys
//! (`dns_consistency`, `body_length_match`, `status_code_match`, `headers_match`,
//! `title_match`, `accessible`, `blocking`) plus blocklab's own throttling verdict.
//!
//! It follows OONI's specification (`ooni/spec` `nettests/ts-017-web-connectivity.md`) and its
//! reference implementation (`ooni/probe-cli`, `webconnectivity` `dnsanalysis.go`,
//! `httpanalysis.go`, `summary.go`). Deliberate, documented differences for a lab:
//! - no ASN database: DNS answers are consistent when they share an address (OONI's step 4);
//! - when both sides fail (the origin is down, or a name exists nowhere) the result is
//!   "website down" (`blocking: false`, `accessible: false`) unless the probe's DNS answers
//!   are inconsistent (then `dns`), as OONI's current classic analysis (`setWebsiteDown`)
//!   reports it, rather than a block;
//! - any DNS failure of the probe's resolver while the control resolves (`dns_refused_error`,
//!   `dns_server_misbehaving`, `dns_no_answer`, as well as `dns_nxdomain_error`) is `dns`.

use super::facts::SideFacts;

/// OONI's `blocking` key: `null`, `false`, or the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// `null`: the measurement is inconclusive.
    Unknown,
    /// `false`: no blocking seen.
    No,
    /// `"dns"`.
    Dns,
    /// `"tcp_ip"`.
    TcpIp,
    /// `"http-failure"`.
    HttpFailure,
    /// `"http-diff"`.
    HttpDiff,
}

impl Blocking {
    /// The JSON value OONI uses.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Blocking::Unknown => serde_json::Value::Null,
            Blocking::No => serde_json::Value::Bool(false),
            b => serde_json::Value::String(b.label().into()),
        }
    }

    /// A short label (`false`, `null`, `dns`, ...), as shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            Blocking::Unknown => "null",
            Blocking::No => "false",
            Blocking::Dns => "dns",
            Blocking::TcpIp => "tcp_ip",
            Blocking::HttpFailure => "http-failure",
            Blocking::HttpDiff => "http-diff",
        }
    }
}

/// Tunables of the analysis.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Throttled when the probe's rate is below this fraction of the control's.
    pub throttle_fraction: f64,
    /// Rates are only compared when the control downloaded at least this many bytes.
    pub throttle_min_bytes: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            throttle_fraction: 0.5,
            throttle_min_bytes: 64 * 1024,
        }
    }
}

/// The classification of one measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// `"consistent"` | `"inconsistent"`.
    pub dns_consistency: Option<&'static str>,
    /// Whether body lengths are within 70% of each other.
    pub body_length_match: Option<bool>,
    /// The smaller body length over the larger.
    pub body_proportion: f64,
    /// Whether the status codes match.
    pub status_code_match: Option<bool>,
    /// Whether the uncommon header names match.
    pub headers_match: Option<bool>,
    /// Whether the long title words match.
    pub title_match: Option<bool>,
    /// Whether the site seems accessible (`None` = inconclusive).
    pub accessible: Option<bool>,
    /// Why it is blocked.
    pub blocking: Blocking,
    /// The control could not measure at all (its resolver did not answer): OONI's
    /// `control_failure`.
    pub control_failure: Option<String>,
    /// blocklab extension: the probe's download is below `throttle_fraction` of the control's.
    pub throttled: Option<bool>,
}

/// Failure strings of the DNS layer that mean "the resolver answered something".
fn is_dns_answer_failure(f: &str) -> bool {
    f.starts_with("dns_")
}

/// OONI's DNS consistency (`dnsanalysis.go`, without ASNs).
pub fn dns_consistency(host_is_ip: bool, probe: &SideFacts, control: &SideFacts) -> &'static str {
    if host_is_ip {
        return "consistent";
    }
    match (&probe.dns.failure, &control.dns.failure) {
        (Some(p), Some(c)) => {
            if p == "dns_nxdomain_error" && c == "dns_nxdomain_error" {
                "consistent"
            } else {
                "inconsistent"
            }
        }
        _ => {
            if probe
                .dns
                .addrs
                .iter()
                .any(|a| control.dns.addrs.contains(a))
            {
                "consistent"
            } else {
                "inconsistent"
            }
        }
    }
}

/// Body length check (`HTTPBodyLengthChecks`).
fn body_length(probe: &SideFacts, control: &SideFacts) -> (Option<bool>, f64) {
    let (Some(p), Some(c)) = (&probe.http, &control.http) else {
        return (None, 0.0);
    };
    if c.failure.is_some() || c.status.is_none() || c.body_is_truncated {
        return (None, 0.0);
    }
    let control_len = c.body.len() as f64;
    if control_len <= 0.0 || p.status.is_none() || p.body_is_truncated || p.body.is_empty() {
        return (None, 0.0);
    }
    let m = p.body.len() as f64;
    let proportion = if m >= control_len {
        control_len / m
    } else {
        m / control_len
    };
    (Some(proportion > 0.7), proportion)
}

/// Status code check (`HTTPStatusCodeMatch`).
fn status_code(probe: &SideFacts, control: &SideFacts) -> Option<bool> {
    let p = probe.http.as_ref()?.status?;
    let c = control.http.as_ref()?.status?;
    if p == c {
        return Some(true);
    }
    if c / 100 == 5 {
        return None;
    }
    Some(false)
}

const COMMON_HEADERS: &[&str] = &[
    "date",
    "content-type",
    "server",
    "cache-control",
    "vary",
    "set-cookie",
    "location",
    "expires",
    "x-powered-by",
    "content-encoding",
    "last-modified",
    "accept-ranges",
    "pragma",
    "x-frame-options",
    "etag",
    "x-content-type-options",
    "age",
    "via",
    "p3p",
    "x-xss-protection",
    "content-language",
    "cf-ray",
    "strict-transport-security",
    "link",
    "x-varnish",
];

/// Header names check (`HTTPHeadersMatch`).
fn headers(probe: &SideFacts, control: &SideFacts) -> Option<bool> {
    let p = probe.http.as_ref()?;
    let c = control.http.as_ref()?;
    p.status?;
    c.status?;
    let names = |h: &[(String, String)]| {
        let mut v: Vec<String> = h.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    };
    let ours = names(&p.headers);
    let theirs = names(&c.headers);
    if ours == theirs {
        return Some(true);
    }
    let uncommon = |n: &&String| !COMMON_HEADERS.contains(&n.as_str());
    Some(ours.iter().filter(uncommon).any(|n| theirs.contains(n)))
}

/// Title check (`HTTPTitleMatch`): every word of 5+ bytes appears in both titles.
fn title(probe: &SideFacts, control: &SideFacts) -> Option<bool> {
    let p = probe.http.as_ref()?;
    let c = control.http.as_ref()?;
    p.status?;
    c.status?;
    if p.body_is_truncated || p.title.is_empty() {
        return None;
    }
    let words = |t: &str| -> Vec<String> {
        t.split(' ')
            .filter(|w| w.len() >= 5)
            .map(str::to_lowercase)
            .collect()
    };
    let ours = words(&p.title);
    let theirs = words(&c.title);
    Some(ours.iter().all(|w| theirs.contains(w)) && theirs.iter().all(|w| ours.contains(w)))
}

/// blocklab's throttling verdict (no OONI equivalent).
fn throttled(probe: &SideFacts, control: &SideFacts, params: &Params) -> Option<bool> {
    let p = probe.http.as_ref()?;
    let c = control.http.as_ref()?;
    if p.failure.is_some() || c.failure.is_some() {
        return None;
    }
    let (c_bytes, _) = c.download?;
    if c_bytes < params.throttle_min_bytes {
        return None;
    }
    let cr = c.rate_kbps()?;
    let pr = p.rate_kbps()?;
    Some(pr < params.throttle_fraction * cr)
}

/// Classifies one measurement of `url_is_https` (`host_is_ip` when the URL names an address).
pub fn classify(
    url_is_https: bool,
    host_is_ip: bool,
    probe: &SideFacts,
    control: &SideFacts,
    params: &Params,
) -> Analysis {
    let control_failure = control
        .dns
        .failure
        .as_ref()
        .filter(|f| !is_dns_answer_failure(f))
        .cloned();
    let dns = dns_consistency(host_is_ip, probe, control);
    let (body_length_match, body_proportion) = body_length(probe, control);
    let mut a = Analysis {
        dns_consistency: if control_failure.is_some() {
            None
        } else {
            Some(dns)
        },
        body_length_match,
        body_proportion,
        status_code_match: status_code(probe, control),
        headers_match: headers(probe, control),
        title_match: title(probe, control),
        accessible: None,
        blocking: Blocking::Unknown,
        control_failure,
        throttled: throttled(probe, control, params),
    };
    let (blocking, accessible) = summarize(url_is_https, probe, control, &a);
    a.blocking = blocking;
    a.accessible = accessible;
    a
}

const DOWN: (Blocking, Option<bool>) = (Blocking::No, Some(false));
const OK: (Blocking, Option<bool>) = (Blocking::No, Some(true));
const UNKNOWN: (Blocking, Option<bool>) = (Blocking::Unknown, None);

fn blocked(b: Blocking) -> (Blocking, Option<bool>) {
    (b, Some(false))
}

/// OONI's `Summarize`, step by step.
fn summarize(
    https: bool,
    probe: &SideFacts,
    control: &SideFacts,
    a: &Analysis,
) -> (Blocking, Option<bool>) {
    let probe_ok = probe.http.as_ref().is_some_and(|h| h.failure.is_none());
    let control_ok = control.http.as_ref().is_some_and(|h| h.failure.is_none());
    // An HTTPS fetch that succeeded went to the real server (the CA was verified).
    if https && probe_ok {
        return OK;
    }
    if a.control_failure.is_some() {
        return UNKNOWN;
    }
    let inconsistent = a.dns_consistency == Some("inconsistent");
    // OONI's `setWebsiteDown`: both sides failed, unless the probe's DNS is to blame.
    let down = if inconsistent {
        blocked(Blocking::Dns)
    } else {
        DOWN
    };
    let with_dns = |b: Blocking| {
        if inconsistent {
            blocked(Blocking::Dns)
        } else {
            blocked(b)
        }
    };
    // DNS: both sides failed alike (the name exists nowhere), or only the probe failed.
    if let Some(f) = &probe.dns.failure {
        if !inconsistent {
            return DOWN;
        }
        if is_dns_answer_failure(f) && control.dns.failure.is_none() {
            return blocked(Blocking::Dns);
        }
        if control.dns.failure.is_some() {
            return down;
        }
    }
    // TCP: we tried and never connected.
    let attempts = probe.connects.len();
    let successes = probe
        .connects
        .iter()
        .filter(|c| c.failure.is_none())
        .count();
    if attempts > 0 && successes == 0 {
        let control_connected = control.connects.iter().any(|c| c.failure.is_none());
        if !control_connected && !inconsistent {
            return DOWN;
        }
        return with_dns(Blocking::TcpIp);
    }
    if !control_ok {
        return if probe_ok { UNKNOWN } else { down };
    }
    let Some(http) = &probe.http else {
        // Nothing could be requested (every address excluded by --allow-net).
        return if inconsistent {
            blocked(Blocking::Dns)
        } else {
            UNKNOWN
        };
    };
    if let Some(f) = &http.failure {
        let b = match f.as_str() {
            "connection_refused"
            | "connection_reset"
            | "eof_error"
            | "generic_timeout_error"
            | "ssl_invalid_hostname"
            | "ssl_invalid_certificate"
            | "ssl_unknown_authority" => Blocking::HttpFailure,
            "dns_nxdomain_error" => Blocking::Dns,
            _ => return UNKNOWN,
        };
        return with_dns(b);
    }
    if a.status_code_match == Some(true)
        && (a.body_length_match == Some(true)
            || a.headers_match == Some(true)
            || a.title_match == Some(true))
    {
        return OK;
    }
    with_dns(Blocking::HttpDiff)
}

#[cfg(test)]
mod tests {
    use super::super::facts::{ConnectFacts, DnsFacts, HttpFacts, TlsFacts};
    use super::*;

    fn addr(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    fn page(status: u16, title: &str, len: usize, headers: &[&str]) -> HttpFacts {
        HttpFacts {
            status: Some(status),
            headers: headers
                .iter()
                .map(|h| (h.to_string(), "v".to_string()))
                .collect(),
            body: vec![b'x'; len],
            title: title.into(),
            download: Some((len as u64, 0.01)),
            ..HttpFacts::default()
        }
    }

    fn side(ip: &str, connect: Option<&str>, http: Option<HttpFacts>) -> SideFacts {
        let a = addr(ip);
        SideFacts {
            dns: DnsFacts {
                addrs: vec![a],
                ..DnsFacts::default()
            },
            connects: vec![ConnectFacts {
                addr: (a, 443).into(),
                failure: connect.map(String::from),
                t: 0.0,
            }],
            tls: Vec::<TlsFacts>::new(),
            http,
            skipped: vec![],
        }
    }

    fn failed(f: &str) -> HttpFacts {
        HttpFacts {
            failure: Some(f.into()),
            ..HttpFacts::default()
        }
    }

    fn nx() -> SideFacts {
        SideFacts {
            dns: DnsFacts {
                failure: Some("dns_nxdomain_error".into()),
                ..DnsFacts::default()
            },
            http: Some(failed("dns_nxdomain_error")),
            ..SideFacts::default()
        }
    }

    fn good() -> HttpFacts {
        page(
            200,
            "Facebook - log in or sign up",
            5000,
            &["X-FB-Debug", "Server"],
        )
    }

    fn run(https: bool, p: &SideFacts, c: &SideFacts) -> Analysis {
        classify(https, false, p, c, &Params::default())
    }

    #[test]
    fn same_page_is_accessible() {
        let c = side("127.0.0.1", None, Some(good()));
        let a = run(false, &c.clone(), &c);
        assert_eq!((a.blocking, a.accessible), (Blocking::No, Some(true)));
        assert_eq!(a.dns_consistency, Some("consistent"));
        assert_eq!(a.body_length_match, Some(true));
        assert_eq!(a.status_code_match, Some(true));
        assert_eq!(a.headers_match, Some(true));
        assert_eq!(a.title_match, Some(true));
        assert_eq!(a.blocking.to_json(), serde_json::json!(false));
    }

    #[test]
    fn reset_after_client_hello_is_http_failure() {
        let c = side("127.0.0.1", None, Some(good()));
        let p = side("127.0.0.1", None, Some(failed("connection_reset")));
        let a = run(true, &p, &c);
        assert_eq!(
            (a.blocking, a.accessible),
            (Blocking::HttpFailure, Some(false))
        );
        assert_eq!(a.blocking.to_json(), serde_json::json!("http-failure"));
        let p = side("127.0.0.1", None, Some(failed("generic_timeout_error")));
        assert_eq!(run(true, &p, &c).blocking, Blocking::HttpFailure);
    }

    #[test]
    fn blockpage_redirect_is_http_diff() {
        let c = side("127.0.0.1", None, Some(good()));
        let p = side("127.0.0.1", None, Some(page(302, "", 0, &["Location"])));
        let a = run(false, &p, &c);
        assert_eq!(a.blocking, Blocking::HttpDiff);
        assert_eq!(a.status_code_match, Some(false));
        assert_eq!(a.body_length_match, None);
    }

    #[test]
    fn nxdomain_only_on_probe_is_dns() {
        let c = side("127.0.0.1", None, Some(good()));
        let a = run(true, &nx(), &c);
        assert_eq!(a.dns_consistency, Some("inconsistent"));
        assert_eq!((a.blocking, a.accessible), (Blocking::Dns, Some(false)));
        let mut refused = nx();
        refused.dns.failure = Some("dns_refused_error".into());
        assert_eq!(run(true, &refused, &c).blocking, Blocking::Dns);
    }

    #[test]
    fn nxdomain_on_both_is_website_down_not_blocking() {
        let a = run(true, &nx(), &nx());
        assert_eq!(a.dns_consistency, Some("consistent"));
        assert_eq!((a.blocking, a.accessible), (Blocking::No, Some(false)));
    }

    #[test]
    fn connect_failure_with_consistent_dns_is_tcp_ip() {
        let c = side("127.0.0.2", None, Some(good()));
        let p = side(
            "127.0.0.2",
            Some("generic_timeout_error"),
            Some(failed("generic_timeout_error")),
        );
        let a = run(true, &p, &c);
        assert_eq!((a.blocking, a.accessible), (Blocking::TcpIp, Some(false)));
        // ... and with a lying resolver it is the DNS.
        let p = side(
            "10.9.9.9",
            Some("generic_timeout_error"),
            Some(failed("generic_timeout_error")),
        );
        assert_eq!(run(true, &p, &c).blocking, Blocking::Dns);
    }

    #[test]
    fn unreachable_origin_on_both_sides_is_down() {
        let c = side(
            "127.0.0.1",
            Some("connection_refused"),
            Some(failed("connection_refused")),
        );
        let a = run(true, &c.clone(), &c);
        assert_eq!((a.blocking, a.accessible), (Blocking::No, Some(false)));
    }

    #[test]
    fn dns_blockpage_address_not_contacted_is_dns_even_when_the_origin_is_down() {
        let mut p = side("95.167.13.50", None, None);
        p.connects.clear();
        p.skipped = vec![addr("95.167.13.50")];
        let up = side("127.0.0.1", None, Some(good()));
        assert_eq!(run(true, &p, &up).blocking, Blocking::Dns);
        let down = side(
            "127.0.0.1",
            Some("connection_refused"),
            Some(failed("connection_refused")),
        );
        let a = run(true, &p, &down);
        assert_eq!((a.blocking, a.accessible), (Blocking::Dns, Some(false)));
    }

    #[test]
    fn control_resolver_silent_is_inconclusive() {
        let mut c = nx();
        c.dns.failure = Some("generic_timeout_error".into());
        let p = side("127.0.0.1", None, Some(good()));
        let a = run(false, &p, &c);
        assert_eq!(a.control_failure.as_deref(), Some("generic_timeout_error"));
        assert_eq!((a.blocking, a.accessible), (Blocking::Unknown, None));
        assert_eq!(a.blocking.to_json(), serde_json::Value::Null);
    }

    #[test]
    fn control_http_failed_but_probe_worked_is_inconclusive() {
        let c = side("127.0.0.1", None, Some(failed("connection_reset")));
        let p = side("127.0.0.1", None, Some(good()));
        assert_eq!(run(false, &p, &c).blocking, Blocking::Unknown);
    }

    #[test]
    fn different_page_with_inconsistent_dns_blames_dns() {
        let c = side("127.0.0.1", None, Some(good()));
        let p = side(
            "127.0.0.9",
            None,
            Some(page(200, "Blocked", 100, &["X-Block"])),
        );
        assert_eq!(run(false, &p, &c).blocking, Blocking::Dns);
    }

    #[test]
    fn title_and_headers_rescue_a_dynamic_body() {
        let c = side("127.0.0.1", None, Some(good()));
        let mut p = side("127.0.0.1", None, Some(good()));
        if let Some(h) = p.http.as_mut() {
            h.body.truncate(1000);
        }
        let a = run(false, &p, &c);
        assert_eq!(a.body_length_match, Some(false));
        assert_eq!(a.blocking, Blocking::No);
    }

    #[test]
    fn status_5xx_in_control_is_not_compared() {
        let c = side("127.0.0.1", None, Some(page(503, "", 10, &[])));
        let p = side("127.0.0.1", None, Some(page(200, "", 10, &[])));
        assert_eq!(run(false, &p, &c).status_code_match, None);
    }

    #[test]
    fn throttling_compares_rates() {
        let mut c = side("127.0.0.1", None, Some(page(200, "Big", 1 << 20, &[])));
        let mut p = c.clone();
        if let Some(h) = c.http.as_mut() {
            h.download = Some((1 << 20, 0.01));
        }
        if let Some(h) = p.http.as_mut() {
            h.download = Some((60_000, 3.0));
            h.body_is_truncated = true;
        }
        let a = run(true, &p, &c);
        assert_eq!(a.throttled, Some(true));
        assert_eq!((a.blocking, a.accessible), (Blocking::No, Some(true)));
        assert_eq!(a.body_length_match, None);
        // small pages are not rate-compared
        let small = side("127.0.0.1", None, Some(good()));
        assert_eq!(run(true, &small, &small).throttled, None);
        assert_eq!(run(true, &c, &c).throttled, Some(false));
    }
}
