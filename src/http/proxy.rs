//! One forward-proxy client connection: the hyper service for absolute-form requests and
//! `CONNECT`, enacting the verdicts of `crate::tls::verdict`.
//!
//! Plain HTTP: URL verdict (blockpage, reset, drop, throttle), then the origin's addresses
//! (`ip-drop`, `ip-reset`), then the request goes to the origin over a connection kept for the
//! client connection's next request to the same origin. CONNECT: the target name is checked
//! first; a TLS-layer block answers 200 and enacts after the tunnel's first bytes (the
//! ClientHello), as an on-path censor does. Otherwise the first bytes are sniffed (SNI or
//! Host, with the jurisdiction's `reassemble` setting) and checked too before splicing.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::blockpage;
use crate::gateway::Gateway;
use crate::policy::{JurisdictionId, Policy};
use crate::tls::flow::{self, Sniffed};
use crate::tls::throttle::Throttled;
use crate::tls::verdict::{self, Verdict};

/// The response body type of the proxy.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long connecting to an origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request ended without a response (the connection is closed or reset).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection was reset on purpose (`tls-reset`, `ip-reset`).
    #[error("connection reset by policy")]
    Reset,
    /// The connection was swallowed on purpose (`tls-drop`, `ip-drop`) and is now closed.
    #[error("connection dropped by policy")]
    Dropped,
}

/// Hop-by-hop headers, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// The origin connection kept for the next request of the same client connection.
struct Pooled {
    key: (String, IpAddr, u16, Option<u32>),
    sender: SendRequest<Incoming>,
}

/// One client connection's state.
struct Conn {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    local: SocketAddr,
    /// A second handle on the client socket, to turn a close into a reset.
    reset: Option<socket2::Socket>,
    pool: Mutex<Option<Pooled>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // An unthrottled origin connection outlives its client connection in the shared pool.
        if let Some(p) = self.pool.get_mut().take() {
            let (host, ip, port, kbps) = p.key;
            if kbps.is_none() {
                super::pool::Pool::global().put((host, ip, port), p.sender);
            }
        }
    }
}

/// Serves one client connection until it closes.
pub async fn serve_connection(
    gw: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let _active = flow::ActiveFlow::new(&gw.metrics);
    let reset = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(socket2::Socket::from);
    let idle = gw.config.http.as_ref().map_or(60, |h| h.idle_secs);
    let conn = Arc::new(Conn {
        gw,
        peer,
        local,
        reset,
        pool: Mutex::new(None),
    });
    let svc = service_fn(move |req| {
        let c = Arc::clone(&conn);
        async move { c.handle(req).await }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(idle))
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended");
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn refuse(gw: &Gateway, peer: SocketAddr, target: &str) -> Response<Body> {
    gw.record_refused("http", peer, target);
    tracing::info!(client.addr = %peer, decision = "refused", "client is in no configured network");
    full(
        StatusCode::FORBIDDEN,
        "403 Forbidden: this gateway serves only its lab's client networks\n",
    )
}

/// `host` without IPv6 brackets.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Conn {
    fn hold(&self) -> Duration {
        Duration::from_secs(self.gw.config.http.as_ref().map_or(120, |h| h.hold_secs))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let policy: Arc<Policy> = arc_swap::Guard::into_inner(self.gw.policy());
        let Some(j) = policy.jurisdiction_for(self.peer.ip()) else {
            return Ok(refuse(&self.gw, self.peer, &req.uri().to_string()));
        };
        if req.method() == Method::CONNECT {
            return self.connect(policy, j, req).await;
        }
        if req.uri().scheme_str() != Some("http") || req.uri().host().is_none() {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: send absolute-form http:// requests or CONNECT to this proxy\n",
            ));
        }
        self.forward(policy, j, req).await
    }

    /// Enacts a blocking verdict on a plain HTTP request.
    async fn block(
        &self,
        policy: &Policy,
        j: JurisdictionId,
        v: Verdict,
        url: &str,
    ) -> Result<Response<Body>, ProxyError> {
        v.record(&self.gw, policy, j, "http", self.peer, url);
        let rule = v.rule().map(|r| policy.rule(r).id.as_str()).unwrap_or("");
        tracing::info!(client.addr = %self.peer, url, decision = v.name(), rule, "blocked");
        match v {
            Verdict::Blockpage { rule } => {
                let gateway = format!("http://{}/", self.local);
                let pg = blockpage::page(policy, j, rule, url, &gateway);
                let mut r = full(
                    StatusCode::from_u16(pg.status).unwrap_or(StatusCode::FORBIDDEN),
                    pg.body,
                );
                for (k, val) in pg.headers {
                    if let Ok(val) = HeaderValue::from_str(&val) {
                        r.headers_mut().insert(k, val);
                    }
                }
                Ok(r)
            }
            Verdict::Reset { .. } => {
                self.arm_reset();
                Err(ProxyError::Reset)
            }
            _ => {
                tokio::time::sleep(self.hold()).await;
                Err(ProxyError::Dropped)
            }
        }
    }

    /// Makes the client connection's close a reset.
    fn arm_reset(&self) {
        if let Some(s) = &self.reset {
            if let Err(e) = s.set_linger(Some(Duration::ZERO)) {
                tracing::debug!(error = %e, "SO_LINGER failed");
            }
        }
    }

    /// Resolves `host` and checks its address; `Ok(addr)` when the connection may go on.
    async fn resolve(
        &self,
        policy: &Policy,
        j: JurisdictionId,
        host: &str,
    ) -> Result<IpAddr, Result<Verdict, String>> {
        let at = self.gw.at();
        let name_ips = verdict::for_name_ips(policy, j, host, at);
        if !name_ips.passes() {
            return Err(Ok(name_ips));
        }
        let addrs = self
            .gw
            .upstream
            .lookup_ip(host)
            .await
            .map_err(|e| Err(format!("cannot resolve {host}: {e}")))?;
        let Some(ip) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
        else {
            return Err(Err(format!("cannot resolve {host}: no addresses")));
        };
        let v = verdict::for_ip(policy, j, ip, at);
        match v {
            Verdict::Reset { .. } | Verdict::Drop { .. } => Err(Ok(v)),
            _ => Ok(ip),
        }
    }

    async fn forward(
        self: Arc<Self>,
        policy: Arc<Policy>,
        j: JurisdictionId,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let uri = req.uri().clone();
        let host = bare(uri.host().unwrap_or("")).to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let url = uri.to_string();
        let at = self.gw.at();
        let v = verdict::for_http(&policy, j, &host, path, at);
        if !v.passes() {
            return self.block(&policy, j, v, &url).await;
        }
        let ip = match self.resolve(&policy, j, &host).await {
            Ok(ip) => ip,
            Err(Ok(block)) => return self.block(&policy, j, block, &url).await,
            Err(Err(msg)) => {
                return Ok(full(
                    StatusCode::BAD_GATEWAY,
                    format!("502 Bad Gateway: {msg}\n"),
                ))
            }
        };
        let v = v.and(verdict::for_ip(&policy, j, ip, at));
        v.record(&self.gw, &policy, j, "http", self.peer, &url);
        let kbps = match v {
            Verdict::Throttle { kbps, rule } => {
                tracing::info!(client.addr = %self.peer, url, decision = "throttle", rule = policy.rule(rule).id.as_str(), kbps, "throttled");
                Some(kbps)
            }
            _ => None,
        };
        drop(policy);

        // Origin-form request without hop-by-hop headers.
        let origin_form = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        *req.uri_mut() = origin_form.parse().unwrap_or_default();
        for h in HOP_BY_HOP {
            req.headers_mut().remove(h);
        }
        if !req.headers().contains_key(HOST) {
            if let Some(a) = uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    req.headers_mut().insert(HOST, v);
                }
            }
        }

        let key = (host.clone(), ip, port, kbps);
        let mut pool = self.pool.lock().await;
        let mut reused = None;
        if let Some(mut p) = pool.take() {
            if p.key == key && p.sender.ready().await.is_ok() {
                reused = Some(p.sender);
            } else if p.key.3.is_none() {
                let (h, i, po, _) = p.key;
                super::pool::Pool::global().put((h, i, po), p.sender);
            }
        }
        if reused.is_none() && kbps.is_none() {
            reused = super::pool::Pool::global().take(&(host.clone(), ip, port));
        }
        let mut sender = match reused {
            Some(s) => s,
            None => match self.open(ip, port, kbps).await {
                Ok(s) => s,
                Err(msg) => {
                    return Ok(full(
                        StatusCode::BAD_GATEWAY,
                        format!("502 Bad Gateway: {host}:{port}: {msg}\n"),
                    ))
                }
            },
        };
        let resp = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => {
                // A kept connection the origin closed meanwhile: if the request was not sent,
                // send it on a new connection.
                let retried = match e.take_message() {
                    Some(req) => match self.open(ip, port, kbps).await {
                        Ok(fresh) => {
                            sender = fresh;
                            sender.send_request(req).await.map_err(|e| e.to_string())
                        }
                        Err(msg) => Err(msg),
                    },
                    None => Err(e.into_error().to_string()),
                };
                match retried {
                    Ok(r) => r,
                    Err(msg) => {
                        return Ok(full(
                            StatusCode::BAD_GATEWAY,
                            format!("502 Bad Gateway: {host}:{port}: {msg}\n"),
                        ))
                    }
                }
            }
        };
        *pool = Some(Pooled { key, sender });
        drop(pool);
        let (mut parts, body) = resp.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// Opens an HTTP/1.1 client connection to the origin.
    async fn open(
        &self,
        ip: IpAddr,
        port: u16,
        kbps: Option<u32>,
    ) -> Result<SendRequest<Incoming>, String> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("connect timed out".into()),
            };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Throttled::new(stream, kbps));
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect(
        self: Arc<Self>,
        policy: Arc<Policy>,
        j: JurisdictionId,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: CONNECT needs host:port\n",
            ));
        };
        let host = bare(authority.host()).to_ascii_lowercase();
        let Some(port) = authority.port_u16() else {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: CONNECT needs host:port\n",
            ));
        };
        let at = self.gw.at();
        let target = format!("{host}:{port}");
        let name_v = verdict::for_name(&policy, j, &host, at);
        let mut upstream = None;
        let mut v = name_v;
        if name_v.passes() {
            let ip = match self.resolve(&policy, j, &host).await {
                Ok(ip) => ip,
                Err(Ok(block)) => return self.block(&policy, j, block, &target).await,
                Err(Err(msg)) => {
                    return Ok(full(
                        StatusCode::BAD_GATEWAY,
                        format!("502 Bad Gateway: {msg}\n"),
                    ))
                }
            };
            v = v.and(verdict::for_ip(&policy, j, ip, at));
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    upstream = Some(s);
                }
                Ok(Err(e)) => {
                    return Ok(full(
                        StatusCode::BAD_GATEWAY,
                        format!("502 Bad Gateway: {target}: {e}\n"),
                    ))
                }
                Err(_) => {
                    return Ok(full(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("504 Gateway Timeout: {target}\n"),
                    ))
                }
            }
        }
        let conn = Arc::clone(&self);
        let reassemble = policy.jurisdiction(j).reassemble;
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
                tracing::warn!("CONNECT tunnel is not a TCP stream");
                return;
            };
            let client = parts.io.into_inner();
            let first = parts.read_buf.to_vec();
            conn.tunnel(policy, j, client, first, target, v, upstream, reassemble)
                .await;
        });
        Ok(full(StatusCode::OK, Bytes::new()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn tunnel(
        &self,
        policy: Arc<Policy>,
        j: JurisdictionId,
        mut client: TcpStream,
        mut first: Vec<u8>,
        target: String,
        v: Verdict,
        upstream: Option<TcpStream>,
        reassemble: bool,
    ) {
        let _active = flow::ActiveFlow::new(&self.gw.metrics);
        let sniffed = flow::sniff(&mut client, &mut first, reassemble).await;
        let at = self.gw.at();
        let seen = match sniffed.name() {
            Some(name) => verdict::for_name(&policy, j, name, at),
            None => Verdict::Pass,
        };
        let v = v.and(seen);
        v.record(&self.gw, &policy, j, "tls", self.peer, &target);
        let rule = v
            .rule()
            .map(|r| policy.rule(r).id.clone())
            .unwrap_or_default();
        let sni = sniffed.name().unwrap_or("").to_string();
        let kind = match sniffed {
            Sniffed::Tls(_) => "tls",
            Sniffed::Http(_) => "http",
            Sniffed::Other => "other",
        };
        drop(policy);
        match (v, upstream) {
            (Verdict::Reset { .. }, _) => {
                tracing::info!(client.addr = %self.peer, target, tls.sni = sni, kind, decision = v.name(), rule, "blocked");
                flow::reset(client);
            }
            (Verdict::Drop { .. }, _) => {
                tracing::info!(client.addr = %self.peer, target, tls.sni = sni, kind, decision = v.name(), rule, "blocked");
                flow::swallow(&mut client, self.hold()).await;
            }
            (_, None) => tracing::warn!(target, "tunnel without an upstream connection"),
            (_, Some(up)) => {
                let kbps = match v {
                    Verdict::Throttle { kbps, .. } => {
                        tracing::info!(client.addr = %self.peer, target, tls.sni = sni, decision = "throttle", rule, kbps, "throttled");
                        Some(kbps)
                    }
                    _ => None,
                };
                let observer = up.peer_addr().ok().map(|server| {
                    crate::relay::observe::Observer::new(
                        &self.gw, "tls", self.peer, server, j, &target,
                    )
                });
                match flow::splice(client, &first, up, kbps, observer).await {
                    Ok((up, down)) => tracing::debug!(target, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(target, error = %e, "tunnel ended"),
                }
            }
        }
    }
}
