//! `blocklab serve`: orchestration only. Builds the [`Gateway`], starts every configured
//! frontend, waits for signals and shuts down.
//!
//! [`start`] runs in-process and returns a [`Serving`] with the bound addresses (port 0
//! allowed), so tests and `blocklab lab` can run a gateway without scraping logs; [`run`] is
//! what the binary does: start, then SIGINT/SIGTERM shut down and SIGHUP reloads. A bind
//! failure stops the gateway before it serves.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::Config;
pub use crate::gateway::{Gateway, StartError};

/// A running gateway: its shared context, its bound listeners and its tasks.
#[derive(Debug)]
pub struct Serving {
    /// The shared context (policy handle, metrics, decision log, reload).
    pub gateway: Arc<Gateway>,
    tasks: Vec<JoinHandle<()>>,
}

impl Serving {
    /// Every bound listener: `(name, address)`, e.g. `("dns/udp", 127.0.0.1:5353)`.
    pub fn addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.gateway.bound()
    }

    /// The first bound address of `listener` (`dns/udp`, `dns/tcp`, `http`, `tls`, `quic`,
    /// `relay/udp`, `relay/tcp`, `admin`).
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs()
            .into_iter()
            .find(|(name, _)| *name == listener)
            .map(|(_, a)| a)
    }

    /// Stops every task and flushes the decision log.
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
        if let Some(log) = &self.gateway.log {
            // Everything accepted is written before exit.
            log.close();
        }
    }
}

/// Compiles the policy, binds every listener the config names and starts serving.
pub async fn start(config: Config) -> Result<Serving, StartError> {
    let policy = config.compile_policy().map_err(StartError::Other)?;
    let gateway = Gateway::new(config, policy)?;
    let tasks = start_frontends(&gateway).await?;
    Ok(Serving { gateway, tasks })
}

/// Starts every frontend the config names; returns their tasks.
async fn start_frontends(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    tasks.extend(crate::dns::start(gw).await?);
    tasks.extend(crate::http::start(gw).await?);
    tasks.extend(crate::tls::start(gw).await?);
    tasks.extend(crate::relay::start(gw).await?);
    tasks.extend(crate::inpath::tun::start(gw).await?);
    let serving = tasks.len();
    tasks.extend(crate::admin::start(gw).await?);
    tasks.extend(crate::watch::start(gw));
    if serving == 0 {
        return Err(StartError::Other(
            "nothing to serve: the config names no [dns], [http], [tls], [[relay]] listener or [inpath] device"
                .into(),
        ));
    }
    Ok(tasks)
}

/// Runs the gateway until SIGINT or SIGTERM; SIGHUP reloads the rules.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Signal handlers first: a SIGTERM right after the `listening` lines must shut down
    // cleanly, not kill the process.
    let signals = Signals::install();
    let serving = start(config).await?;
    let (date, clients) = serving.gateway.config.summary();
    let listeners: Vec<String> = serving
        .addrs()
        .iter()
        .map(|(name, addr)| format!("{name}={addr}"))
        .collect();
    // One line a newcomer reads: what date, who is who, where to point the tools.
    tracing::info!(%date, %clients, listeners = %listeners.join(" "), "blocklab serving");
    signals.wait(&serving.gateway).await;
    tracing::info!("shutting down");
    serving.shutdown();
    Ok(())
}

/// SIGINT/SIGTERM (shut down) and SIGHUP (reload), installed before the listeners start.
struct Signals {
    #[cfg(unix)]
    streams: Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(t), Ok(i), Ok(h)) => Some((t, i, h)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for a shutdown signal, reloading on each SIGHUP.
    async fn wait(self, gw: &Arc<Gateway>) {
        #[cfg(unix)]
        if let Some((mut term, mut int, mut hup)) = self.streams {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = hup.recv() => {
                        let gw = Arc::clone(gw);
                        // Errors are logged by reload itself.
                        if let Err(e) = tokio::task::spawn_blocking(move || gw.reload()).await {
                            tracing::error!(error = %e, "reload task failed");
                        }
                    }
                }
            }
        }
        let _ = gw;
        let _ = tokio::signal::ctrl_c().await;
    }
}
