//! Explaining one decision: the answer `blocklab check` prints and the admin `/decide`
//! endpoint returns, written once.
//!
//! [`explain`] normalises an operator's target (an IP address, a URL or a domain name; IDN to
//! punycode, lower case, URL hosts too), decides it for one jurisdiction on one day, and returns
//! an [`Explanation`] that renders as one JSON object ([`Explanation::json`]) or as the text of
//! `blocklab check` ([`Explanation::text`]). Pure: no I/O, no clock, no logging; the caller
//! chooses the day and prints.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::json;

use super::{At, Conn, Decision, IspId, JurisdictionId, Policy, Target};
use crate::rules::{normalize_domain, Day};

/// A target with its host normalised (IDN to punycode, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalised {
    /// An address literal.
    Ip(IpAddr),
    /// A host name.
    Domain(String),
    /// A URL's host (name or address literal) and path.
    Url {
        /// The normalised host.
        host: String,
        /// The path and query, starting with `/`.
        path: String,
    },
}

impl Normalised {
    /// The policy target borrowing this normalised form.
    pub fn target(&self) -> Target<'_> {
        match self {
            Normalised::Ip(ip) => Target::Ip(*ip),
            Normalised::Domain(d) => Target::Domain(d),
            Normalised::Url { host, path } => Target::Url { host, path },
        }
    }
}

/// Reads an operator's target (IP, URL or domain) and normalises its host; the error says why
/// the name is not a valid host name.
pub fn normalise_target(t: &str) -> Result<Normalised, String> {
    match Target::parse(t) {
        Target::Ip(ip) => Ok(Normalised::Ip(ip)),
        Target::Domain(d) => normalize_domain(d)
            .map(|n| Normalised::Domain(n.into_owned()))
            .map_err(|e| e.to_string()),
        Target::Url { host, path } => {
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => normalize_domain(host)
                    .map_err(|e| e.to_string())?
                    .into_owned(),
            };
            Ok(Normalised::Url {
                host,
                path: path.to_string(),
            })
        }
    }
}

/// One decided target, ready to render.
#[derive(Debug, Clone)]
pub struct Explanation<'p> {
    policy: &'p Policy,
    /// The target as the operator wrote it.
    pub target: String,
    /// The target after normalisation (what was decided).
    pub normalised: Normalised,
    /// The jurisdiction decided for.
    pub jurisdiction: JurisdictionId,
    /// The day decided on.
    pub day: Day,
    /// The decision.
    pub decision: Decision,
    /// The client's ISP profile the decision was made for, if any.
    pub isp: Option<IspId>,
}

/// Normalises `target` and decides it in jurisdiction `jid` on `day`.
pub fn explain<'p>(
    policy: &'p Policy,
    jid: JurisdictionId,
    target: &str,
    day: Day,
) -> Result<Explanation<'p>, String> {
    explain_conn(policy, jid, target, day, &Conn::NONE)
}

/// Normalises `target` and decides it for connection `conn` (port, ECH, JA4, hour, ISP,
/// destination address) in jurisdiction `jid` on `day`.
pub fn explain_conn<'p>(
    policy: &'p Policy,
    jid: JurisdictionId,
    target: &str,
    day: Day,
    conn: &Conn<'_>,
) -> Result<Explanation<'p>, String> {
    let normalised = normalise_target(target)?;
    let decision = policy.decide_conn_in(jid, normalised.target(), conn, At::Day(day));
    Ok(Explanation {
        policy,
        target: target.to_string(),
        normalised,
        jurisdiction: jid,
        day,
        decision,
        isp: conn.isp,
    })
}

impl Explanation<'_> {
    /// The JSON object of this decision (one line of `blocklab check --json`, the body of
    /// `/decide`): target, jurisdiction, at, verdict, rule, techniques, basis, source, and
    /// `throttle_kbps`, `freeze_after_bytes`, `residual_secs`, `conditions`, `isp` or
    /// `exception` when they apply.
    pub fn json(&self) -> serde_json::Value {
        let mut v = self.json_core();
        if let Some(p) = self.isp.and_then(|i| self.policy.isp(self.jurisdiction, i)) {
            v["isp"] = json!(p.id);
        }
        v
    }

    fn json_core(&self) -> serde_json::Value {
        let policy = self.policy;
        let code = &policy.jurisdiction(self.jurisdiction).code;
        let (target, day) = (&self.target, self.day.to_string());
        match &self.decision {
            Decision::Block(b) => {
                let r = policy.rule(b.rule);
                let mut v = json!({
                    "target": target,
                    "jurisdiction": code,
                    "at": day,
                    "verdict": "block",
                    "rule": r.id,
                    "techniques": b.techniques.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                    "basis": r.basis,
                    "source": r.source,
                });
                if let Some(k) = r.throttle_kbps {
                    v["throttle_kbps"] = json!(k);
                }
                if let Some(n) = r.freeze_after_bytes {
                    v["freeze_after_bytes"] = json!(n);
                }
                if let Some(n) = r.residual_secs {
                    v["residual_secs"] = json!(n);
                }
                if !r.conditions.is_empty() {
                    v["conditions"] = json!(r.conditions);
                }
                v
            }
            Decision::Allow { rule, .. } => {
                let mut v = json!({
                    "target": target,
                    "jurisdiction": code,
                    "at": day,
                    "verdict": "allow",
                    "rule": null,
                    "techniques": [],
                    "basis": null,
                    "source": null,
                });
                if let Some(r) = rule {
                    let r = policy.rule(*r);
                    v["exception"] = json!(r.id);
                    v["basis"] = json!(r.basis);
                    v["source"] = json!(r.source);
                }
                v
            }
        }
    }

    /// The human-readable explanation `blocklab check` prints (one or more lines, each ending
    /// in a newline).
    pub fn text(&self) -> String {
        let policy = self.policy;
        let code = &policy.jurisdiction(self.jurisdiction).code;
        let code = match self.isp.and_then(|i| policy.isp(self.jurisdiction, i)) {
            Some(p) => format!("{code} (ISP {})", p.id),
            None => code.clone(),
        };
        let (target, day) = (&self.target, self.day);
        let mut out = String::new();
        // Writing to a String cannot fail.
        match &self.decision {
            Decision::Block(b) => {
                let r = policy.rule(b.rule);
                let _ = writeln!(out, "{target}: BLOCK in {code} on {day} by rule {}", r.id);
                let _ = write!(out, "  techniques: {}", b.techniques);
                if let Some(k) = r.throttle_kbps {
                    let _ = write!(out, " ({k} kbit/s)");
                }
                if let Some(n) = r.freeze_after_bytes {
                    let _ = write!(out, " (freeze after {n} bytes)");
                }
                if let Some(n) = r.residual_secs {
                    let _ = write!(out, " (residual block {n} s)");
                }
                out.push('\n');
                for c in &r.conditions {
                    let _ = writeln!(out, "  when: {c}");
                }
                if let Some(s) = &r.basis {
                    let _ = writeln!(out, "  basis: {s}");
                }
                if let Some(s) = &r.source {
                    let _ = writeln!(out, "  source: {s}");
                }
            }
            Decision::Allow { rule: Some(r), .. } => {
                let r = policy.rule(*r);
                let _ = writeln!(
                    out,
                    "{target}: allow in {code} on {day} (exception {})",
                    r.id
                );
            }
            Decision::Allow { rule: None, .. } => {
                let _ = writeln!(out, "{target}: allow in {code} on {day} (no rule matches)");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_normalised_like_the_rules() {
        assert_eq!(
            normalise_target("ExAmple.COM.").unwrap(),
            Normalised::Domain("example.com".into())
        );
        assert_eq!(
            normalise_target("https://Пример.рф/a?b").unwrap(),
            Normalised::Url {
                host: "xn--e1afmkfd.xn--p1ai".into(),
                path: "/a?b".into()
            }
        );
        assert_eq!(
            normalise_target("192.0.2.7").unwrap(),
            Normalised::Ip("192.0.2.7".parse().unwrap())
        );
        assert!(normalise_target("bad name!").is_err());
    }
}
