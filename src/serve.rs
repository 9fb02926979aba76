//! `blocklab serve`: builds the shared gateway state and starts every configured frontend.
//!
//! The [`Gateway`] owns the config and the current policy behind an atomic pointer
//! (`arc-swap`): a reload compiles a new policy off the serving path and swaps it in, or keeps
//! the old one if the new rules fail. Frontends read the policy once per request
//! ([`Gateway::policy`]), so in-flight requests finish on the policy they started with. Each
//! frontend's `start` binds its listeners (logging one `listening` line per bound address,
//! port 0 allowed) and spawns its tasks; a bind failure stops the gateway before it serves.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::policy::{At, Policy};

/// State shared by every frontend.
#[derive(Debug)]
pub struct Gateway {
    /// The config the gateway was started with.
    pub config: Config,
    /// The upstream resolver (`[dns] upstream`, or the system resolver).
    pub upstream: crate::resolve::Upstream,
    policy: ArcSwap<Policy>,
}

impl Gateway {
    /// A gateway serving `policy` under `config`.
    pub fn new(config: Config, policy: Policy) -> Result<Arc<Gateway>, StartError> {
        let servers = config.dns.as_ref().map(|d| d.upstream.clone()).unwrap_or_default();
        let upstream = crate::resolve::Upstream::new(&servers)
            .map_err(StartError::Other)?
            .with_overrides(config.hosts.clone());
        Ok(Arc::new(Gateway {
            config,
            upstream,
            policy: ArcSwap::from_pointee(policy),
        }))
    }

    /// The current policy (a cheap, lock-free snapshot).
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// The simulated moment for decisions made now.
    pub fn at(&self) -> At {
        self.config.at()
    }

    /// Recompiles the rules and swaps the new policy in; on error the old one keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let new = self.config.compile_policy()?;
        self.policy.store(Arc::new(new));
        tracing::info!("policy reloaded");
        Ok(())
    }
}

/// Logs a bound listener in the stable form tests and operators read:
/// `listening listener=dns/udp addr=127.0.0.1:5353`.
pub fn announce(listener: &str, addr: SocketAddr) {
    tracing::info!(listener, %addr, "listening");
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something else (config, upstream setup).
    #[error("{0}")]
    Other(String),
}

/// Starts every frontend the config names; returns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    tasks.extend(crate::dns::start(gw).await?);
    tasks.extend(crate::http::start(gw).await?);
    tasks.extend(crate::tls::start(gw).await?);
    tasks.extend(crate::relay::start(gw).await?);
    if tasks.is_empty() {
        return Err(StartError::Other(
            "nothing to serve: the config names no [dns], [http], [tls] or [[relay]] listener".into(),
        ));
    }
    Ok(tasks)
}

/// Runs the gateway until SIGINT or SIGTERM; SIGHUP reloads the rules.
pub async fn run(config: Config) -> Result<(), StartError> {
    let policy = config.compile_policy().map_err(StartError::Other)?;
    let gw = Gateway::new(config, policy)?;
    let tasks = start(&gw).await?;
    wait_for_signals(&gw).await;
    tracing::info!("shutting down");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(gw: &Arc<Gateway>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let gw = Arc::clone(gw);
                match tokio::task::spawn_blocking(move || gw.reload()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "reload failed; the old policy keeps serving"),
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_gw: &Arc<Gateway>) {
    let _ = tokio::signal::ctrl_c().await;
}
