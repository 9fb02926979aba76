//! The rules-file parser: walks a `toml_edit` document by hand, collecting every problem.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use toml_edit::{ImDocument, Item, Table, Value};

use super::import::{Import, ImportFormat};
use super::{
    check_ja4, normalize_domain, parse_utc_offset, Day, Diagnostic, IspProfile, Jurisdiction,
    PortRange, Reader, Rule, RulesError, RulesFile, Technique, Techniques, VpnRule, VpnTechnique,
    Window, MAX_ISPS, VPN_PROTOCOLS,
};

/// Reads and parses the file at `path`.
pub(super) fn parse_file(path: &Path, reader: &dyn Reader) -> Result<RulesFile, RulesError> {
    let shown = reader.display(path);
    let bytes = reader
        .read(path)
        .map_err(|e| RulesError::single(Diagnostic::file(&shown, format!("cannot read: {e}"))))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
        RulesError::single(Diagnostic::at(&shown, &text, off, "not valid UTF-8".into()))
    })?;
    parse_text(path, &text, reader)
}

/// Parses `text`, the contents of `path`.
pub(super) fn parse_text(
    path: &Path,
    text: &str,
    reader: &dyn Reader,
) -> Result<RulesFile, RulesError> {
    let shown = reader.display(path);
    let doc = match ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let msg = e.message().trim().to_string();
            return Err(RulesError::single(Diagnostic::at(
                &shown,
                text,
                offset,
                format!("TOML syntax: {msg}"),
            )));
        }
    };
    let mut cx = Cx {
        path: &shown,
        text,
        errors: RulesError::default(),
    };
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let file = cx.file(doc.as_table(), &base, reader);
    // Report in reading order: this file's lines first, then its imports'.
    cx.errors.diagnostics.sort_by(|a, b| {
        (a.path != shown, &a.path, a.line, a.column).cmp(&(
            b.path != shown,
            &b.path,
            b.line,
            b.column,
        ))
    });
    if cx.errors.is_empty() {
        file.ok_or_else(|| RulesError::single(Diagnostic::file(&shown, "empty".into())))
    } else {
        Err(cx.errors)
    }
}

struct Cx<'a> {
    path: &'a str,
    text: &'a str,
    errors: RulesError,
}

fn span_of(item: &Item) -> usize {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
    .map_or(0, |s| s.start)
}

const RULE_KEYS: &[&str] = &[
    "id",
    "domains",
    "exact",
    "substrings",
    "ips",
    "urls",
    "since",
    "until",
    "techniques",
    "throttle_kbps",
    "allow",
    "basis",
    "source",
    "import",
    "ports",
    "ech",
    "ja4",
    "hours",
    "isp",
    "freeze_after_bytes",
    "residual_secs",
];
const ISP_KEYS: &[&str] = &[
    "id",
    "name",
    "dns_blockpage",
    "http_blockpage",
    "techniques",
    "source",
];
const JURISDICTION_KEYS: &[&str] = &[
    "code",
    "name",
    "authority",
    "utc_offset",
    "dns_blockpage",
    "http_blockpage",
    "reassemble",
];
const VPN_KEYS: &[&str] = &[
    "id",
    "protocols",
    "since",
    "until",
    "technique",
    "throttle_kbps",
    "cut_after",
    "basis",
    "source",
];

impl Cx<'_> {
    fn err(&mut self, offset: usize, msg: String) {
        self.errors
            .push(Diagnostic::at(self.path, self.text, offset, msg));
    }

    /// Reports every key of `table` not in `known`, at the key itself.
    fn unknown_keys(&mut self, table: &Table, known: &[&str], what: &str) {
        for (k, item) in table.iter() {
            if !known.contains(&k) {
                let off = table
                    .key(k)
                    .and_then(|key| key.span())
                    .map_or_else(|| span_of(item), |s| s.start);
                self.err(
                    off,
                    format!("unknown key `{k}` in {what} (known: {})", known.join(", ")),
                );
            }
        }
    }

    fn key_offset(&self, table: &Table, key: &str) -> usize {
        table
            .key(key)
            .and_then(|k| k.span())
            .map_or_else(|| table.span().map_or(0, |s| s.start), |s| s.start)
    }

    fn string(&mut self, table: &Table, key: &str) -> Option<(String, usize)> {
        let item = table.get(key)?;
        match item.as_value() {
            Some(Value::String(s)) => Some((s.value().clone(), span_of(item))),
            _ => {
                self.err(span_of(item), format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn bool(&mut self, table: &Table, key: &str) -> Option<bool> {
        let item = table.get(key)?;
        match item.as_value() {
            Some(Value::Boolean(b)) => Some(*b.value()),
            _ => {
                self.err(span_of(item), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    fn positive_int(&mut self, table: &Table, key: &str) -> Option<u32> {
        let item = table.get(key)?;
        match item.as_value() {
            Some(Value::Integer(i)) if *i.value() > 0 && *i.value() <= i64::from(u32::MAX) => {
                Some(*i.value() as u32)
            }
            _ => {
                self.err(span_of(item), format!("`{key}` must be a positive integer"));
                None
            }
        }
    }

    /// An array of strings, each with its offset.
    fn strings(&mut self, table: &Table, key: &str) -> Vec<(String, usize)> {
        let Some(item) = table.get(key) else {
            return Vec::new();
        };
        let Some(arr) = item.as_array() else {
            self.err(
                span_of(item),
                format!("`{key}` must be an array of strings"),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(arr.len());
        for v in arr.iter() {
            let off = v.span().map_or(0, |s| s.start);
            match v {
                Value::String(s) => out.push((s.value().clone(), off)),
                _ => self.err(off, format!("`{key}` must hold only strings")),
            }
        }
        out
    }

    fn date(&mut self, table: &Table, key: &str) -> Option<(Day, usize)> {
        let (s, off) = self.string(table, key)?;
        match s.parse::<Day>() {
            Ok(d) => Some((d, off)),
            Err(e) => {
                self.err(off, format!("`{key}`: {e}"));
                None
            }
        }
    }

    fn window(&mut self, table: &Table) -> (Option<Day>, Option<Day>) {
        let since = self.date(table, "since");
        let until = self.date(table, "until");
        if let (Some((s, _)), Some((u, off))) = (since, until) {
            if u <= s {
                self.err(off, format!("`until` ({u}) must be after `since` ({s})"));
            }
        }
        (since.map(|x| x.0), until.map(|x| x.0))
    }

    fn file(&mut self, root: &Table, base: &Path, reader: &dyn Reader) -> Option<RulesFile> {
        self.unknown_keys(
            root,
            &["jurisdiction", "isp", "rule", "vpn"],
            "a rules file",
        );
        let isps = self.isps(root);
        // Ids of every [[isp]] table, also of bad ones (already reported), so that rules
        // naming them are not reported twice.
        let isp_ids: Vec<String> = root
            .get("isp")
            .and_then(Item::as_array_of_tables)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("id").and_then(Item::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let jurisdiction = match root.get("jurisdiction") {
            Some(Item::Table(t)) => self.jurisdiction(t, isps),
            Some(other) => {
                self.err(span_of(other), "`jurisdiction` must be a table".into());
                None
            }
            None => {
                self.err(0, "missing [jurisdiction] table".into());
                None
            }
        };
        let code = jurisdiction.as_ref().map_or("", |j| j.code.as_str());
        let mut rules = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        match root.get("rule") {
            None => {}
            Some(Item::ArrayOfTables(arr)) => {
                for t in arr.iter() {
                    if let Some(item) = t.get("id") {
                        if let Some(id) = item.as_str() {
                            if !ids.insert(id.to_string()) {
                                self.err(span_of(item), format!("duplicate rule id `{id}`"));
                            }
                        }
                    }
                    if let Some(r) = self.rule(t, base, reader, &isp_ids) {
                        rules.push(r);
                    }
                }
            }
            Some(other) => self.err(
                span_of(other),
                "`rule` must be an array of tables ([[rule]])".into(),
            ),
        }
        let mut vpn = Vec::new();
        match root.get("vpn") {
            None => {}
            Some(Item::ArrayOfTables(arr)) => {
                for (n, t) in arr.iter().enumerate() {
                    if let Some(v) = self.vpn(t, code, n) {
                        vpn.push(v);
                    }
                }
            }
            Some(other) => self.err(
                span_of(other),
                "`vpn` must be an array of tables ([[vpn]])".into(),
            ),
        }
        Some(RulesFile {
            path: self.path.to_string(),
            jurisdiction: jurisdiction?,
            rules,
            vpn,
        })
    }

    /// The `[[isp]]` profiles of the file (every bad one reported, the good ones kept).
    fn isps(&mut self, root: &Table) -> Vec<IspProfile> {
        let mut out: Vec<IspProfile> = Vec::new();
        match root.get("isp") {
            None => {}
            Some(Item::ArrayOfTables(arr)) => {
                for t in arr.iter() {
                    if let Some(p) = self.isp(t, &out) {
                        if out.len() == MAX_ISPS {
                            let off = t.span().map_or(0, |s| s.start);
                            self.err(
                                off,
                                format!("at most {MAX_ISPS} [[isp]] profiles per jurisdiction"),
                            );
                        } else {
                            out.push(p);
                        }
                    }
                }
            }
            Some(other) => self.err(
                span_of(other),
                "`isp` must be an array of tables ([[isp]])".into(),
            ),
        }
        out
    }

    fn isp(&mut self, t: &Table, earlier: &[IspProfile]) -> Option<IspProfile> {
        let before = self.errors.len();
        self.unknown_keys(t, ISP_KEYS, "[[isp]]");
        let start = t.span().map_or(0, |s| s.start);
        let id = match self.string(t, "id") {
            Some((id, off)) => {
                let ok = !id.is_empty()
                    && id.len() <= 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    self.err(
                        off,
                        format!("bad ISP id `{id}`: use lowercase letters, digits and `-`"),
                    );
                } else if earlier.iter().any(|p| p.id == id) {
                    self.err(off, format!("duplicate ISP id `{id}`"));
                }
                Some(id)
            }
            None => {
                self.err(start, "[[isp]] needs an `id`".into());
                None
            }
        };
        let name = self.string(t, "name").map(|x| x.0);
        let dns_blockpage = self.dns_blockpage(t);
        let http_blockpage = self.http_blockpage(t);
        let mut overrides = Vec::new();
        if let Some(item) = t.get("techniques") {
            let table = item
                .as_inline_table()
                .map(|x| x.clone().into_table())
                .or_else(|| item.as_table().cloned());
            match table {
                None => self.err(
                    span_of(item),
                    "`techniques` of an [[isp]] must be a table of overrides, e.g. { \"tls-reset\" = \"http-blockpage\" }".into(),
                ),
                Some(tbl) => {
                    let off = span_of(item);
                    for (from, v) in tbl.iter() {
                        let from_t = from.parse::<Technique>();
                        let to_t = v.as_str().map(str::parse::<Technique>);
                        match (from_t, to_t) {
                            (Ok(f), Some(Ok(to))) => overrides.push((f, to)),
                            (Err(e), _) => self.err(off, format!("`techniques`: {e}")),
                            (_, Some(Err(e))) => self.err(off, format!("`techniques`: {e}")),
                            (_, None) => self.err(
                                off,
                                format!("`techniques`: the override of `{from}` must be a technique name"),
                            ),
                        }
                    }
                }
            }
        }
        let source = self.string(t, "source").map(|x| x.0);
        if self.errors.len() > before {
            return None;
        }
        let id = id?;
        Some(IspProfile {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            dns_blockpage,
            http_blockpage,
            overrides,
            source,
        })
    }

    fn dns_blockpage(&mut self, t: &Table) -> Vec<IpAddr> {
        let mut dns_blockpage = Vec::new();
        for (s, off) in self.strings(t, "dns_blockpage") {
            match s.parse::<IpAddr>() {
                Ok(ip) => dns_blockpage.push(ip),
                Err(_) => self.err(off, format!("`dns_blockpage`: `{s}` is not an IP address")),
            }
        }
        dns_blockpage
    }

    fn http_blockpage(&mut self, t: &Table) -> Option<String> {
        let (s, off) = self.string(t, "http_blockpage")?;
        if !(s.starts_with("http://") || s.starts_with("https://"))
            || s.contains(char::is_whitespace)
        {
            self.err(
                off,
                format!("`http_blockpage`: `{s}` is not an http(s) URL"),
            );
        }
        Some(s)
    }

    fn jurisdiction(&mut self, t: &Table, isps: Vec<IspProfile>) -> Option<Jurisdiction> {
        self.unknown_keys(t, JURISDICTION_KEYS, "[jurisdiction]");
        let start = t.span().map_or(0, |s| s.start);
        let code = match self.string(t, "code") {
            Some((c, off)) => {
                let ok = !c.is_empty()
                    && c.len() <= 32
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    self.err(
                        off,
                        format!(
                            "bad jurisdiction code `{c}`: use lowercase letters, digits and `-`"
                        ),
                    );
                }
                Some(c)
            }
            None => {
                self.err(start, "[jurisdiction] needs `code`".into());
                None
            }
        };
        let name = self.string(t, "name").map(|x| x.0);
        let authority = self.string(t, "authority").map(|x| x.0);
        let utc_offset = match self.string(t, "utc_offset") {
            Some((s, off)) => match parse_utc_offset(&s) {
                Ok(v) => v,
                Err(e) => {
                    self.err(off, e.to_string());
                    0
                }
            },
            None => 0,
        };
        let dns_blockpage = self.dns_blockpage(t);
        let http_blockpage = self.http_blockpage(t);
        let reassemble = self.bool(t, "reassemble").unwrap_or(true);
        let code = code?;
        Some(Jurisdiction {
            name: name.unwrap_or_else(|| code.clone()),
            code,
            authority,
            utc_offset,
            dns_blockpage,
            http_blockpage,
            reassemble,
            isps,
        })
    }

    fn rule(
        &mut self,
        t: &Table,
        base: &Path,
        reader: &dyn Reader,
        isp_ids: &[String],
    ) -> Option<Rule> {
        let before = self.errors.len();
        self.unknown_keys(t, RULE_KEYS, "[[rule]]");
        let start = t.span().map_or(0, |s| s.start);
        let id = match self.string(t, "id") {
            Some((id, off)) => {
                if id.is_empty() || id.contains(char::is_whitespace) {
                    self.err(off, format!("bad rule id `{id}`: no spaces, not empty"));
                }
                Some(id)
            }
            None => {
                self.err(start, "[[rule]] needs an `id`".into());
                None
            }
        };
        let mut domains = Vec::new();
        for (d, off) in self.strings(t, "domains") {
            if d == "." {
                domains.push(d);
                continue;
            }
            match normalize_domain(&d) {
                Ok(n) => domains.push(n.into_owned()),
                Err(e) => self.err(off, format!("`domains`: {e}")),
            }
        }
        let mut exact = Vec::new();
        for (d, off) in self.strings(t, "exact") {
            match normalize_domain(&d) {
                Ok(n) => exact.push(n.into_owned()),
                Err(e) => self.err(off, format!("`exact`: {e}")),
            }
        }
        let mut substrings = Vec::new();
        for (s, off) in self.strings(t, "substrings") {
            if s.is_empty() || !s.is_ascii() {
                self.err(off, format!("`substrings`: `{s}` must be non-empty ASCII"));
            } else {
                substrings.push(s.to_ascii_lowercase());
            }
        }
        let mut ips = Vec::new();
        for (s, off) in self.strings(t, "ips") {
            match super::import::parse_cidr(&s) {
                Some(net) => ips.push(net),
                None => self.err(off, format!("`ips`: `{s}` is not a CIDR or IP address")),
            }
        }
        let urls: Vec<String> = self.strings(t, "urls").into_iter().map(|x| x.0).collect();
        let (since, until) = self.window(t);
        let allow = self.bool(t, "allow").unwrap_or(false);
        let mut techniques = Techniques::EMPTY;
        for (s, off) in self.strings(t, "techniques") {
            match s.parse::<Technique>() {
                Ok(tq) => techniques.insert(tq),
                Err(e) => self.err(off, e.to_string()),
            }
        }
        if t.get("techniques").is_none() && !allow {
            self.err(start, "a blocking [[rule]] needs `techniques`".into());
        }
        if allow && !techniques.is_empty() {
            let off = t.get("techniques").map_or(start, span_of);
            self.err(off, "an `allow = true` rule takes no `techniques`".into());
        }
        let throttle_kbps = self.positive_int(t, "throttle_kbps");
        if techniques.contains(Technique::Throttle)
            && throttle_kbps.is_none()
            && t.get("throttle_kbps").is_none()
        {
            let off = t.get("techniques").map_or(start, span_of);
            self.err(off, "technique `throttle` needs `throttle_kbps`".into());
        }
        if throttle_kbps.is_some() && !techniques.contains(Technique::Throttle) {
            let off = self.key_offset(t, "throttle_kbps");
            self.err(
                off,
                "`throttle_kbps` is set but `throttle` is not among the techniques".into(),
            );
        }
        let mut ports = Vec::new();
        for (s, off) in self.strings(t, "ports") {
            match s.parse::<PortRange>() {
                Ok(p) => ports.push(p),
                Err(e) => self.err(off, format!("`ports`: {e}")),
            }
        }
        let ech = self.bool(t, "ech");
        let mut ja4 = Vec::new();
        for (s, off) in self.strings(t, "ja4") {
            match check_ja4(&s) {
                Ok(fp) => ja4.push(fp),
                Err(e) => self.err(off, format!("`ja4`: {e}")),
            }
        }
        let mut hours = Vec::new();
        for (s, off) in self.strings(t, "hours") {
            match s.parse::<Window>() {
                Ok(w) => hours.push(w),
                Err(e) => self.err(off, format!("`hours`: {e}")),
            }
        }
        let mut isp = Vec::new();
        for (s, off) in self.strings(t, "isp") {
            if isp_ids.contains(&s) {
                isp.push(s);
            } else if isp_ids.is_empty() {
                self.err(
                    off,
                    format!(
                        "`isp`: no [[isp]] profile `{s}`: this file defines no [[isp]] profiles"
                    ),
                );
            } else {
                self.err(
                    off,
                    format!(
                        "`isp`: no [[isp]] profile `{s}` in this file (have: {})",
                        isp_ids.join(", ")
                    ),
                );
            }
        }
        for key in ["ports", "ja4", "hours", "isp"] {
            if let Some(arr) = t.get(key).and_then(Item::as_array) {
                if arr.is_empty() {
                    let off = span_of(&t[key]);
                    self.err(off, format!("`{key}` is empty: leave it out to mean any"));
                }
            }
        }
        let freeze_after_bytes = self.positive_int(t, "freeze_after_bytes");
        if techniques.contains(Technique::Freeze) && t.get("freeze_after_bytes").is_none() {
            let off = t.get("techniques").map_or(start, span_of);
            self.err(off, "technique `freeze` needs `freeze_after_bytes`".into());
        }
        if freeze_after_bytes.is_some() && !techniques.contains(Technique::Freeze) {
            let off = self.key_offset(t, "freeze_after_bytes");
            self.err(
                off,
                "`freeze_after_bytes` is set but `freeze` is not among the techniques".into(),
            );
        }
        let residual_secs = self.positive_int(t, "residual_secs");
        if residual_secs.is_some() && allow {
            let off = self.key_offset(t, "residual_secs");
            self.err(
                off,
                "an `allow = true` rule takes no `residual_secs`".into(),
            );
        }
        let basis = self.string(t, "basis").map(|x| x.0);
        let source = self.string(t, "source").map(|x| x.0);
        let import = match t.get("import") {
            None => None,
            Some(item) => self.import(item, base, reader),
        };
        let matches_something = ["domains", "exact", "substrings", "ips", "urls", "import"]
            .iter()
            .any(|k| t.get(k).is_some());
        if !matches_something {
            self.err(start, "[[rule]] matches nothing: give `domains`, `exact`, `substrings`, `ips`, `urls` or `import`".into());
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Rule {
            id: id?,
            domains,
            exact,
            substrings,
            ips,
            urls,
            since,
            until,
            techniques,
            throttle_kbps,
            allow,
            basis,
            source,
            import,
            ports,
            ech,
            ja4,
            hours,
            isp,
            freeze_after_bytes,
            residual_secs,
        })
    }

    fn import(&mut self, item: &Item, base: &Path, reader: &dyn Reader) -> Option<Import> {
        let off = span_of(item);
        let Some(t) = item
            .as_inline_table()
            .map(|t| t.clone().into_table())
            .or_else(|| item.as_table().cloned())
        else {
            self.err(
                off,
                "`import` must be a table: { path = \"...\", format = \"...\" }".into(),
            );
            return None;
        };
        for (k, _) in t.iter() {
            if k != "path" && k != "format" {
                self.err(
                    off,
                    format!("unknown key `{k}` in `import` (known: path, format)"),
                );
            }
        }
        let path = match t.get("path").and_then(|i| i.as_str()) {
            Some(p) => p.to_string(),
            None => {
                self.err(off, "`import` needs `path` (a string)".into());
                return None;
            }
        };
        let format = match t.get("format").and_then(|i| i.as_str()) {
            Some(f) => match f.parse::<ImportFormat>() {
                Ok(f) => f,
                Err(e) => {
                    self.err(off, e);
                    return None;
                }
            },
            None => {
                self.err(
                    off,
                    "`import` needs `format` (domains, cidrs, hosts, rkn-csv, ooni-csv)".into(),
                );
                return None;
            }
        };
        let full = base.join(&path);
        let shown = reader.display(&full);
        let bytes = match reader.read(&full) {
            Ok(s) => s,
            Err(e) => {
                self.err(off, format!("cannot read import `{shown}`: {e}"));
                return None;
            }
        };
        match Import::new(shown, format, bytes) {
            Ok(imp) => Some(imp),
            Err(errs) => {
                self.errors.extend(errs);
                None
            }
        }
    }

    fn vpn(&mut self, t: &Table, code: &str, n: usize) -> Option<VpnRule> {
        let before = self.errors.len();
        self.unknown_keys(t, VPN_KEYS, "[[vpn]]");
        let start = t.span().map_or(0, |s| s.start);
        let id = self
            .string(t, "id")
            .map_or_else(|| format!("{code}-vpn-{}", n + 1), |x| x.0);
        let mut protocols = Vec::new();
        for (p, off) in self.strings(t, "protocols") {
            if VPN_PROTOCOLS.contains(&p.as_str()) {
                protocols.push(p);
            } else {
                self.err(
                    off,
                    format!(
                        "unknown VPN protocol `{p}` (known: {})",
                        VPN_PROTOCOLS.join(", ")
                    ),
                );
            }
        }
        if t.get("protocols").is_none() {
            self.err(start, "[[vpn]] needs `protocols`".into());
        }
        let (since, until) = self.window(t);
        let technique = match self.string(t, "technique") {
            Some((s, off)) => match s.as_str() {
                "drop" => Some(VpnTechnique::Drop),
                "reset" => Some(VpnTechnique::Reset),
                "throttle" => Some(VpnTechnique::Throttle),
                "cut-after" => Some(VpnTechnique::CutAfter),
                other => {
                    self.err(off, format!("unknown VPN technique `{other}` (known: drop, reset, throttle, cut-after)"));
                    None
                }
            },
            None => {
                self.err(start, "[[vpn]] needs `technique`".into());
                None
            }
        };
        let throttle_kbps = self.positive_int(t, "throttle_kbps");
        let cut_after = self.positive_int(t, "cut_after");
        if technique == Some(VpnTechnique::Throttle) && throttle_kbps.is_none() {
            self.err(
                start,
                "VPN technique `throttle` needs `throttle_kbps`".into(),
            );
        }
        if technique == Some(VpnTechnique::CutAfter) && cut_after.is_none() {
            self.err(
                start,
                "VPN technique `cut-after` needs `cut_after` (packets)".into(),
            );
        }
        let basis = self.string(t, "basis").map(|x| x.0);
        let source = self.string(t, "source").map(|x| x.0);
        if self.errors.len() > before {
            return None;
        }
        Some(VpnRule {
            id,
            protocols,
            since,
            until,
            technique: technique?,
            throttle_kbps,
            cut_after,
            basis,
            source,
        })
    }
}
