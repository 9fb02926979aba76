//! The `http-blockpage` technique: a 302 to the jurisdiction's blockpage, or a local 451 page.
//!
//! With `http_blockpage` set in the jurisdiction header the client is redirected there, as
//! Russian ISPs do (Rostelecom's `http://warning.rt.ru/`, OONI fingerprint `ooni.ru_6`).
//! Without it the gateway answers itself with HTTP 451 (RFC 7725): a `Link: <gateway>;
//! rel="blocked-by"` header and a page naming the rule, its basis and its source.

use crate::policy::{JurisdictionId, Policy, RuleId};

/// A complete blockpage response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 302 or 451.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// HTML body.
    pub body: String,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The blockpage for a request to `url` blocked by `rule` in jurisdiction `j`; `gateway` is
/// the gateway's own URL for the 451 `Link` header.
pub fn page(policy: &Policy, j: JurisdictionId, rule: RuleId, url: &str, gateway: &str) -> Page {
    let jur = policy.jurisdiction(j);
    if let Some(target) = &jur.http_blockpage {
        let body = format!(
            "<html><head><title>302 Found</title></head><body><a href=\"{0}\">{0}</a></body></html>\n",
            escape(target)
        );
        return Page {
            status: 302,
            headers: vec![
                ("Location", target.clone()),
                ("Content-Type", "text/html".into()),
            ],
            body,
        };
    }
    let info = policy.rule(rule);
    let authority = jur.authority.as_deref().unwrap_or(&jur.name);
    let mut body = String::new();
    body.push_str("<!DOCTYPE html>\n<html><head><title>451 Unavailable For Legal Reasons</title></head><body>\n");
    body.push_str("<h1>Unavailable For Legal Reasons</h1>\n");
    body.push_str(&format!(
        "<p>Access to <code>{}</code> is restricted in {} ({}) by <b>{}</b>.</p>\n",
        escape(url),
        escape(&jur.name),
        escape(&jur.code),
        escape(authority)
    ));
    body.push_str(&format!("<p>Rule: <code>{}</code></p>\n", escape(&info.id)));
    if let Some(b) = &info.basis {
        body.push_str(&format!("<p>Basis: {}</p>\n", escape(b)));
    }
    if let Some(s) = &info.source {
        body.push_str(&format!("<p>Source: {}</p>\n", escape(s)));
    }
    body.push_str("<p>This block is simulated by blocklab, a censorship research gateway.</p>\n</body></html>\n");
    Page {
        status: 451,
        headers: vec![
            ("Link", format!("<{gateway}>; rel=\"blocked-by\"")),
            ("Content-Type", "text/html; charset=utf-8".into()),
        ],
        body,
    }
}

impl Page {
    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        match self.status {
            302 => "Found",
            451 => "Unavailable For Legal Reasons",
            403 => "Forbidden",
            _ => "",
        }
    }

    /// The whole response as HTTP/1.1 bytes (for the transparent listener), closing after.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason());
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        out.push_str(&self.body);
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{At, ClientNet, Decision, Target};
    use crate::rules::RuleSet;

    #[test]
    fn ru_redirects_and_a_page_without_blockpage_is_451() {
        let mut rules = RuleSet::embedded().unwrap();
        let nets = [ClientNet {
            net: "127.0.0.0/8".parse().unwrap(),
            jurisdiction: "ru".into(),
        }];
        let p = Policy::compile(&rules, &nets).unwrap();
        let j = p.jurisdiction_by_code("ru").unwrap();
        let at = At::Day("2022-03-10".parse().unwrap());
        let Decision::Block(b) = p.decide_in(j, Target::Domain("facebook.com"), at) else {
            panic!("facebook.com not blocked");
        };
        let pg = page(
            &p,
            j,
            b.rule,
            "http://facebook.com/",
            "http://127.0.0.1:8080/",
        );
        assert_eq!(pg.status, 302);
        assert_eq!(
            pg.headers[0],
            ("Location", "http://warning.rt.ru/".to_string())
        );

        for f in &mut rules.files {
            f.jurisdiction.http_blockpage = None;
        }
        let p = Policy::compile(&rules, &nets).unwrap();
        let pg = page(
            &p,
            j,
            b.rule,
            "http://facebook.com/<x>",
            "http://127.0.0.1:8080/",
        );
        assert_eq!(pg.status, 451);
        assert_eq!(
            pg.headers[0].1,
            "<http://127.0.0.1:8080/>; rel=\"blocked-by\""
        );
        assert!(
            pg.body.contains("ru-facebook") && pg.body.contains("&lt;x&gt;"),
            "{}",
            pg.body
        );
        assert!(pg.body.contains("Roskomnadzor decision of 4 March 2022"));
        let raw = String::from_utf8(pg.to_bytes()).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 451 Unavailable For Legal Reasons\r\n"),
            "{raw}"
        );
    }
}
