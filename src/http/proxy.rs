//! One forward-proxy client connection: the hyper service for absolute-form requests and
//! `CONNECT`, enacting the verdicts of `crate::enforce::verdict`.
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
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::enforce::flow::{self, FlowCtx, Sniffed};
use crate::enforce::respond::{self, bad_gateway, full};
use crate::enforce::respond::{Body, ProxyError};
use crate::enforce::throttle::Throttled;
use crate::enforce::verdict::Verdict;
use crate::gateway::Gateway;

/// How long connecting to an origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A CONNECT tunnel waiting for its first bytes: its target, the verdict so far, and the
/// origin connection (absent when the target name is already blocked).
struct Tunnel {
    target: String,
    verdict: Verdict,
    upstream: Option<TcpStream>,
}

impl Conn {
    fn hold(&self) -> Duration {
        Duration::from_secs(self.gw.config.http.as_ref().map_or(120, |h| h.hold_secs))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let Some(mut ctx) = FlowCtx::new(&self.gw, self.peer, self.local) else {
            return Ok(refuse(&self.gw, self.peer, &req.uri().to_string()));
        };
        if req.method() == Method::CONNECT {
            if let Some(port) = req.uri().port_u16() {
                ctx.tcp_port(port);
            }
            return self.connect(ctx, req).await;
        }
        if req.uri().scheme_str() != Some("http") || req.uri().host().is_none() {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: send absolute-form http:// requests or CONNECT to this proxy\n",
            ));
        }
        ctx.tcp_port(req.uri().port_u16().unwrap_or(80));
        self.forward(ctx, req).await
    }

    /// Enacts a blocking verdict on a plain HTTP request.
    async fn block(
        &self,
        ctx: &FlowCtx,
        v: Verdict,
        url: &str,
    ) -> Result<Response<Body>, ProxyError> {
        ctx.record(v, "http", url);
        let rule = ctx.rule_id(v);
        tracing::info!(client.addr = %self.peer, url, decision = v.name(), rule, "blocked");
        match v {
            Verdict::Blockpage { rule } => Ok(respond::blockpage(ctx.blockpage(rule, url))),
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

    /// The pipeline for `host` after its own verdict `first`: `Ok` with the combined verdict
    /// and the address to connect to, or the response ending the request (block or 502).
    async fn route(
        &self,
        ctx: &FlowCtx,
        first: Verdict,
        host: &str,
        shown: &str,
    ) -> Result<(Verdict, IpAddr), Result<Response<Body>, ProxyError>> {
        let route = ctx.route(first, host, None).await;
        if !route.verdict.passes() {
            return Err(self.block(ctx, route.verdict, shown).await);
        }
        match (route.addr, route.unresolved) {
            (Some(ip), _) => Ok((route.verdict, ip)),
            (None, e) => Err(Ok(bad_gateway(format_args!(
                "cannot resolve {host}: {}",
                e.unwrap_or_default()
            )))),
        }
    }

    async fn forward(
        self: Arc<Self>,
        ctx: FlowCtx,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let uri = req.uri().clone();
        let host = bare(uri.host().unwrap_or("")).to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let url = uri.to_string();
        let v = ctx.for_http(&host, path);
        if !v.passes() {
            return self.block(&ctx, v, &url).await;
        }
        let (v, ip) = match self.route(&ctx, v, &host, &url).await {
            Ok(r) => r,
            Err(end) => return end,
        };
        ctx.record(v, "http", &url);
        let kbps = match v {
            Verdict::Throttle { kbps, .. } => {
                tracing::info!(client.addr = %self.peer, url, decision = "throttle", rule = ctx.rule_id(v), kbps, "throttled");
                Some(kbps)
            }
            _ => None,
        };
        // A frozen request gets an origin connection of its own, never pooled.
        let freeze = v.freeze_after();
        if let Some(after_bytes) = freeze {
            tracing::info!(client.addr = %self.peer, url, decision = "freeze", rule = ctx.rule_id(v), after_bytes, "freezing");
        }
        drop(ctx);

        // Origin-form request without hop-by-hop headers.
        let origin_form = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        *req.uri_mut() = origin_form.parse().unwrap_or_default();
        respond::strip_hop_by_hop(req.headers_mut());
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
            if freeze.is_none() && p.key == key && p.sender.ready().await.is_ok() {
                reused = Some(p.sender);
            } else if p.key.3.is_none() {
                let (h, i, po, _) = p.key;
                super::pool::Pool::global().put((h, i, po), p.sender);
            }
        }
        if reused.is_none() && kbps.is_none() && freeze.is_none() {
            reused = super::pool::Pool::global().take(&(host.clone(), ip, port));
        }
        let mut sender = match reused {
            Some(s) => s,
            None => match self.open(ip, port, kbps, freeze).await {
                Ok(s) => s,
                Err(msg) => return Ok(bad_gateway(format_args!("{host}:{port}: {msg}"))),
            },
        };
        let resp = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => {
                // A kept connection the origin closed meanwhile: if the request was not sent,
                // send it on a new connection.
                let retried = match e.take_message() {
                    Some(req) => match self.open(ip, port, kbps, freeze).await {
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
                    Err(msg) => return Ok(bad_gateway(format_args!("{host}:{port}: {msg}"))),
                }
            }
        };
        if freeze.is_none() {
            *pool = Some(Pooled { key, sender });
        }
        drop(pool);
        let (mut parts, body) = resp.into_parts();
        respond::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// Opens an HTTP/1.1 client connection to the origin, throttled to `kbps` and frozen
    /// after `freeze` bytes from the origin when given.
    async fn open(
        &self,
        ip: IpAddr,
        port: u16,
        kbps: Option<u32>,
        freeze: Option<u32>,
    ) -> Result<SendRequest<Incoming>, String> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("connect timed out".into()),
            };
        let _ = stream.set_nodelay(true);
        let stream = crate::enforce::freeze::Frozen::new(stream, freeze, self.hold());
        respond::origin(Throttled::new(stream, kbps)).await
    }

    async fn connect(
        self: Arc<Self>,
        ctx: FlowCtx,
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
        let target = format!("{host}:{port}");
        let mut tunnel = Tunnel {
            verdict: ctx.for_name(&host),
            target,
            upstream: None,
        };
        if tunnel.verdict.passes() {
            let (v, ip) = match self
                .route(&ctx, tunnel.verdict, &host, &tunnel.target)
                .await
            {
                Ok(r) => r,
                Err(end) => return end,
            };
            tunnel.verdict = v;
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    tunnel.upstream = Some(s);
                }
                Ok(Err(e)) => return Ok(bad_gateway(format_args!("{}: {e}", tunnel.target))),
                Err(_) => {
                    return Ok(full(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("504 Gateway Timeout: {}\n", tunnel.target),
                    ))
                }
            }
        }
        let conn = Arc::clone(&self);
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
            conn.tunnel(ctx, client, first, tunnel).await;
        });
        Ok(full(StatusCode::OK, Bytes::new()))
    }

    async fn tunnel(&self, mut ctx: FlowCtx, mut client: TcpStream, mut first: Vec<u8>, t: Tunnel) {
        let _active = flow::ActiveFlow::new(&self.gw.metrics);
        let sniffed = flow::sniff(&mut client, &mut first, ctx.reassemble()).await;
        ctx.saw(&sniffed);
        let Tunnel {
            target,
            verdict,
            upstream,
        } = t;
        let mut seen = match sniffed.name() {
            Some(name) => ctx.for_name(name),
            None => Verdict::Pass,
        };
        // The address again, now that the ClientHello's ECH and JA4 are known.
        if let Some(ip) = upstream
            .as_ref()
            .and_then(|u| u.peer_addr().ok())
            .map(|a| a.ip())
        {
            let name = sniffed
                .name()
                .unwrap_or(target.rsplit_once(':').map_or("", |x| x.0));
            seen = seen.and(ctx.for_dest(name, ip));
        }
        let v = verdict.and(seen);
        ctx.record(v, "tls", &target);
        let rule = ctx.rule_id(v).to_string();
        let sni = sniffed.name().unwrap_or("").to_string();
        let kind = match sniffed {
            Sniffed::Tls(_) => "tls",
            Sniffed::Http(_) => "http",
            Sniffed::Other => "other",
        };
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
                match v {
                    Verdict::Throttle { kbps, .. } => {
                        tracing::info!(client.addr = %self.peer, target, tls.sni = sni, decision = "throttle", rule, kbps, "throttled");
                    }
                    Verdict::Freeze { after_bytes, .. } => {
                        tracing::info!(client.addr = %self.peer, target, tls.sni = sni, decision = "freeze", rule, after_bytes, "freezing");
                    }
                    _ => {}
                }
                let observer = up
                    .peer_addr()
                    .ok()
                    .map(|server| ctx.observer("tls", server, &target));
                drop(ctx);
                match flow::splice(client, &first, up, v, self.hold(), observer).await {
                    Ok((up, down)) => tracing::debug!(target, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(target, error = %e, "tunnel ended"),
                }
            }
        }
    }
}
