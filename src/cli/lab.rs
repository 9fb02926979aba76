//! `blocklab lab up|exec|status|down`: the lab in one command. [`crate::lab`] builds the
//! topology and the origins; this file puts blocklab itself in the gateway namespace
//! (in-process, on a runtime inside the namespace, via [`crate::serve::start`]; in `inpath`
//! mode also the packet engine on a TUN device there, via [`crate::inpath::tun`]), prints the
//! lab, waits for SIGINT/SIGTERM and tears everything down.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, InpathSection, LabMode};
use crate::inpath::tun;
use crate::lab::netns::NsThread;
use crate::lab::{self, plan, record, Info, Lab, Plan};

/// `blocklab lab ...`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the lab and run it in the foreground; SIGINT/SIGTERM tear it down.
    Up {
        /// Lab config (blocklab.toml with `[lab]` and named `[[clients]]`). Without it: the
        /// shipped rules, groups `ru` and `eu` at 2022-03-15, proxy mode, origins.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The lab's name (prefix of its namespaces).
        #[arg(long, short, default_value = plan::DEFAULT_NAME)]
        name: String,
    },
    /// Run CMD in a group's namespace (or `internet`, `gateway`) with the lab CA trusted;
    /// the exit code is CMD's.
    Exec {
        /// The lab's name.
        #[arg(long, short, default_value = plan::DEFAULT_NAME)]
        name: String,
        /// A `[[clients]]` name, `internet` or `gateway`.
        group: String,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Show a lab's groups and whether its namespaces exist.
    Status {
        /// The lab's name.
        #[arg(long, short, default_value = plan::DEFAULT_NAME)]
        name: String,
    },
    /// Remove whatever a lab left behind (after a crash or kill -9), or stop a running one.
    Down {
        /// The lab's name.
        #[arg(long, short, default_value = plan::DEFAULT_NAME)]
        name: String,
    },
}

/// Runs a `lab` subcommand.
pub fn run(cmd: LabCommand) -> ExitCode {
    match cmd {
        LabCommand::Up { config, name } => up(config, &name),
        LabCommand::Exec { name, group, cmd } => exec(&name, &group, &cmd),
        LabCommand::Status { name } => status(&name),
        LabCommand::Down { name } => down(&name),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("blocklab lab: {msg}");
    ExitCode::from(2)
}

fn up(config: Option<PathBuf>, name: &str) -> ExitCode {
    let cfg = match &config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        None => plan::default_config(),
    };
    let plan = match Plan::new(name, &cfg) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if let Err(e) = lab::check_privileges() {
        return fail(e);
    }
    // A bad rules file fails in `serve::start`, after which the topology is torn down.
    let gw = match plan.mode {
        LabMode::Off => None,
        LabMode::Proxy | LabMode::Inpath => {
            let engine = match plan.mode {
                LabMode::Inpath => match plan.inpath_section(&cfg) {
                    Ok(s) => Some(s),
                    Err(e) => return fail(e),
                },
                _ => None,
            };
            match plan.gateway_config(&cfg) {
                Ok(c) => Some((c, engine)),
                Err(e) => return fail(e),
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    // Signal handlers first: a SIGTERM during setup tears down once setup is over.
    let signals = {
        let _g = rt.enter();
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => return fail("cannot install signal handlers"),
        }
    };
    let started = std::time::Instant::now();
    let mut built = match Lab::build(plan) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let running = match start(&mut built, gw) {
        Ok(r) => r,
        Err(e) => {
            let problems = built.teardown();
            for p in problems {
                eprintln!("blocklab lab: teardown: {p}");
            }
            return fail(e);
        }
    };
    let info = match built.ready() {
        Ok(i) => i,
        Err(e) => {
            drop(running);
            built.teardown();
            return fail(e);
        }
    };
    print_ready(&info, started.elapsed());
    let (mut term, mut int) = signals;
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    });
    eprintln!("blocklab lab: {} tearing down", info.name);
    drop(running);
    let problems = built.teardown();
    for p in &problems {
        eprintln!("blocklab lab: teardown: {p}");
    }
    if problems.is_empty() {
        eprintln!("blocklab lab: {} removed", info.name);
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The gateway in its namespace: the frontends and, in `inpath` mode, the engine's task.
type GatewayParts = (crate::serve::Serving, Option<tokio::task::JoinHandle<()>>);

/// The lab's running parts, stopped in order on drop: engine and gateway first (closing the
/// TUN device), then origins.
struct Running {
    gateway: Option<(NsThread, GatewayParts)>,
    origins: Option<NsThread>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((thread, (serving, engine))) = self.gateway.take() {
            if let Some(e) = engine {
                e.abort();
            }
            serving.shutdown();
            thread.stop();
        }
        if let Some(t) = self.origins.take() {
            t.stop();
        }
    }
}

/// Starts the origins and the gateway (with the engine on its TUN device in `inpath` mode,
/// then the policy routing into it).
fn start(built: &mut Lab, gw: Option<(Config, Option<InpathSection>)>) -> Result<Running, String> {
    let p = &built.plan;
    let mut running = Running {
        gateway: None,
        origins: None,
    };
    if p.origins {
        let spec = lab::origins::Spec {
            dns: p.dns_addr(),
            hosts: p.hosts.clone(),
            default_v4: p.net_addr,
            ca: std::sync::Arc::clone(&built.ca),
        };
        let (t, _tasks) =
            NsThread::spawn(&p.net_ns, "origins", 2, move || lab::origins::start(spec))
                .map_err(|e| e.to_string())?;
        running.origins = Some(t);
    }
    let Some((cfg, engine)) = gw else {
        return Ok(running);
    };
    let inpath = engine.is_some();
    if inpath {
        built.note_tun().map_err(|e| e.to_string())?;
    }
    let netns = PathBuf::from("/run/netns").join(&built.plan.gw_ns);
    let (t, parts) = NsThread::spawn(&built.plan.gw_ns, "gateway", 2, move || async move {
        let serving = crate::serve::start(cfg).await.map_err(|e| e.to_string())?;
        let Some(section) = engine else {
            return Ok((serving, None));
        };
        let dev = tun::open_in(&netns, &section.device, section.mtu).map_err(|e| e.to_string())?;
        tracing::info!(listener = "inpath", device = %section.device, "listening");
        let task = tokio::spawn(tun::run(
            dev,
            std::sync::Arc::clone(&serving.gateway),
            tun::engine_config(&section),
        ));
        Ok((serving, Some(task)))
    })
    .map_err(|e| e.to_string())?;
    running.gateway = Some((t, parts));
    if inpath {
        built.route_inpath().map_err(|e| e.to_string())?;
    }
    Ok(running)
}

fn print_ready(info: &Info, took: std::time::Duration) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "lab {} ready", info.name);
    for g in &info.groups {
        let _ = writeln!(out, "{}", Info::group_line(g));
    }
    let _ = writeln!(
        out,
        "  {:<10} netns {:<20} addr {:<18} origins and DNS for every name",
        "internet", info.internet.0, info.internet.1
    );
    let _ = writeln!(
        out,
        "  mode {}, lab CA {}, up in {} ms; try: blocklab lab exec{} {} -- curl https://example.org/",
        info.mode,
        info.ca.display(),
        took.as_millis(),
        if info.name == plan::DEFAULT_NAME {
            String::new()
        } else {
            format!(" --name {}", info.name)
        },
        info.groups.first().map_or("internet", |g| g.name.as_str()),
    );
    let _ = out.flush();
}

fn exec(name: &str, group: &str, cmd: &[String]) -> ExitCode {
    let Some(info) = record::info(name) else {
        return fail(format!(
            "no lab {name} is running (start one with `blocklab lab up --name {name}`)"
        ));
    };
    let ns = match group {
        "internet" => info.internet.0.clone(),
        "gateway" => info.gateway.clone(),
        g => match info.groups.iter().find(|x| x.name == g) {
            Some(x) => x.ns.clone(),
            None => {
                let names: Vec<&str> = info.groups.iter().map(|g| g.name.as_str()).collect();
                return fail(format!(
                    "lab {name} has no group `{g}` (groups: {}; or internet, gateway)",
                    names.join(", ")
                ));
            }
        },
    };
    let ca = info.ca.display().to_string();
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(cmd)
        .env("SSL_CERT_FILE", &ca)
        .env("CURL_CA_BUNDLE", &ca)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("BLOCKLAB_LAB", name)
        .status();
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s
                .code()
                .or_else(|| s.signal().map(|sig| 128 + sig))
                .unwrap_or(1);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => fail(format!("cannot run ip netns exec: {e}")),
    }
}

fn status(name: &str) -> ExitCode {
    let present = lab::netns::list();
    match record::info(name) {
        Some(info) => {
            let running = std::fs::metadata(format!("/proc/{}", info.pid)).is_ok();
            println!(
                "lab {} {} (pid {}, mode {})",
                info.name,
                if running { "running" } else { "NOT running" },
                info.pid,
                info.mode
            );
            for g in &info.groups {
                let mark = if present.contains(&g.ns) {
                    ""
                } else {
                    " (missing)"
                };
                println!("{}{mark}", Info::group_line(g));
            }
            println!(
                "  internet   netns {} addr {}",
                info.internet.0, info.internet.1
            );
            ExitCode::SUCCESS
        }
        None => {
            let left = lab::leftovers(name);
            if left.is_empty() {
                println!("no lab {name}");
            } else {
                println!(
                    "no lab {name} running; left behind: {} (remove with `blocklab lab down --name {name}`)",
                    left.join(", ")
                );
            }
            ExitCode::from(1)
        }
    }
}

fn down(name: &str) -> ExitCode {
    if let Err(e) = plan::check_name(name) {
        return fail(e);
    }
    match lab::down(name) {
        Ok(r) => {
            if let Some(pid) = r.stopped {
                println!("stopped lab {name} (pid {pid})");
            }
            if r.namespaces.is_empty()
                && r.files.is_empty()
                && r.routing.is_empty()
                && r.stopped.is_none()
            {
                println!("lab {name}: nothing to remove");
            } else if !r.namespaces.is_empty() || !r.files.is_empty() || !r.routing.is_empty() {
                println!(
                    "lab {name}: removed {} namespace(s) [{}] and {} file(s){}",
                    r.namespaces.len(),
                    r.namespaces.join(", "),
                    r.files.len(),
                    if r.routing.is_empty() {
                        String::new()
                    } else {
                        format!(", and first {}", r.routing.join(", "))
                    }
                );
            }
            for p in &r.problems {
                eprintln!("blocklab lab: {p}");
            }
            if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(e),
    }
}
