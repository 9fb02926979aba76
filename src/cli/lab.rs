//! `blocklab lab up|exec|status|down`: the lab in one command. [`crate::lab`] builds the
//! topology and the origins; this file puts blocklab itself in the gateway namespace
//! (in-process, on a runtime inside the namespace, via [`crate::serve::start`]), prints the
//! lab, waits for SIGINT/SIGTERM and tears everything down.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, LabMode};
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
    if plan.mode == LabMode::Inpath {
        return fail(
            "[lab] mode = \"inpath\" needs the in-path packet engine, which this build does not have yet; use mode = \"proxy\" (the L7 listeners) or \"off\"",
        );
    }
    if let Err(e) = lab::check_privileges() {
        return fail(e);
    }
    // A bad rules file fails in `serve::start`, after which the topology is torn down.
    let gw_cfg = match plan.mode {
        LabMode::Proxy => match plan.gateway_config(&cfg) {
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        },
        LabMode::Off | LabMode::Inpath => None,
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
    let running = match start(&built, gw_cfg) {
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

/// The lab's running parts, stopped in order on drop: gateway first, then origins.
struct Running {
    gateway: Option<(NsThread, crate::serve::Serving)>,
    origins: Option<NsThread>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((thread, serving)) = self.gateway.take() {
            serving.shutdown();
            thread.stop();
        }
        if let Some(t) = self.origins.take() {
            t.stop();
        }
    }
}

fn start(built: &Lab, gw_cfg: Option<Config>) -> Result<Running, String> {
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
    if let Some(cfg) = gw_cfg {
        let (t, serving) = NsThread::spawn(&p.gw_ns, "gateway", 2, move || async move {
            crate::serve::start(cfg).await.map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
        running.gateway = Some((t, serving));
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
            if r.namespaces.is_empty() && r.files.is_empty() && r.stopped.is_none() {
                println!("lab {name}: nothing to remove");
            } else if !r.namespaces.is_empty() || !r.files.is_empty() {
                println!(
                    "lab {name}: removed {} namespace(s) [{}] and {} file(s)",
                    r.namespaces.len(),
                    r.namespaces.join(", "),
                    r.files.len()
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
