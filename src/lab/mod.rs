//! `blocklab lab`: a censored network on one machine. This module owns the lab's topology
//! (namespaces, veths, addresses, routes, nftables), its record and teardown, the origins and
//! authoritative DNS of the internet namespace, and the lab CA; the CLI (`src/cli/lab.rs`)
//! puts the gateway in the gateway namespace.
//!
//! - [`plan`]: every name, address and command, computed from the config (pure).
//! - [`record`]: what was made, written down before it is made (`/run/blocklab/lab/NAME`).
//! - [`netns`]: `ip`/`nft` in namespaces, `setns`, [`netns::NsThread`] (a runtime in a
//!   namespace).
//! - [`ca`]: the lab CA; [`origins`]: HTTP/HTTPS origins for any name and the authoritative DNS.
//!
//! Nothing is made in the host's namespace: veths are created inside the lab's namespaces, and
//! the nftables table (`proxy`), the in-path TUN device and its policy-routing rules
//! (`inpath`) live in the gateway's, so removing the namespaces (and the `/etc/netns/NS`
//! files) removes everything. [`Lab::teardown`] does that for a lab it built, removing the
//! recorded rules and TUN first; [`down`] does it from the record (and by name prefix) for a
//! lab that crashed.

pub mod ca;
pub mod netns;
pub mod origins;
pub mod plan;
pub mod record;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use plan::{Plan, PlanError, Step};
pub use record::{Info, Object, Record};

/// Why a lab could not be built or removed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The caller lacks the privileges.
    #[error("blocklab lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create network namespaces); run it with sudo")]
    NotRoot,
    /// A lab of this name exists (or left something behind).
    #[error(
        "lab {name} already exists ({what}); remove it with `blocklab lab down --name {name}`"
    )]
    Exists {
        /// The lab's name.
        name: String,
        /// What was found.
        what: String,
    },
    /// A command or namespace operation failed.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// The record or a file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The lab CA could not be made.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Effective capabilities of this process include CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21).
pub fn check_privileges() -> Result<(), LabError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let need = (1u64 << 12) | (1u64 << 21);
    if eff & need == need {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// What a lab named `name` left in the host: its record, its namespaces, and the recorded
/// TUN device and policy-routing rules still present in them.
pub fn leftovers(name: &str) -> Vec<String> {
    let mut v = Vec::new();
    if record::dir_of(name).exists() {
        v.push(format!("record {}", record::dir_of(name).display()));
    }
    let objects = record::objects(name);
    for ns in netns::list() {
        if objects.contains(&Object::Netns(ns.clone())) || owned_by_prefix(name, &ns) {
            v.push(format!("namespace {ns}"));
        }
    }
    v.extend(
        objects
            .iter()
            .filter(|o| matches!(o, Object::Link { .. } | Object::Rule { .. }) && present(o))
            .map(describe),
    );
    v
}

/// Whether a recorded object is still there.
fn present(o: &Object) -> bool {
    let ns_exists = |ns: &str| Path::new("/run/netns").join(ns).exists();
    match o {
        Object::Netns(ns) => ns_exists(ns),
        Object::File(p) | Object::Dir(p) => p.exists(),
        Object::Pid(pid) => alive(*pid),
        Object::Link { ns, dev } => {
            ns_exists(ns) && netns::ip_in(ns, &["link".into(), "show".into(), dev.clone()]).is_ok()
        }
        Object::Rule { ns, pref } => {
            ns_exists(ns)
                && netns::ip_in(
                    ns,
                    &[
                        "rule".into(),
                        "show".into(),
                        "pref".into(),
                        pref.to_string(),
                    ],
                )
                .is_ok_and(|out| !out.trim().is_empty())
        }
    }
}

/// The in-path TUN device or a policy-routing rule as `lab status` and `lab down` name it.
fn describe(o: &Object) -> String {
    match o {
        Object::Link { ns, dev } => format!("TUN {dev} in {ns}"),
        Object::Rule { ns, pref } => format!("rule pref {pref} in {ns}"),
        other => other.line(),
    }
}

/// Whether namespace `ns` looks like lab `name`'s and no other lab's record claims it.
fn owned_by_prefix(name: &str, ns: &str) -> bool {
    let Some(rest) = ns.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    !record::labs().iter().any(|other| {
        other != name
            && record::objects(other)
                .iter()
                .any(|o| matches!(o, Object::Netns(n) if n == ns))
    })
}

/// A lab whose topology is up (namespaces, links, routes, nftables, resolv.conf files, CA).
#[derive(Debug)]
pub struct Lab {
    /// The plan it was built from.
    pub plan: Plan,
    /// The lab CA.
    pub ca: std::sync::Arc<ca::LabCa>,
    /// Where the CA certificate is.
    pub ca_path: PathBuf,
    record: Option<Record>,
    made: Vec<Object>,
}

impl Lab {
    /// Builds the topology of `plan`; on any failure removes what it made and returns why.
    pub fn build(plan: Plan) -> Result<Lab, LabError> {
        check_privileges()?;
        let found = leftovers(&plan.name);
        if !found.is_empty() {
            return Err(LabError::Exists {
                name: plan.name.clone(),
                what: found.join(", "),
            });
        }
        for ns in plan.namespaces() {
            if Path::new("/run/netns").join(&ns).exists() {
                return Err(LabError::Exists {
                    name: plan.name.clone(),
                    what: format!("namespace {ns} exists"),
                });
            }
        }
        let record = match Record::create(&plan.name) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(LabError::Exists {
                    name: plan.name.clone(),
                    what: format!("record {}", record::dir_of(&plan.name).display()),
                })
            }
            Err(e) => return Err(io_err(&record::dir_of(&plan.name))(e)),
        };
        let ca = std::sync::Arc::new(ca::LabCa::new(&plan.name)?);
        let ca_path = record.dir().join("ca.pem");
        let mut lab = Lab {
            plan,
            ca,
            ca_path,
            record: Some(record),
            made: Vec::new(),
        };
        match lab.make() {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.teardown();
                Err(e)
            }
        }
    }

    fn note(&mut self, obj: Object) -> Result<(), LabError> {
        if let Some(r) = &mut self.record {
            let dir = r.dir().to_path_buf();
            r.note(&obj).map_err(io_err(&dir))?;
        }
        self.made.push(obj);
        Ok(())
    }

    fn make(&mut self) -> Result<(), LabError> {
        self.note(Object::Pid(std::process::id()))?;
        std::fs::write(&self.ca_path, self.ca.pem()).map_err(io_err(&self.ca_path))?;
        let steps = self.plan.steps();
        self.apply(steps)
    }

    /// Notes the in-path engine's TUN device; call before opening it in the gateway namespace.
    pub fn note_tun(&mut self) -> Result<(), LabError> {
        self.note(Object::Link {
            ns: self.plan.gw_ns.clone(),
            dev: plan::TUN_DEV.to_string(),
        })
    }

    /// Routes every group's traffic through the TUN device ([`Plan::inpath_steps`]); call once
    /// the engine serves it.
    pub fn route_inpath(&mut self) -> Result<(), LabError> {
        let steps = self.plan.inpath_steps();
        self.apply(steps)
    }

    /// Makes `steps` in order, noting each object before it is made.
    fn apply(&mut self, steps: Vec<Step>) -> Result<(), LabError> {
        for step in steps {
            match step {
                Step::Netns(ns) => {
                    self.note(Object::Netns(ns.clone()))?;
                    netns::ip(&["netns", "add", &ns])?;
                }
                Step::Ip { ns, args } => {
                    netns::ip_in(&ns, &args)?;
                }
                Step::Nft { ns, script } => netns::nft_in(&ns, &script)?,
                Step::Rule { ns, pref, args } => {
                    self.note(Object::Rule {
                        ns: ns.clone(),
                        pref,
                    })?;
                    let mut all =
                        vec!["rule".into(), "add".into(), "pref".into(), pref.to_string()];
                    all.extend(args);
                    netns::ip_in(&ns, &all)?;
                }
                Step::Sysctl { ns, key, value } => {
                    let path = Path::new("/proc/sys").join(&key);
                    netns::in_ns(&ns, move || {
                        std::fs::write(&path, value).map_err(|e| format!("{}: {e}", path.display()))
                    })?;
                }
                Step::File { path, contents } => {
                    if let Some(dir) = path.parent() {
                        if !dir.exists() {
                            self.note(Object::Dir(dir.to_path_buf()))?;
                            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                        }
                    }
                    self.note(Object::File(path.clone()))?;
                    std::fs::write(&path, contents).map_err(io_err(&path))?;
                }
            }
        }
        Ok(())
    }

    /// Writes `lab.json` (what `lab exec` and `lab status` read) and returns it.
    pub fn ready(&self) -> Result<Info, LabError> {
        let p = &self.plan;
        let info = Info {
            name: p.name.clone(),
            mode: format!("{:?}", p.mode).to_lowercase(),
            pid: std::process::id(),
            ca: self.ca_path.clone(),
            gateway: p.gw_ns.clone(),
            internet: (
                p.net_ns.clone(),
                format!("{}/{}", p.net_addr, p.internet.prefix_len()),
            ),
            groups: p
                .groups
                .iter()
                .map(|g| record::GroupInfo {
                    name: g.name.clone(),
                    ns: g.ns.clone(),
                    addr: format!("{}/{}", g.client, g.prefix),
                    gateway: g.gw.to_string(),
                    resolver: p.resolver_of(g).to_string(),
                    jurisdiction: g.jurisdiction.clone(),
                    isp: g.isp.clone(),
                    date: g.date.clone(),
                })
                .collect(),
        };
        if let Some(r) = &self.record {
            r.write_info(&info).map_err(io_err(r.dir()))?;
        }
        Ok(info)
    }

    /// Removes everything the lab made (processes left in its namespaces, the namespaces,
    /// files, the record); returns the problems met, if any.
    pub fn teardown(&mut self) -> Vec<String> {
        let made = std::mem::take(&mut self.made);
        let problems = remove(&made);
        if let Some(r) = self.record.take() {
            let dir = r.dir().to_path_buf();
            drop(r);
            let _ = std::fs::remove_dir_all(&dir);
        }
        problems
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.record.is_some() {
            for p in self.teardown() {
                tracing::warn!("lab teardown: {p}");
            }
        }
    }
}

/// Removes `objects` in reverse order of making: policy-routing rules and the TUN device,
/// then, per namespace, the processes in it are killed and it is deleted, then files and
/// directories are removed.
fn remove(objects: &[Object]) -> Vec<String> {
    let mut problems = Vec::new();
    let me = std::process::id();
    for o in objects.iter().rev() {
        match o {
            Object::Rule { ns, pref } if present(o) => {
                let args = ["rule".into(), "del".into(), "pref".into(), pref.to_string()];
                if let Err(e) = netns::ip_in(ns, &args) {
                    problems.push(e.to_string());
                }
            }
            Object::Link { ns, dev } if present(o) => {
                let args = ["link".into(), "del".into(), dev.clone()];
                if let Err(e) = netns::ip_in(ns, &args) {
                    problems.push(e.to_string());
                }
            }
            Object::Rule { .. } | Object::Link { .. } => {}
            Object::Netns(ns) => {
                for pid in netns::pids(ns) {
                    if pid != me {
                        kill(pid, rustix::process::Signal::KILL);
                    }
                }
                if Path::new("/run/netns").join(ns).exists() {
                    if let Err(e) = netns::ip(&["netns", "del", ns]) {
                        problems.push(e.to_string());
                    }
                }
            }
            Object::File(p) => {
                if let Err(e) = std::fs::remove_file(p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        problems.push(format!("{}: {e}", p.display()));
                    }
                }
            }
            Object::Dir(p) => {
                let _ = std::fs::remove_dir(p);
            }
            Object::Pid(_) => {}
        }
    }
    problems
}

fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Whether process `pid` is a running `blocklab` other than this one.
fn alive(pid: u32) -> bool {
    pid != std::process::id()
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("blocklab"))
            .unwrap_or(false)
}

/// What [`down`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// The `lab up` process that was asked to stop, if one was running.
    pub stopped: Option<u32>,
    /// Namespaces removed.
    pub namespaces: Vec<String>,
    /// Files removed.
    pub files: Vec<PathBuf>,
    /// The in-path TUN device and policy-routing rules removed (described).
    pub routing: Vec<String>,
    /// Problems met.
    pub problems: Vec<String>,
}

/// Removes whatever lab `name` left: a running `lab up` is asked to stop (SIGTERM, then
/// SIGKILL after 5 s); then every recorded object, every namespace named `NAME-*` that no other
/// lab records, their `/etc/netns` files, and the record.
pub fn down(name: &str) -> Result<Removed, LabError> {
    check_privileges()?;
    let mut out = Removed::default();
    let objects = record::objects(name);
    for o in &objects {
        if let Object::Pid(pid) = o {
            if alive(*pid) {
                kill(*pid, rustix::process::Signal::TERM);
                out.stopped = Some(*pid);
                let until = Instant::now() + Duration::from_secs(5);
                while alive(*pid) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if alive(*pid) {
                    kill(*pid, rustix::process::Signal::KILL);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    let mut all = record::objects(name);
    if all.is_empty() {
        all = objects;
    }
    for ns in netns::list() {
        if owned_by_prefix(name, &ns) && !all.contains(&Object::Netns(ns.clone())) {
            all.push(Object::Netns(ns.clone()));
        }
    }
    // /etc/netns/NAME-* directories whose namespace is gone or is ours.
    if let Ok(rd) = std::fs::read_dir("/etc/netns") {
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(ns) = e.file_name().into_string() else {
                continue;
            };
            let ours = all.contains(&Object::Netns(ns.clone()))
                || (owned_by_prefix(name, &ns) && !Path::new("/run/netns").join(&ns).exists());
            if ours {
                let f = e.path().join("resolv.conf");
                if !all.contains(&Object::File(f.clone())) {
                    all.push(Object::Dir(e.path()));
                    all.push(Object::File(f));
                }
            }
        }
    }
    for o in &all {
        match o {
            Object::Netns(n) if Path::new("/run/netns").join(n).exists() => {
                out.namespaces.push(n.clone())
            }
            Object::File(p) if p.exists() => out.files.push(p.clone()),
            Object::Link { .. } | Object::Rule { .. } if present(o) => {
                out.routing.push(describe(o))
            }
            _ => {}
        }
    }
    out.problems = remove(&all);
    let dir = record::dir_of(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    Ok(out)
}
