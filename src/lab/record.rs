//! The record of a lab: every object `lab up` made, written down *before* it is made, in
//! `/run/blocklab/lab/NAME/objects`, so teardown (and `lab down` after a kill -9) removes
//! exactly what was made. The directory also holds the lab CA certificate (`ca.pem`) and, once
//! the lab is ready, `lab.json` (groups and addresses, for `lab exec` and `lab status`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where lab records live (a tmpfs: a reboot, which also removes namespaces, clears it).
pub const RUN_DIR: &str = "/run/blocklab/lab";

/// One object a lab made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A network namespace (`ip netns add`); its veths and nftables tables go with it.
    Netns(String),
    /// A file.
    File(PathBuf),
    /// A directory (removed when empty).
    Dir(PathBuf),
    /// The `lab up` process.
    Pid(u32),
    /// A device made in a lab namespace outside the plan's steps (the in-path TUN).
    Link {
        /// The namespace.
        ns: String,
        /// The device.
        dev: String,
    },
    /// A policy-routing rule in a lab namespace, by preference.
    Rule {
        /// The namespace.
        ns: String,
        /// The rule's preference.
        pref: u32,
    },
}

impl Object {
    /// The object's line in the record.
    pub(crate) fn line(&self) -> String {
        match self {
            Object::Netns(n) => format!("netns {n}"),
            Object::File(p) => format!("file {}", p.display()),
            Object::Dir(p) => format!("dir {}", p.display()),
            Object::Pid(p) => format!("pid {p}"),
            Object::Link { ns, dev } => format!("link {ns} {dev}"),
            Object::Rule { ns, pref } => format!("rule {ns} {pref}"),
        }
    }

    fn parse(line: &str) -> Option<Object> {
        let (kind, rest) = line.split_once(' ')?;
        Some(match kind {
            "netns" => Object::Netns(rest.to_string()),
            "file" => Object::File(rest.into()),
            "dir" => Object::Dir(rest.into()),
            "pid" => Object::Pid(rest.parse().ok()?),
            "link" => {
                let (ns, dev) = rest.split_once(' ')?;
                Object::Link {
                    ns: ns.to_string(),
                    dev: dev.to_string(),
                }
            }
            "rule" => {
                let (ns, pref) = rest.split_once(' ')?;
                Object::Rule {
                    ns: ns.to_string(),
                    pref: pref.parse().ok()?,
                }
            }
            _ => return None,
        })
    }
}

/// What `lab exec` and `lab status` need to know about a running lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Info {
    /// The lab's name.
    pub name: String,
    /// `proxy`, `off` or `inpath`.
    pub mode: String,
    /// The `lab up` process.
    pub pid: u32,
    /// The lab CA certificate.
    pub ca: PathBuf,
    /// The gateway namespace.
    pub gateway: String,
    /// The internet namespace and its address.
    pub internet: (String, String),
    /// The client groups.
    pub groups: Vec<GroupInfo>,
}

/// One group of [`Info`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// The client's address with prefix.
    pub addr: String,
    /// The gateway's address on the group's link.
    pub gateway: String,
    /// Its resolver.
    pub resolver: String,
    /// Jurisdiction.
    pub jurisdiction: String,
    /// ISP profile, if any.
    pub isp: Option<String>,
    /// Simulated date, if fixed.
    pub date: Option<String>,
}

impl Info {
    /// The line `lab up` and `lab status` print for a group.
    pub fn group_line(g: &GroupInfo) -> String {
        format!(
            "  {:<10} netns {:<20} addr {:<18} gateway {:<15} resolver {:<15} jurisdiction {:<4} isp {:<8} date {}",
            g.name,
            g.ns,
            g.addr,
            g.gateway,
            g.resolver,
            g.jurisdiction,
            g.isp.as_deref().unwrap_or("-"),
            g.date.as_deref().unwrap_or("today")
        )
    }
}

/// The record directory of lab `name`.
pub fn dir_of(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// An open record, appended to as objects are made.
#[derive(Debug)]
pub struct Record {
    dir: PathBuf,
    file: File,
}

impl Record {
    /// Creates the record of lab `name`; fails with `AlreadyExists` if one is there.
    pub fn create(name: &str) -> io::Result<Record> {
        std::fs::create_dir_all(RUN_DIR)?;
        let dir = dir_of(name);
        std::fs::create_dir(&dir)?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join("objects"))?;
        Ok(Record { dir, file })
    }

    /// The record's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Notes `obj` (call before making it).
    pub fn note(&mut self, obj: &Object) -> io::Result<()> {
        writeln!(self.file, "{}", obj.line())?;
        self.file.flush()
    }

    /// Writes `lab.json`.
    pub fn write_info(&self, info: &Info) -> io::Result<()> {
        let text = serde_json::to_string_pretty(info).map_err(io::Error::other)?;
        std::fs::write(self.dir.join("lab.json"), text)
    }
}

/// The objects recorded for lab `name` (empty if there is no record).
pub fn objects(name: &str) -> Vec<Object> {
    std::fs::read_to_string(dir_of(name).join("objects"))
        .map(|t| t.lines().filter_map(Object::parse).collect())
        .unwrap_or_default()
}

/// The `lab.json` of lab `name`, if it got as far as ready.
pub fn info(name: &str) -> Option<Info> {
    let text = std::fs::read_to_string(dir_of(name).join("lab.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Names of every lab with a record.
pub fn labs() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip() {
        for o in [
            Object::Netns("a-gw".into()),
            Object::File("/etc/netns/a-ru/resolv.conf".into()),
            Object::Dir("/etc/netns/a-ru".into()),
            Object::Pid(42),
            Object::Link {
                ns: "a-gw".into(),
                dev: "inpath0".into(),
            },
            Object::Rule {
                ns: "a-gw".into(),
                pref: 100,
            },
        ] {
            assert_eq!(Object::parse(&o.line()), Some(o));
        }
        assert_eq!(Object::parse("junk"), None);
        assert_eq!(Object::parse("rule a-gw x"), None);
    }
}
