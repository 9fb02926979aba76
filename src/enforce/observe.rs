//! Observing spliced TCP flows (CONNECT tunnels, the transparent `[tls]` listener) with the
//! VPN detectors: OpenVPN-over-TCP on 443 inside a CONNECT tunnel is a real bypass.
//!
//! An [`Observer`] wraps an [`Inspector`](super::inspect::Inspector) in `observe` mode: the
//! bytes read from each side are fed to it until a detector decides or
//! [`MAX_PACKETS`] reads were seen; the verdict is logged (`vpn verdict`, target
//! `blocklab::vpn`) and counted, and traffic is never changed. [`Observed`] is the stream
//! wrapper that feeds it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::inspect::Inspector;
use crate::config::RelayMode;
use crate::detect::{Detector, Dir, Transport, MAX_PACKETS};
use crate::gateway::Gateway;
use crate::policy::{At, JurisdictionId, Policy};

/// The standard detectors, built once.
fn detectors() -> Arc<[Box<dyn Detector>]> {
    static SET: OnceLock<Arc<[Box<dyn Detector>]>> = OnceLock::new();
    Arc::clone(SET.get_or_init(|| crate::detect::standard(Default::default()).into()))
}

struct State {
    inspector: Inspector,
    policy: Arc<Policy>,
    at: At,
    reads: usize,
}

/// Feeds one spliced flow to the detectors, in observe mode.
pub struct Observer {
    state: Mutex<Option<State>>,
    gw: Arc<Gateway>,
    layer: &'static str,
    client: SocketAddr,
    target: String,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("client", &self.client)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer for the flow `client` -> `server` (jurisdiction `j`), logged under `layer`.
    pub fn new(
        gw: &Arc<Gateway>,
        layer: &'static str,
        client: SocketAddr,
        server: SocketAddr,
        j: JurisdictionId,
        target: &str,
    ) -> Arc<Observer> {
        let inspector = Inspector::new(
            detectors(),
            Transport::Tcp,
            client,
            server,
            j,
            RelayMode::Observe,
        );
        Arc::new(Observer {
            state: Mutex::new(Some(State {
                inspector,
                policy: Arc::clone(&*gw.policy()),
                at: gw.at(),
                reads: 0,
            })),
            gw: Arc::clone(gw),
            layer,
            client,
            target: target.to_string(),
        })
    }

    /// Feeds bytes read in direction `dir`; stops after a verdict or [`MAX_PACKETS`] reads.
    pub fn feed(&self, dir: Dir, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let Some(st) = guard.as_mut() else {
            return;
        };
        st.inspector
            .on_packet(dir, bytes, &st.policy, st.at, Instant::now());
        st.reads += 1;
        if let Some(v) = st.inspector.verdict() {
            self.gw.record_verdict(
                self.layer,
                self.client,
                &self.target,
                v.protocol,
                "observe",
                None,
            );
            *guard = None;
        } else if st.reads >= MAX_PACKETS {
            *guard = None;
        }
    }
}

/// A stream whose reads are fed to an [`Observer`] (if any) in one direction.
#[derive(Debug)]
pub struct Observed<S> {
    inner: S,
    dir: Dir,
    observer: Option<Arc<Observer>>,
}

impl<S> Observed<S> {
    /// `inner`, whose reads travel in direction `dir`.
    pub fn new(inner: S, dir: Dir, observer: Option<Arc<Observer>>) -> Observed<S> {
        Observed {
            inner,
            dir,
            observer,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Observed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(o)) = (&r, &this.observer) {
            o.feed(this.dir, &buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Observed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
