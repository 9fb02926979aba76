//! Importers for list files named by `import = { path, format }`.
//!
//! Formats: `domains` (one name per line, `#` comments, `*.` wildcards), `cidrs` (one CIDR or
//! address per line), `hosts` (`0.0.0.0 name...`), `rkn-csv` (a Roskomnadzor registry dump:
//! windows-1251, `IPs;domains;URL;organisation;decision;date`, lists split by `|`, first line
//! `Updated: ...`; each entry's decision date becomes its own `since`) and `ooni-csv` (Citizen
//! Lab test lists: `url,category_code,...`). A file is decoded and checked line by line once, when
//! loaded, reporting every bad line; the compiler then streams entries with [`Import::for_each`].

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::{normalize_domain, Day, Diagnostic, RulesError};

/// The format of an imported list file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// One domain per line; `#` comments; a leading `*.` means subdomains only.
    Domains,
    /// One CIDR (or bare address) per line; `#` comments.
    Cidrs,
    /// hosts(5) lines: an address, then names.
    Hosts,
    /// A Roskomnadzor registry dump (zapret-info CSV).
    RknCsv,
    /// A Citizen Lab / OONI test list CSV.
    OoniCsv,
}

impl FromStr for ImportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "domains" => ImportFormat::Domains,
            "cidrs" => ImportFormat::Cidrs,
            "hosts" => ImportFormat::Hosts,
            "rkn-csv" => ImportFormat::RknCsv,
            "ooni-csv" => ImportFormat::OoniCsv,
            other => {
                return Err(format!(
                "unknown import format `{other}` (known: domains, cidrs, hosts, rkn-csv, ooni-csv)"
            ))
            }
        })
    }
}

/// One entry of an imported list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A domain: the name and its subdomains, or (`subdomains_only`) only its subdomains.
    Domain {
        /// The normalised name.
        name: Cow<'a, str>,
        /// From a `*.name` wildcard.
        subdomains_only: bool,
        /// The entry's own start date (RKN decision date), if any.
        since: Option<Day>,
    },
    /// An address block.
    Ip {
        /// The block.
        net: IpNet,
        /// The entry's own start date, if any.
        since: Option<Day>,
    },
    /// A URL (its host is also given as a `Domain` entry).
    Url {
        /// The URL as written.
        url: &'a str,
        /// The entry's own start date, if any.
        since: Option<Day>,
    },
}

/// An imported list file: decoded, checked, ready to stream.
#[derive(Clone, PartialEq)]
pub struct Import {
    /// The file as shown in errors.
    pub path: String,
    /// Its format.
    pub format: ImportFormat,
    text: String,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("bytes", &self.text.len())
            .finish()
    }
}

/// Parses `1.2.3.0/24`, `2001:db8::/32` or a bare address (as a host route).
pub(crate) fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

impl Import {
    /// Decodes and checks `bytes`; every bad line is an error.
    pub fn new(path: String, format: ImportFormat, bytes: Vec<u8>) -> Result<Import, RulesError> {
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) if format == ImportFormat::RknCsv => {
                let (t, _, _) = encoding_rs::WINDOWS_1251.decode(e.as_bytes());
                t.into_owned()
            }
            Err(e) => {
                let off = e.utf8_error().valid_up_to();
                let t = String::from_utf8_lossy(e.as_bytes()).into_owned();
                return Err(RulesError::single(Diagnostic::at(
                    &path,
                    &t,
                    off,
                    "not valid UTF-8".into(),
                )));
            }
        };
        let imp = Import { path, format, text };
        let mut errors = RulesError::default();
        imp.walk(&mut |_| {}, &mut |off, msg| {
            errors.push(Diagnostic::at(&imp.path, &imp.text, off, msg))
        });
        if errors.is_empty() {
            Ok(imp)
        } else {
            Err(errors)
        }
    }

    /// Calls `f` for every entry, in file order.
    pub fn for_each(&self, mut f: impl FnMut(Entry<'_>)) {
        self.walk(&mut f, &mut |_, _| {});
    }

    /// The number of lines (an upper bound on the entries of one-per-line formats).
    pub fn line_count(&self) -> usize {
        self.text.bytes().filter(|b| *b == b'\n').count() + 1
    }

    /// The number of bytes of decoded text.
    pub fn len_bytes(&self) -> usize {
        self.text.len()
    }

    fn walk(&self, f: &mut dyn FnMut(Entry<'_>), err: &mut dyn FnMut(usize, String)) {
        let base = self.text.as_ptr() as usize;
        let off_of = |s: &str| s.as_ptr() as usize - base;
        if self.format == ImportFormat::OoniCsv {
            return self.walk_test_list(f, err);
        }
        let mut lines = self.text.split('\n');
        if self.format == ImportFormat::RknCsv {
            // Header line: `Updated: ...`.
            let _ = lines.next();
        }
        for raw in lines {
            let line = raw.trim_end_matches('\r');
            match self.format {
                ImportFormat::Domains => {
                    let s = strip_comment(line).trim();
                    if !s.is_empty() {
                        domain_entry(s, None, off_of(s), f, err);
                    }
                }
                ImportFormat::Cidrs => {
                    let s = strip_comment(line).trim();
                    if s.is_empty() {
                        continue;
                    }
                    match parse_cidr(s) {
                        Some(net) => f(Entry::Ip { net, since: None }),
                        None => err(off_of(s), format!("`{s}` is not a CIDR or IP address")),
                    }
                }
                ImportFormat::Hosts => hosts_line(strip_comment(line), &off_of, f, err),
                ImportFormat::RknCsv => rkn_line(line, &off_of, f, err),
                ImportFormat::OoniCsv => {}
            }
        }
    }
}

fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(a, _)| a)
}

fn domain_entry(
    s: &str,
    since: Option<Day>,
    off: usize,
    f: &mut dyn FnMut(Entry<'_>),
    err: &mut dyn FnMut(usize, String),
) {
    let (s, subdomains_only) = match s.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    match normalize_domain(s) {
        Ok(name) => f(Entry::Domain {
            name,
            subdomains_only,
            since,
        }),
        Err(e) => err(off, e.to_string()),
    }
}

const HOSTS_SKIP: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

fn hosts_line(
    line: &str,
    off_of: &dyn Fn(&str) -> usize,
    f: &mut dyn FnMut(Entry<'_>),
    err: &mut dyn FnMut(usize, String),
) {
    let mut words = line.split_whitespace();
    let Some(addr) = words.next() else {
        return;
    };
    if addr.parse::<IpAddr>().is_err() {
        err(
            off_of(addr),
            format!("`{addr}` is not an IP address (hosts format: ADDRESS NAME...)"),
        );
        return;
    }
    let mut any = false;
    for name in words {
        any = true;
        if !HOSTS_SKIP.contains(&name) {
            domain_entry(name, None, off_of(name), f, err);
        }
    }
    if !any {
        err(off_of(addr), "hosts line without a name".into());
    }
}

fn rkn_line(
    line: &str,
    off_of: &dyn Fn(&str) -> usize,
    f: &mut dyn FnMut(Entry<'_>),
    err: &mut dyn FnMut(usize, String),
) {
    if line.trim().is_empty() {
        return;
    }
    // IPs;domains;URL;organisation;decision;date -- a URL may itself hold `;`, so the first two
    // fields are taken from the left and the last three from the right.
    let mut left = line.splitn(3, ';');
    let (Some(ips), Some(domains), Some(rest)) = (left.next(), left.next(), left.next()) else {
        err(
            off_of(line),
            "expected 6 `;`-separated fields: IPs;domains;URL;organisation;decision;date".into(),
        );
        return;
    };
    let mut right = rest.rsplitn(4, ';');
    let (Some(date), Some(_decision), Some(_org), Some(urls)) =
        (right.next(), right.next(), right.next(), right.next())
    else {
        err(
            off_of(line),
            "expected 6 `;`-separated fields: IPs;domains;URL;organisation;decision;date".into(),
        );
        return;
    };
    let date_s = date.trim();
    let since = match date_s.parse::<Day>() {
        Ok(d) => Some(d),
        Err(e) => {
            err(off_of(date), e.to_string());
            return;
        }
    };
    for ip in ips.split('|').map(str::trim).filter(|s| !s.is_empty()) {
        match parse_cidr(ip) {
            Some(net) => f(Entry::Ip { net, since }),
            None => err(off_of(ip), format!("`{ip}` is not an IP address")),
        }
    }
    for d in domains.split('|').map(str::trim).filter(|s| !s.is_empty()) {
        domain_entry(d, since, off_of(d), f, err);
    }
    for u in urls.split('|').map(str::trim).filter(|s| !s.is_empty()) {
        f(Entry::Url { url: u, since });
    }
}

impl Import {
    /// A Citizen Lab test list, read with the one CSV reader (notes may be quoted and hold
    /// commas or newlines): the `url` column (the first one without a header naming it).
    fn walk_test_list(&self, f: &mut dyn FnMut(Entry<'_>), err: &mut dyn FnMut(usize, String)) {
        let table = match super::csv::Reader::new().header().parse(&self.text) {
            Ok(t) => t,
            Err(e) => return err(e.offset, e.message),
        };
        let col = table.column("url").unwrap_or(0);
        for rec in &table.records {
            let url = rec.get(col).trim();
            if url.is_empty() {
                continue;
            }
            // Entries borrow the file's text: find the field where the record starts.
            let rest = &self.text[rec.offset..];
            let Some(at) = rest.find(url) else {
                err(rec.offset, format!("`{url}`: a URL may not contain `\"`"));
                continue;
            };
            let url = &rest[at..at + url.len()];
            let off = rec.offset + at;
            let Some(host) = url_host(url) else {
                err(off, format!("`{url}` is not an http(s) URL"));
                continue;
            };
            match host.parse::<IpAddr>() {
                Ok(ip) => f(Entry::Ip {
                    net: IpNet::from(ip),
                    since: None,
                }),
                Err(_) => domain_entry(host, None, off, f, err),
            }
            f(Entry::Url { url, since: None });
        }
    }
}

/// The host of an `http(s)://host[:port]/...` URL (brackets stripped from IPv6 literals).
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(format: ImportFormat, text: &str) -> Result<Vec<String>, RulesError> {
        let imp = Import::new("t".into(), format, text.as_bytes().to_vec())?;
        let mut out = Vec::new();
        imp.for_each(|e| out.push(format!("{e:?}")));
        Ok(out)
    }

    #[test]
    fn domains_with_comments_and_wildcards() {
        let e = entries(
            ImportFormat::Domains,
            "# list\nExample.COM\n\n*.wild.org # c\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("\"example.com\"") && e[0].contains("subdomains_only: false"));
        assert!(e[1].contains("\"wild.org\"") && e[1].contains("subdomains_only: true"));
    }

    #[test]
    fn every_bad_line_is_reported() {
        let err = entries(
            ImportFormat::Cidrs,
            "10.0.0.0/8\nnope\n1.2.3.4\n300.1.1.1/8\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 4]);
    }

    #[test]
    fn rkn_dump_lines() {
        let text = "Updated: 2014-04-22\n1.2.3.4 | 5.6.7.8;a.example|*.b.example;http://a.example/x;y=1;Org;123;2013-08-06\n";
        let e = entries(ImportFormat::RknCsv, text).unwrap();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(
            e.iter().all(|x| x.contains("15923")),
            "since = 2013-08-06 on every entry: {e:?}"
        );
        assert!(e[4].contains("http://a.example/x;y=1"));
    }

    #[test]
    fn test_list_with_quoted_multiline_notes() {
        let text = "url,category_code,category_description,date_added,source,notes\n\
                    https://rt.com/,NEWS,News Media,2022-03-01,x,\"state media,\nbanned\"\n\
                    http://1.2.3.4/x,ANON,Anon,2022-03-01,x,\n";
        let e = entries(ImportFormat::OoniCsv, text).unwrap();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("\"rt.com\"") && e[1].contains("https://rt.com/"));
        assert!(e[2].contains("1.2.3.4/32"), "{e:?}");
        let err = entries(
            ImportFormat::OoniCsv,
            "url,category_code\nhttps://ok.example/,NEWS\nftp://x.org/,NEWS\n",
        )
        .unwrap_err();
        assert_eq!(err.diagnostics[0].line, 3, "{err}");
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://www.rt.com/news"), Some("www.rt.com"));
        assert_eq!(url_host("http://[2001:db8::1]:8080/"), Some("2001:db8::1"));
        assert_eq!(url_host("http://user@x.org:81"), Some("x.org"));
        assert_eq!(url_host("ftp://x.org"), None);
    }
}
