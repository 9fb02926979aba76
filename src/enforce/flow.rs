//! Enacting verdicts on a TCP connection: sniffing its first bytes, reset, swallow, splice,
//! and the per-flow context every step needs ([`FlowCtx`]).
//!
//! Shared by the CONNECT tunnels of the forward proxy and the transparent listener. A reset is
//! a real TCP RST (`SO_LINGER` 0, then close); a swallowed connection is read and discarded
//! until the client gives up or the hold time ends, so the gateway keeps nothing forever; a
//! splice copies both ways, throttled or frozen when the verdict says so.
//!
//! The [`FlowCtx`] carries what the policy needs of the connection: the client's group
//! (jurisdiction, ISP profile, simulated moment, from [`Gateway::client`]) and what the
//! frontend learnt of the connection ([`Known`]: server port, the ClientHello's ECH and JA4,
//! the destination address), so rules with conditions decide on it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{Hello, Known};
use super::freeze::Frozen;
use super::observe::{Observed, Observer};
use super::throttle::Throttled;
use super::verdict::Verdict;
use crate::detect::Dir;
use crate::gateway::Gateway;
use crate::policy::{At, Conn, IspId, JurisdictionId, Policy, RuleId};
use crate::rules::{Port, Proto};
use crate::sniff::client_hello::{self, Sni};
use crate::sniff::http_head::{self, HttpHead};

/// The longest the sniffer waits for a client's first bytes.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Buffer size of each direction of a splice.
const SPLICE_BUF: usize = 64 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS ClientHello, if the censor could read it.
    Tls(Option<Hello>),
    /// A plain HTTP request, with its head if the censor could read it.
    Http(Option<HttpHead>),
    /// Something else (or nothing before the timeout).
    Other,
}

impl Sniffed {
    /// The host name the censor saw, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Sniffed::Tls(Some(h)) => h.sni.as_ref().map(Sni::as_str),
            Sniffed::Http(Some(h)) => Some(&h.host),
            _ => None,
        }
    }
}

/// Classifies `buf` as far as it goes; `None` = undecided.
fn classify(buf: &[u8]) -> Option<Sniffed> {
    if buf.is_empty() {
        return None;
    }
    if client_hello::looks_like_tls(buf) {
        return client_hello::parse(buf)
            .ok()
            .map(|h| Sniffed::Tls(h.as_ref().map(Hello::of)));
    }
    if http_head::looks_like_http(&buf[..buf.len().min(11)]) {
        return http_head::parse(buf).ok().map(Sniffed::Http);
    }
    Some(Sniffed::Other)
}

/// What a censor that gives up on an incomplete message saw.
fn give_up(buf: &[u8]) -> Sniffed {
    match classify(buf) {
        Some(s) => s,
        None if client_hello::looks_like_tls(buf) => Sniffed::Tls(None),
        None if !buf.is_empty() && http_head::looks_like_http(&buf[..buf.len().min(11)]) => {
            Sniffed::Http(None)
        }
        None => Sniffed::Other,
    }
}

/// Reads the client's first bytes into `buf` (which may already hold some) and classifies
/// them. With `reassemble`, reads until the message is complete; without, the censor looks
/// only at the first segment it gets and misses a name split across segments.
pub async fn sniff<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut Vec<u8>,
    reassemble: bool,
) -> Sniffed {
    let work = async {
        let mut chunk = [0u8; 16 * 1024];
        let mut reads = 0usize;
        loop {
            if !buf.is_empty() {
                if let Some(s) = classify(buf) {
                    return s;
                }
                if !reassemble && reads > 0 {
                    return give_up(buf);
                }
                if buf.len() >= client_hello::MAX_HELLO {
                    return give_up(buf);
                }
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return give_up(buf),
                Ok(n) => {
                    reads += 1;
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    };
    match tokio::time::timeout(SNIFF_TIMEOUT, work).await {
        Ok(s) => s,
        Err(_) => give_up(buf),
    }
}

/// Resets `stream`: the client gets a TCP RST.
pub fn reset(stream: TcpStream) {
    if let Err(e) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(error = %e, "SO_LINGER failed; closing normally");
    }
    drop(stream);
}

/// Reads and discards from `stream` until the client closes or `hold` passes.
pub async fn swallow<S: AsyncRead + Unpin>(stream: &mut S, hold: Duration) {
    let work = async {
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(hold, work).await;
}

/// Sends `first` to `upstream`, then copies both ways until either side closes. A throttle
/// verdict limits the client side to its rate in each direction; a freeze verdict stops the
/// flow after its server->client bytes and holds it silently for at most `hold`. The flow's
/// bytes are fed to `observer` (the VPN detectors, observe mode) if given. Returns (up, down)
/// byte counts.
pub async fn splice<C, U>(
    client: C,
    first: &[u8],
    upstream: U,
    v: Verdict,
    hold: Duration,
    observer: Option<std::sync::Arc<Observer>>,
) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(o) = &observer {
        o.feed(Dir::ToServer, first);
    }
    let client = Observed::new(client, Dir::ToServer, observer.clone());
    let upstream = Frozen::new(upstream, v.freeze_after(), hold);
    let mut upstream = Observed::new(upstream, Dir::ToClient, observer);
    let mut client = Throttled::new(client, v.kbps());
    upstream.write_all(first).await?;
    // 64 KiB buffers: fewer syscalls per megabyte than the default 8 KiB.
    let (up, down) = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        SPLICE_BUF,
        SPLICE_BUF,
    )
    .await?;
    Ok((up + first.len() as u64, down))
}

/// One flow's (or one request's) context: the gateway, the policy snapshot it is decided
/// under, the client's group and both ends of the client connection.
#[derive(Debug, Clone)]
pub struct FlowCtx {
    /// The shared gateway context.
    pub gw: Arc<Gateway>,
    /// The policy the flow is decided under (read once, so a reload never splits a flow).
    pub policy: Arc<Policy>,
    /// The client's jurisdiction.
    pub j: JurisdictionId,
    /// The client group's ISP profile.
    pub isp: Option<IspId>,
    /// The simulated moment of the client's group, read when the flow started.
    pub at: At,
    /// The local time of day (minutes) when the moment is a simulated day: the clock's.
    pub minute: Option<u16>,
    /// What is known of the connection so far.
    pub known: Known,
    /// The client.
    pub peer: SocketAddr,
    /// The listener the client connected to.
    pub local: SocketAddr,
}

impl FlowCtx {
    /// The context of a flow from `peer` on `local`; `None` when `peer` is in no configured
    /// network (the caller refuses it in its own way).
    pub fn new(gw: &Arc<Gateway>, peer: SocketAddr, local: SocketAddr) -> Option<FlowCtx> {
        let policy: Arc<Policy> = arc_swap::Guard::into_inner(gw.policy());
        let c = gw.client(&policy, peer.ip())?;
        let minute =
            crate::gateway::clock_minute(c.at, policy.jurisdiction(c.jurisdiction).utc_offset);
        Some(FlowCtx {
            gw: Arc::clone(gw),
            j: c.jurisdiction,
            isp: c.isp,
            at: c.at,
            minute,
            known: Known::default(),
            policy,
            peer,
            local,
        })
    }

    /// Notes the server's TCP port.
    pub fn tcp_port(&mut self, port: u16) {
        self.known.port = Some(Port {
            proto: Proto::Tcp,
            port,
        });
    }

    /// Notes what the ClientHello in `sniffed` showed (ECH, JA4).
    pub fn saw(&mut self, sniffed: &Sniffed) {
        if let Sniffed::Tls(Some(h)) = sniffed {
            self.known.saw(h);
        }
    }

    /// The connection as the policy takes it.
    pub fn conn(&self) -> Conn<'_> {
        self.known.conn(self.isp, self.minute)
    }

    /// Whether the client's jurisdiction reassembles messages split across segments.
    pub fn reassemble(&self) -> bool {
        self.policy.jurisdiction(self.j).reassemble
    }

    /// The blockpage (302 or 451) for a request to `url` blocked by `rule`, for this client's
    /// jurisdiction and ISP; the 451 page links to the gateway's own URL on `self.local`.
    pub fn blockpage(&self, rule: RuleId, url: &str) -> super::blockpage::Page {
        let gateway = format!("http://{}/", self.local);
        super::blockpage::page(&self.policy, self.j, self.isp, rule, url, &gateway)
    }

    /// The verdict for a TLS ClientHello (or CONNECT target) naming `name`.
    pub fn for_name(&self, name: &str) -> Verdict {
        super::verdict::for_name(&self.policy, self.j, name, &self.conn(), self.at)
    }

    /// The verdict for a plain HTTP request for `host` and `path`.
    pub fn for_http(&self, host: &str, path: &str) -> Verdict {
        super::verdict::for_http(&self.policy, self.j, host, path, &self.conn(), self.at)
    }

    /// The verdict for the destination `ip` of a connection for `name` (empty: none seen):
    /// an allow on the name or the address spares it, else the address's own verdict.
    pub fn for_dest(&self, name: &str, ip: IpAddr) -> Verdict {
        super::verdict::for_dest(&self.policy, self.j, name, ip, &self.conn(), self.at)
    }

    /// The verdict for what the first bytes said (`Pass` when they named nothing).
    pub fn for_sniffed(&self, sniffed: &Sniffed) -> Verdict {
        match sniffed {
            Sniffed::Http(Some(h)) => self.for_http(&h.host, &h.path),
            _ => match sniffed.name() {
                Some(name) => self.for_name(name),
                None => Verdict::Pass,
            },
        }
    }

    /// Counts and logs verdict `v` on this flow under `layer`, for `target`.
    pub fn record(&self, v: Verdict, layer: &'static str, target: &str) {
        let decision = v.decision(&self.policy, self.j);
        self.gw
            .record(layer, self.peer, target, &decision, v.technique(), |_| {});
    }

    /// The id of the rule behind `v` (empty for a pass), for logs.
    pub fn rule_id(&self, v: Verdict) -> &str {
        v.rule().map_or("", |r| self.policy.rule(r).id.as_str())
    }

    /// An observer feeding this flow to `server` to the VPN detectors (observe mode).
    pub fn observer(&self, layer: &'static str, server: SocketAddr, target: &str) -> Arc<Observer> {
        Observer::new(&self.gw, layer, self.peer, server, self.j, self.at, target)
    }
}

/// Counts one open connection or flow in the `active_flows` gauge while it lives.
#[derive(Debug)]
pub struct ActiveFlow(std::sync::Arc<crate::metrics::Metrics>);

impl ActiveFlow {
    /// Counts a new flow in `metrics`.
    pub fn new(metrics: &std::sync::Arc<crate::metrics::Metrics>) -> ActiveFlow {
        metrics
            .active_flows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ActiveFlow(std::sync::Arc::clone(metrics))
    }
}

impl Drop for ActiveFlow {
    fn drop(&mut self) {
        self.0
            .active_flows
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stream that first yields bytes already read from it, then reads on.
#[derive(Debug)]
pub struct Prefixed<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `first` (bytes already read from it) put back in front.
    pub fn new(first: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            first,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::client_hello::tests::{hello, records, sni_ext};

    async fn sniff_segments(segments: Vec<Vec<u8>>, reassemble: bool) -> Sniffed {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            for s in segments {
                b.write_all(&s).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            b
        });
        let mut buf = Vec::new();
        let s = sniff(&mut a, &mut buf, reassemble).await;
        drop(writer.await.unwrap());
        s
    }

    #[tokio::test]
    async fn split_hello_is_seen_only_by_a_reassembling_censor() {
        let bytes = records(&hello(&[(0, sni_ext("facebook.com"))]), 16384);
        let (a, b) = bytes.split_at(60);
        let segs = vec![a.to_vec(), b.to_vec()];
        assert_eq!(
            sniff_segments(segs.clone(), true).await.name(),
            Some("facebook.com")
        );
        assert_eq!(sniff_segments(segs, false).await, Sniffed::Tls(None));
        assert_eq!(
            sniff_segments(vec![bytes], false).await.name(),
            Some("facebook.com")
        );
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut p = Prefixed::new(b"hello".to_vec(), a);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[tokio::test]
    async fn http_and_other() {
        let req = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        assert_eq!(
            sniff_segments(vec![req], false).await.name(),
            Some("a.example")
        );
        assert_eq!(
            sniff_segments(vec![b"SSH-2.0-x\r\n".to_vec()], true).await,
            Sniffed::Other
        );
    }
}
