//! Jurisdiction rules files (`rules/*.toml`): the data model, the parser and the importers.
//!
//! One TOML file per jurisdiction (README, "Rules"): a `[jurisdiction]` header, `[[rule]]`
//! tables saying what is blocked, since and until when, how, on what basis, and `[[vpn]]`
//! tables fed by the detectors. Parsing walks the TOML document by hand (with `toml_edit`, which
//! keeps spans) so that *every* mistake is reported as `path:line:column: message`, not only the
//! first. Imports (`import = { path, format }`) are read and checked here, line by line; the
//! policy compiler later streams their entries with [`Import::for_each`].

mod cond;
pub mod csv;
mod date;
mod diag;
mod import;
mod name;
mod parse;
mod technique;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use cond::{check_ja4, parse_hhmm, Port, PortRange, Proto, Window};
pub use date::{parse_utc_offset, DateError, Day};
pub use diag::{Diagnostic, RulesError};
pub use import::{url_host, Entry, Import, ImportFormat};
pub use ipnet::IpNet;
pub use name::{normalize_domain, NameError, MAX_NAME_LEN};
pub use technique::{Layer, Technique, Techniques, UnknownTechnique};

/// The rules shipped with blocklab, embedded in the binary: `(path relative to rules/, text)`.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("eu.toml", include_str!("../../rules/eu.toml")),
    ("ru.toml", include_str!("../../rules/ru.toml")),
    (
        "ru/registry.lst",
        include_str!("../../rules/ru/registry.lst"),
    ),
    ("ru/ipsum.lst", include_str!("../../rules/ru/ipsum.lst")),
    (
        "ru/foreign-hosting.lst",
        include_str!("../../rules/ru/foreign-hosting.lst"),
    ),
    ("ru/ovh.lst", include_str!("../../rules/ru/ovh.lst")),
];

/// All the rules files of one rules directory, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// One entry per jurisdiction file, sorted by file name.
    pub files: Vec<RulesFile>,
}

/// One jurisdiction's rules file.
#[derive(Debug, Clone)]
pub struct RulesFile {
    /// Where the file was read from (`embedded:rules/ru.toml` for the shipped rules).
    pub path: String,
    /// The `[jurisdiction]` header.
    pub jurisdiction: Jurisdiction,
    /// The `[[rule]]` tables, in file order (order breaks ties between equally specific rules).
    pub rules: Vec<Rule>,
    /// The `[[vpn]]` tables, in file order.
    pub vpn: Vec<VpnRule>,
}

/// The `[jurisdiction]` header of a rules file.
#[derive(Debug, Clone, PartialEq)]
pub struct Jurisdiction {
    /// Short code clients are mapped to (`ru`, `eu`).
    pub code: String,
    /// Human-readable name.
    pub name: String,
    /// The blocking authority (`Roskomnadzor`).
    pub authority: Option<String>,
    /// Seconds east of UTC; a rule's date starts at local midnight.
    pub utc_offset: i32,
    /// Addresses returned by `dns-blockpage`.
    pub dns_blockpage: Vec<IpAddr>,
    /// Redirect target of `http-blockpage`; `None` serves a local 451 page.
    pub http_blockpage: Option<String>,
    /// Whether the censor reassembles a ClientHello split across segments (default true).
    pub reassemble: bool,
    /// `[[isp]]` profiles: per-ISP blockpages and technique overrides (at most 64).
    pub isps: Vec<IspProfile>,
}

/// Most `[[isp]]` profiles one jurisdiction may have (rules name them in a 64-bit mask).
pub const MAX_ISPS: usize = 64;

/// One `[[isp]]` profile of a jurisdiction: how one ISP enacts the jurisdiction's blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct IspProfile {
    /// Short id, named by rules' `isp` conditions and the gateway's `[[clients]] isp`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Addresses this ISP answers for `dns-blockpage`; empty = the jurisdiction's.
    pub dns_blockpage: Vec<IpAddr>,
    /// This ISP's `http-blockpage` redirect target; `None` = the jurisdiction's.
    pub http_blockpage: Option<String>,
    /// Techniques this ISP enacts differently: `(as the rule says, as this ISP does it)`.
    pub overrides: Vec<(Technique, Technique)>,
    /// Where the profile's facts (blockpages, overrides) come from.
    pub source: Option<String>,
}

/// One `[[rule]]`: what it matches, when, and how it blocks (or allows).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rule {
    /// Unique id, named in every decision the rule causes.
    pub id: String,
    /// Suffix matches: the name and all its subdomains; `.` is the root (every name).
    pub domains: Vec<String>,
    /// Exact name matches.
    pub exact: Vec<String>,
    /// Substring matches over the whole name (as sloppy as the real censor was).
    pub substrings: Vec<String>,
    /// Address blocks (IPv4 and IPv6 CIDRs).
    pub ips: Vec<IpNet>,
    /// URL prefixes (used when TLS interception or plain HTTP exposes the path).
    pub urls: Vec<String>,
    /// First day the rule applies (local midnight); `None` = always.
    pub since: Option<Day>,
    /// First day the rule no longer applies; `None` = open-ended.
    pub until: Option<Day>,
    /// How the block is enacted.
    pub techniques: Techniques,
    /// Rate for `throttle`, in kbit/s.
    pub throttle_kbps: Option<u32>,
    /// An exception: an allow rule beats every block.
    pub allow: bool,
    /// Legal basis, and any uncertainty about the facts.
    pub basis: Option<String>,
    /// Where the facts come from.
    pub source: Option<String>,
    /// Entries read from a list file.
    pub import: Option<Import>,
    /// Condition: only connections to these protocol/port ranges (empty = any).
    pub ports: Vec<PortRange>,
    /// Condition: only ClientHellos with (`true`) or without (`false`) an ECH extension.
    pub ech: Option<bool>,
    /// Condition: only ClientHellos with one of these JA4 fingerprints (lowercase; empty = any).
    pub ja4: Vec<String>,
    /// Condition: only at these local times of day (empty = all day).
    pub hours: Vec<Window>,
    /// Condition: only for clients of these `[[isp]]` profiles (empty = every client).
    pub isp: Vec<String>,
    /// For `freeze`: server->client bytes relayed before the flow silently stops.
    pub freeze_after_bytes: Option<u32>,
    /// In-path: seconds the same client/server/port stays blocked after the rule fired.
    pub residual_secs: Option<u32>,
}

impl Rule {
    /// Whether the rule has any condition (`ports`, `ech`, `ja4`, `hours`, `isp`).
    pub fn has_conditions(&self) -> bool {
        !self.ports.is_empty()
            || self.ech.is_some()
            || !self.ja4.is_empty()
            || !self.hours.is_empty()
            || !self.isp.is_empty()
    }
}

/// What a `[[vpn]]` rule does to a flow a detector identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpnTechnique {
    /// Stop forwarding the flow.
    Drop,
    /// Reset the (TCP) flow.
    Reset,
    /// Limit the flow to `throttle_kbps`.
    Throttle,
    /// Let `cut_after` packets through, then drop.
    CutAfter,
}

impl VpnTechnique {
    /// The name used in rules files.
    pub const fn as_str(self) -> &'static str {
        match self {
            VpnTechnique::Drop => "drop",
            VpnTechnique::Reset => "reset",
            VpnTechnique::Throttle => "throttle",
            VpnTechnique::CutAfter => "cut-after",
        }
    }
}

/// The protocol names `[[vpn]]` rules and the detectors share.
pub const VPN_PROTOCOLS: &[&str] = &[
    "wireguard",
    "openvpn",
    "ike",
    "pptp",
    "fully-encrypted",
    "endpoints",
    // bypass protocols (src/detect/bypass.rs)
    "softether",
    "ssh",
    "tor",
    "tls-in-tls",
];

/// One `[[vpn]]` rule: VPN protocols blocked once a detector names them.
#[derive(Debug, Clone, PartialEq)]
pub struct VpnRule {
    /// Id (given, or `<code>-vpn-<n>`).
    pub id: String,
    /// Detector verdicts this rule applies to (see [`VPN_PROTOCOLS`]).
    pub protocols: Vec<String>,
    /// First day the rule applies.
    pub since: Option<Day>,
    /// First day it no longer applies.
    pub until: Option<Day>,
    /// What happens to the flow.
    pub technique: VpnTechnique,
    /// Rate for `throttle`.
    pub throttle_kbps: Option<u32>,
    /// Packets let through before `cut-after` drops the flow.
    pub cut_after: Option<u32>,
    /// Legal basis and uncertainty.
    pub basis: Option<String>,
    /// Where the facts come from.
    pub source: Option<String>,
}

/// Reads files for the parser: the real filesystem or the embedded shipped rules.
trait Reader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    fn display(&self, path: &Path) -> String;
}

struct FsReader;

impl Reader for FsReader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn display(&self, path: &Path) -> String {
        path.display().to_string()
    }
}

struct EmbeddedReader;

impl Reader for EmbeddedReader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let key = path.to_string_lossy();
        EMBEDDED
            .iter()
            .find(|(p, _)| *p == key)
            .map(|(_, text)| text.as_bytes().to_vec())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not embedded"))
    }
    fn display(&self, path: &Path) -> String {
        format!("embedded:rules/{}", path.display())
    }
}

impl RuleSet {
    /// The jurisdiction codes of the files, in order, joined by `, ` (for error messages).
    pub fn codes(&self) -> String {
        self.files
            .iter()
            .map(|f| f.jurisdiction.code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The shipped rules, embedded in the binary.
    pub fn embedded() -> Result<RuleSet, RulesError> {
        let mut set = RuleSet::default();
        let mut errors = RulesError::default();
        for (path, _) in EMBEDDED.iter().filter(|(p, _)| p.ends_with(".toml")) {
            match parse::parse_file(Path::new(path), &EmbeddedReader) {
                Ok(f) => set.files.push(f),
                Err(e) => errors.extend(e),
            }
        }
        set.finish(errors)
    }

    /// Every `*.toml` file directly inside `dir` (imports are resolved relative to it).
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RulesError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            RulesError::single(Diagnostic::file(&dir.display().to_string(), e.to_string()))
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(RulesError::single(Diagnostic::file(
                &dir.display().to_string(),
                "no rules files (*.toml) in this directory".to_string(),
            )));
        }
        Self::load_files(&paths)
    }

    /// The given rules files (each file's imports are resolved relative to its directory).
    pub fn load_files(paths: &[PathBuf]) -> Result<RuleSet, RulesError> {
        let mut set = RuleSet::default();
        let mut errors = RulesError::default();
        for p in paths {
            match parse::parse_file(p, &FsReader) {
                Ok(f) => set.files.push(f),
                Err(e) => errors.extend(e),
            }
        }
        set.finish(errors)
    }

    /// Parses one rules file from text; `path` names it in errors and anchors its imports.
    pub fn parse_str(path: &Path, text: &str) -> Result<RulesFile, RulesError> {
        parse::parse_text(path, text, &FsReader)
    }

    /// Cross-file checks (duplicate codes and rule ids), then the result.
    fn finish(self, mut errors: RulesError) -> Result<RuleSet, RulesError> {
        let mut codes = std::collections::HashMap::new();
        let mut ids = std::collections::HashMap::new();
        for f in &self.files {
            if let Some(prev) = codes.insert(f.jurisdiction.code.as_str(), f.path.as_str()) {
                errors.push(Diagnostic::file(
                    &f.path,
                    format!(
                        "jurisdiction `{}` is also defined in {prev}",
                        f.jurisdiction.code
                    ),
                ));
            }
            for r in &f.rules {
                if let Some(prev) = ids.insert(r.id.as_str(), f.path.as_str()) {
                    if prev != f.path {
                        errors.push(Diagnostic::file(
                            &f.path,
                            format!("duplicate rule id `{}` (also in {prev})", r.id),
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// The file of jurisdiction `code`.
    pub fn jurisdiction(&self, code: &str) -> Option<&RulesFile> {
        self.files.iter().find(|f| f.jurisdiction.code == code)
    }
}
