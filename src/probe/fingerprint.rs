//! OONI blockpage fingerprints (<https://github.com/ooni/blocking-fingerprints>): loading and
//! matching.
//!
//! An HTTP fingerprint names where to look (`body`, `header.location`, `header.server`, ...),
//! how to compare (`full`, `prefix`, `contains`, `regexp`) and the pattern; a DNS fingerprint
//! is an address a censor's resolver answers with. A match on the probe's side (and not on the
//! control's) confirms a block and is reported with the fingerprint's name. The CSVs are
//! embedded (copies under `src/probe/data/`) and can be replaced with `--fingerprints DIR`.

use std::net::IpAddr;
use std::path::Path;

use regex::Regex;

use crate::rules::csv;

const EMBEDDED_HTTP: &str = include_str!("data/fingerprints_http.csv");
const EMBEDDED_DNS: &str = include_str!("data/fingerprints_dns.csv");

/// How a fingerprint's pattern is compared.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// The whole value equals the pattern.
    Full(String),
    /// The value starts with the pattern.
    Prefix(String),
    /// The value contains the pattern.
    Contains(String),
    /// The value matches the regular expression.
    Regexp(Regex),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Full(p) => value == p,
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
            Pattern::Contains(p) => value.contains(p.as_str()),
            Pattern::Regexp(r) => r.is_match(value),
        }
    }
}

/// Where in an HTTP response a fingerprint looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The response body.
    Body,
    /// A response header (lower-case name).
    Header(String),
}

/// One HTTP blockpage fingerprint.
#[derive(Debug, Clone)]
pub struct HttpFingerprint {
    /// OONI's name, e.g. `ooni.ru_6`.
    pub name: String,
    /// Where to look.
    pub location: Location,
    /// How to compare.
    pub pattern: Pattern,
    /// `location_found` as written in the CSV.
    pub location_found: String,
    /// Countries where it was seen (`expected_countries`).
    pub countries: String,
    /// OONI's scope (`nat`, `isp`, `prod`, `inst`, `vbw`, `fp`).
    pub scope: String,
}

/// What a DNS fingerprint recognises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsTarget {
    /// An address in the answer.
    Addr(IpAddr),
    /// A CNAME target in the answer (lower case, no trailing dot).
    Name(String),
}

/// One DNS blockpage fingerprint: an address (or CNAME) a censor answers with.
#[derive(Debug, Clone)]
pub struct DnsFingerprint {
    /// OONI's name, e.g. `ooni.ru_dns_1`.
    pub name: String,
    /// The address or name.
    pub target: DnsTarget,
    /// Countries where it was seen.
    pub countries: String,
    /// OONI's scope.
    pub scope: String,
}

/// A fingerprint that matched a measurement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Match {
    /// The fingerprint's name.
    pub name: String,
    /// Where it matched (`body`, `header.location`, `dns`, ...).
    pub location_found: String,
    /// Countries where it was seen.
    pub expected_countries: String,
    /// OONI's scope of the fingerprint.
    pub scope: String,
    /// Whether the match confirms a block: a censor's page (scope `nat`, `isp`, `prod`,
    /// `inst`), not a vague word (`vbw`) or a known false positive (`fp`).
    pub confirms_block: bool,
}

/// Whether fingerprints of `scope` confirm a block.
pub fn scope_confirms(scope: &str) -> bool {
    matches!(scope, "nat" | "isp" | "prod" | "inst" | "prov")
}

/// All fingerprints.
#[derive(Debug, Clone, Default)]
pub struct Fingerprints {
    /// HTTP fingerprints.
    pub http: Vec<HttpFingerprint>,
    /// DNS fingerprints.
    pub dns: Vec<DnsFingerprint>,
}

/// Why fingerprints could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not valid CSV (located: `path:line:column: reason`).
    #[error("{0}")]
    Csv(crate::rules::RulesError),
    /// Lines that could not be understood (all of them are listed).
    #[error("{}", .0.join("\n"))]
    Lines(Vec<String>),
}

impl Fingerprints {
    /// The embedded copies of OONI's fingerprints.
    pub fn embedded() -> Result<Fingerprints, FingerprintError> {
        Fingerprints::from_texts(
            ("fingerprints_http.csv", EMBEDDED_HTTP),
            ("fingerprints_dns.csv", EMBEDDED_DNS),
        )
    }

    /// Loads `fingerprints_http.csv` and `fingerprints_dns.csv` from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Fingerprints, FingerprintError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|source| FingerprintError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let http = read("fingerprints_http.csv")?;
        let dns = read("fingerprints_dns.csv")?;
        let hp = dir.join("fingerprints_http.csv").display().to_string();
        let dp = dir.join("fingerprints_dns.csv").display().to_string();
        Fingerprints::from_texts((&hp, &http), (&dp, &dns))
    }

    /// Parses the two CSV texts (`(shown name, text)`); every bad line is reported.
    pub fn from_texts(
        http: (&str, &str),
        dns: (&str, &str),
    ) -> Result<Fingerprints, FingerprintError> {
        let mut bad = Vec::new();
        let mut out = Fingerprints::default();
        for rec in records(http.0, http.1)? {
            match http_row(&rec.fields) {
                Ok(Some(f)) => out.http.push(f),
                Ok(None) => {}
                Err(e) => bad.push(format!("{}:{}: {e}", http.0, rec.line)),
            }
        }
        for rec in records(dns.0, dns.1)? {
            match dns_row(&rec.fields) {
                Ok(Some(f)) => out.dns.push(f),
                Ok(None) => {}
                Err(e) => bad.push(format!("{}:{}: {e}", dns.0, rec.line)),
            }
        }
        if bad.is_empty() {
            Ok(out)
        } else {
            Err(FingerprintError::Lines(bad))
        }
    }

    /// HTTP fingerprints matching a response (headers as `(name, value)`, any case).
    pub fn match_http(&self, headers: &[(String, String)], body: &str) -> Vec<Match> {
        self.http
            .iter()
            .filter(|f| match &f.location {
                Location::Body => f.pattern.matches(body),
                Location::Header(h) => headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(h) && f.pattern.matches(v)),
            })
            .map(|f| Match {
                name: f.name.clone(),
                location_found: f.location_found.clone(),
                expected_countries: f.countries.clone(),
                scope: f.scope.clone(),
                confirms_block: scope_confirms(&f.scope),
            })
            .collect()
    }

    /// DNS fingerprints matching any of the answered addresses or CNAME targets.
    pub fn match_dns(&self, addrs: &[IpAddr], cnames: &[String]) -> Vec<Match> {
        self.dns
            .iter()
            .filter(|f| match &f.target {
                DnsTarget::Addr(a) => addrs.contains(a),
                DnsTarget::Name(n) => cnames
                    .iter()
                    .any(|c| c.trim_end_matches('.').eq_ignore_ascii_case(n)),
            })
            .map(|f| Match {
                name: f.name.clone(),
                location_found: "dns".into(),
                expected_countries: f.countries.clone(),
                scope: f.scope.clone(),
                confirms_block: scope_confirms(&f.scope),
            })
            .collect()
    }
}

fn records(path: &str, text: &str) -> Result<Vec<csv::Record>, FingerprintError> {
    let table = csv::Reader::new()
        .header()
        .read(path, text)
        .map_err(FingerprintError::Csv)?;
    Ok(table.records)
}

// Columns: name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,
// expected_countries,source,exp_url,notes
fn http_row(f: &[String]) -> Result<Option<HttpFingerprint>, String> {
    if f.len() < 6 {
        return Err(format!("expected at least 6 fields, found {}", f.len()));
    }
    let location = match f[3].as_str() {
        "body" => Location::Body,
        l => match l.strip_prefix("header.") {
            Some(h) => Location::Header(h.to_ascii_lowercase()),
            None => return Err(format!("unknown location_found `{l}`")),
        },
    };
    Ok(Some(HttpFingerprint {
        name: f[0].clone(),
        location,
        pattern: pattern(&f[4], &f[5])?,
        location_found: f[3].clone(),
        countries: f.get(7).cloned().unwrap_or_default(),
        scope: f[1].clone(),
    }))
}

fn dns_row(f: &[String]) -> Result<Option<DnsFingerprint>, String> {
    if f.len() < 6 {
        return Err(format!("expected at least 6 fields, found {}", f.len()));
    }
    if f[3] != "dns" || f[4] != "full" {
        return Err(format!("unsupported DNS fingerprint `{}`/`{}`", f[3], f[4]));
    }
    let p = f[5].trim();
    let target = match p.parse() {
        Ok(a) => DnsTarget::Addr(a),
        Err(_) if is_hostname(p) => DnsTarget::Name(p.trim_end_matches('.').to_ascii_lowercase()),
        Err(_) => return Err(format!("`{p}` is neither an IP address nor a host name")),
    };
    Ok(Some(DnsFingerprint {
        name: f[0].clone(),
        target,
        countries: f.get(7).cloned().unwrap_or_default(),
        scope: f[1].clone(),
    }))
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.contains('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Rewrites an OONI (Go RE2) pattern for Rust's `regex`: Go takes a `{` that does not open a
/// repetition (`{n}`, `{n,}`, `{n,m}`) literally, Rust rejects it.
pub fn go_regex_compat(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    let mut chars = p.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if at < i {
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '{' => {
                let rest = &b[at + 1..];
                let digits = rest.iter().take_while(|x| x.is_ascii_digit()).count();
                let mut j = digits;
                if digits > 0 && rest.get(j) == Some(&b',') {
                    j += 1;
                    j += rest[j..].iter().take_while(|x| x.is_ascii_digit()).count();
                }
                if digits > 0 && rest.get(j) == Some(&b'}') {
                    out.push_str(&p[at..at + j + 2]);
                    i = at + j + 2;
                } else {
                    out.push_str("\\{");
                }
            }
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
    }
    out
}

fn pattern(kind: &str, p: &str) -> Result<Pattern, String> {
    Ok(match kind {
        "full" => Pattern::Full(p.to_string()),
        "prefix" => Pattern::Prefix(p.to_string()),
        "contains" => Pattern::Contains(p.to_string()),
        "regexp" => Pattern::Regexp(
            Regex::new(&go_regex_compat(p)).map_err(|e| format!("bad regexp: {e}"))?,
        ),
        k => return Err(format!("unknown pattern_type `{k}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_fingerprints_load_completely() {
        let f = Fingerprints::embedded().unwrap();
        assert_eq!(f.http.len(), 1729); // records; some span several lines
        assert_eq!(f.dns.len(), 226);
    }

    #[test]
    fn rostelecom_redirect_is_ooni_ru_6() {
        let f = Fingerprints::embedded().unwrap();
        let h = vec![("Location".to_string(), "http://warning.rt.ru/".to_string())];
        let m = f.match_http(&h, "");
        assert!(
            m.iter().any(|m| m.name == "ooni.ru_6" && m.confirms_block),
            "{m:?}"
        );
        assert!(f
            .match_http(&[("Location".into(), "https://facebook.com/".into())], "")
            .is_empty());
    }

    #[test]
    fn body_and_dns_fingerprints() {
        let f = Fingerprints::embedded().unwrap();
        let m = f.match_http(&[], "<p>see http://eais.rkn.gov.ru/ for details</p>");
        assert!(m.iter().any(|m| m.name == "ooni.ru_5"));
        let d = f.match_dns(&["95.167.13.50".parse().unwrap()], &[]);
        assert_eq!(d[0].name, "ooni.ru_dns_1");
        assert!(f.match_dns(&["127.0.0.2".parse().unwrap()], &[]).is_empty());
        let c = f.match_dns(&[], &["internet-positif.org.".to_string()]);
        assert_eq!(c.len(), 1, "{c:?}");
    }

    #[test]
    fn false_positive_fingerprints_do_not_confirm() {
        let f = Fingerprints::embedded().unwrap();
        let m = f.match_http(&[], "<h1>502 Bad Gateway</h1>");
        let generic = m.iter().find(|m| m.name == "cp.fp_x_generic_502").unwrap();
        assert_eq!(generic.scope, "fp");
        assert!(!generic.confirms_block);
    }

    #[test]
    fn go_regexps_with_literal_braces() {
        assert_eq!(go_regex_compat(r#"{"msg":.*"id":"#), r#"\{"msg":.*"id":"#);
        assert_eq!(go_regex_compat(r"a{2,3}b\{c}"), r"a{2,3}b\{c\}");
        let f = Fingerprints::embedded().unwrap();
        let m = f.match_http(&[], r#"{"msg":"blocked","id":"7"}"#);
        assert!(!m.is_empty());
    }

    #[test]
    fn bad_lines_are_all_reported() {
        let head = "name,scope,other_names,location_found,pattern_type,pattern\n";
        let http = format!("{head}a,n,,body,weird,x\nb,n,,nowhere,full,x\nc,n,,body,full,ok\n");
        let dns = format!("{head}d,n,,dns,full,not-an-ip\n");
        let Err(FingerprintError::Lines(l)) = Fingerprints::from_texts(("h", &http), ("d", &dns))
        else {
            panic!("expected errors");
        };
        assert_eq!(l.len(), 3, "{l:?}");
        assert!(l[0].starts_with("h:2:"));
        assert!(l[2].starts_with("d:2:"));
    }
}
