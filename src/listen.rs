//! The one TCP accept loop every listener uses (DNS/TCP, the forward proxy, the transparent
//! listener, the TCP relay, admin).
//!
//! [`bind`] binds an address (a failure is [`StartError::Bind`] naming the listener) and
//! announces it ([`Gateway::announce`]). [`serve`] accepts until its task is aborted, and does
//! the same for every listener:
//! - **admission**: with [`Admit::MappedClients`] a client outside every configured network is
//!   refused at accept: counted and logged through [`Gateway::record_refused`] (with a
//!   rate-limited warning, [`Refusals`]) and closed. Listeners that answer such clients
//!   themselves (the proxy's 403, DNS `REFUSED`) use [`Admit::Everyone`] and record the
//!   refusal where they answer it;
//! - **connection cap**: at most `max_connections` at once ([`ConnLimit`]); excess connections
//!   are closed at once and counted (`blocklab_connections_rejected_total`);
//! - **backoff**: a failed accept (typically `EMFILE`/`ENFILE`, out of file descriptors) is
//!   counted (`blocklab_accept_errors_total`) and the loop sleeps, from 5 ms doubling up to
//!   [`MAX_BACKOFF`], instead of spinning on a listener that stays readable;
//! - **span**: each connection's task runs in a `conn` span with `listener` and `client.addr`,
//!   so every event of the connection (and of the tasks it spawns in that span) names its
//!   client once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use crate::gateway::{Gateway, StartError};
use crate::limits::ConnLimit;
use crate::metrics::Metrics;
use crate::policy::JurisdictionId;

/// The longest pause after failed accepts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(5);

/// Which clients a listener admits at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Every client; the handler decides (and records refusals itself).
    Everyone,
    /// Only clients in a configured `[[clients]]` network; others are refused and counted
    /// under `layer` (the decision log's `layer`, e.g. `relay`).
    MappedClients {
        /// The layer refusals are recorded under.
        layer: &'static str,
    },
}

/// How a listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// The listener's name, as announced (`http`, `relay/tcp`, ...).
    pub name: &'static str,
    /// Connections served at once (0: practically unbounded).
    pub max_connections: usize,
    /// Which clients are admitted.
    pub admit: Admit,
}

/// One accepted, admitted connection, handed to the listener's handler.
#[derive(Debug)]
pub struct Accepted {
    /// The client's stream (`TCP_NODELAY` set).
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    /// The client's jurisdiction when admission looked it up ([`Admit::MappedClients`]).
    pub jurisdiction: Option<JurisdictionId>,
}

/// Binds a TCP listener for `name` on `addr` and announces the bound address.
pub async fn bind(
    gw: &Gateway,
    name: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind {
        addr,
        what: name,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    gw.announce(name, local);
    Ok(listener)
}

/// Accepts connections on `listener` until the task is aborted, and runs `handler` on each
/// admitted one in its own task (see the module doc for what every listener gets).
pub async fn serve<H, F>(gw: Arc<Gateway>, listener: TcpListener, opts: Listen, handler: H)
where
    H: Fn(Accepted) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let Ok(local) = listener.local_addr() else {
        tracing::error!(
            listener = opts.name,
            "listener has no local address; not serving"
        );
        return;
    };
    let slots = ConnLimit::new(opts.max_connections, Arc::clone(&gw.metrics));
    let refusals = match opts.admit {
        Admit::MappedClients { layer } => Some(Refusals::new(opts.name, layer)),
        Admit::Everyone => None,
    };
    let mut backoff = Backoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                backoff.failed(&gw.metrics, opts.name, &e).await;
                continue;
            }
        };
        backoff.succeeded();
        let jurisdiction = match &refusals {
            None => None,
            Some(refusals) => match gw.policy().jurisdiction_for(peer.ip()) {
                Some(j) => Some(j),
                None => {
                    refusals.refuse(&gw, peer, "");
                    drop(stream);
                    continue;
                }
            },
        };
        let Some(permit) = slots.try_acquire(opts.name) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("conn", listener = opts.name, client.addr = %peer);
        let conn = handler(Accepted {
            stream,
            peer,
            local,
            jurisdiction,
        });
        tokio::spawn(
            async move {
                conn.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// The accept-error pause: doubles per consecutive failure up to [`MAX_BACKOFF`], resets on
/// the next accepted connection.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    async fn failed(&mut self, metrics: &Metrics, listener: &'static str, e: &io::Error) {
        Metrics::inc(&metrics.accept_errors);
        let pause = self.next.unwrap_or(MIN_BACKOFF);
        if self.next.is_none() {
            // First failure of a run: one warning; the rest of the run is counted only.
            tracing::warn!(listener, error = %e, "accept failed; backing off");
        } else {
            tracing::debug!(listener, error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
        }
        self.next = Some((pause * 2).min(MAX_BACKOFF));
        tokio::time::sleep(pause).await;
    }

    fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Refused-client accounting for one listener: every refusal is recorded
/// ([`Gateway::record_refused`]: the `refused_clients` metric, a debug event and the decision
/// log); the warning is logged at most once per [`Refusals::WARN_EVERY`] with the number
/// refused since the last one, so a flood of datagrams does not flood the log.
#[derive(Debug)]
pub struct Refusals {
    listener: &'static str,
    layer: &'static str,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last warning, plus one (0: never warned).
    last_warn: AtomicU64,
    since_warn: AtomicU64,
}

impl Refusals {
    /// At most one warning this often.
    pub const WARN_EVERY: Duration = Duration::from_secs(10);

    /// Accounting for refusals on `listener`, recorded under `layer` (e.g. `relay/udp`,
    /// `relay`).
    pub fn new(listener: &'static str, layer: &'static str) -> Refusals {
        Refusals {
            listener,
            layer,
            epoch: Instant::now(),
            last_warn: AtomicU64::new(0),
            since_warn: AtomicU64::new(0),
        }
    }

    /// Records that `client` (outside every configured network) was refused `target`.
    pub fn refuse(&self, gw: &Gateway, client: SocketAddr, target: &str) {
        gw.record_refused(self.layer, client, target);
        self.since_warn.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_warn.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let refused_since_last_warning = self.since_warn.swap(0, Ordering::Relaxed);
            tracing::warn!(
                listener = self.listener,
                client.addr = %client,
                refused_since_last_warning,
                "client not in any [[clients]] network: refused"
            );
        }
    }
}
