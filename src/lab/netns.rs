//! Network namespaces: running `ip` and `nft` in them, moving a thread into one (`setns`), and
//! [`NsThread`], a dedicated thread with its own tokio runtime inside a namespace, which is how
//! the gateway and the origins run in-process in the lab's namespaces (every thread the
//! runtime starts inherits the namespace, so every socket it opens is bound there).

use std::future::Future;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::oneshot;

/// A failed `ip`/`nft` command or namespace operation.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct NetnsError {
    /// The command or operation.
    pub what: String,
    /// Why it failed (the tool's stderr).
    pub reason: String,
}

fn run(cmd: &mut Command, what: String, stdin: Option<&str>) -> Result<String, NetnsError> {
    let fail = |reason: String| NetnsError {
        what: what.clone(),
        reason,
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run(
        Command::new("ip").args(args),
        format!("ip {}", args.join(" ")),
        None,
    )
}

/// `ip -n NS ARGS...`.
pub fn ip_in(ns: &str, args: &[String]) -> Result<String, NetnsError> {
    run(
        Command::new("ip").arg("-n").arg(ns).args(args),
        format!("ip -n {ns} {}", args.join(" ")),
        None,
    )
}

/// Loads an nftables `script` inside `ns`.
pub fn nft_in(ns: &str, script: &str) -> Result<(), NetnsError> {
    run(
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
        format!("nft -f - (in {ns})"),
        Some(script),
    )
    .map(|_| ())
}

/// Every namespace `ip netns list` shows.
pub fn list() -> Vec<String> {
    ip(&["netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Processes with `ns` as their network namespace.
pub fn pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) -> Result<(), NetnsError> {
    let path = format!("/run/netns/{ns}");
    let fail = |reason: String| NetnsError {
        what: format!("entering {ns}"),
        reason,
    };
    let f = std::fs::File::open(&path).map_err(|e| fail(format!("{path}: {e}")))?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| fail(e.to_string()))
}

/// Runs `f` on a short-lived thread inside `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, NetnsError> {
    let owned = ns.to_string();
    let h = std::thread::spawn(move || {
        enter(&owned).map_err(|e| e.to_string())?;
        f()
    });
    h.join()
        .map_err(|_| NetnsError {
            what: format!("thread in {ns}"),
            reason: "panicked".into(),
        })?
        .map_err(|reason| NetnsError {
            what: format!("in {ns}"),
            reason,
        })
}

/// A thread with its own tokio runtime inside a namespace; stopped (runtime dropped, every
/// task cancelled) by [`NsThread::stop`] or on drop.
#[derive(Debug)]
pub struct NsThread {
    stop: Option<oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl NsThread {
    /// Starts a thread in `ns` with a `workers`-thread runtime and runs `start` on it; returns
    /// once `start` finished, with its value. The runtime keeps running `start`'s tasks.
    pub fn spawn<T, F, Fut>(
        ns: &str,
        name: &str,
        workers: usize,
        start: F,
    ) -> Result<(NsThread, T), NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>>,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<T, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let owned = ns.to_string();
        let fail = |reason: String| NetnsError {
            what: format!("{name} in {ns}"),
            reason,
        };
        let join = std::thread::Builder::new()
            .name(format!("lab-{name}"))
            .spawn(move || {
                if let Err(e) = enter(&owned) {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers.max(1))
                    .thread_name(format!("lab-{owned}"))
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let started = start().await;
                    let ok = started.is_ok();
                    let _ = ready_tx.send(started);
                    if ok {
                        let _ = stop_rx.await;
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| fail(e.to_string()))?;
        let mut t = NsThread {
            stop: Some(stop_tx),
            join: Some(join),
        };
        match ready_rx.recv() {
            Ok(Ok(v)) => Ok((t, v)),
            Ok(Err(e)) => {
                t.halt();
                Err(fail(e))
            }
            Err(_) => {
                t.halt();
                Err(fail("the thread ended before it was ready".into()))
            }
        }
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }

    /// Stops the runtime and waits for the thread.
    pub fn stop(mut self) {
        self.halt();
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.halt();
    }
}
