//! Optional TLS interception (`[tls] intercept`): the transparent listener terminates TLS with
//! a certificate minted for the SNI by the lab CA, reads each HTTPS request, and applies URL
//! rules and the blockpage (302 or 451) as for plain HTTP; allowed requests go to the origin
//! over a new TLS connection, verified against `upstream_ca` (or the Mozilla roots).
//!
//! Off unless configured. It only works for clients that trust the lab CA, breaks certificate
//! pinning and client certificates, and lets the gateway read everything: see the README.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::InterceptSection;
use crate::enforce::flow::FlowCtx;
use crate::enforce::respond::{self, bad_gateway, Body, ProxyError};
use crate::enforce::verdict::Verdict;

/// Minted certificates kept at most (the cache is emptied when full).
const CACHE_MAX: usize = 10_000;

/// Why interception could not be set up or a certificate minted.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot mint a certificate: {0}")]
    Mint(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The lab CA, the minted-certificate cache and the client configuration towards origins.
pub struct Interceptor {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    ca_der: CertificateDer<'static>,
    cache: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<String, InterceptError> {
    std::fs::read_to_string(path).map_err(|e| InterceptError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Interceptor {
    /// Loads the CA of `section`; relative paths are resolved against `base`.
    pub fn load(section: &InterceptSection, base: &Path) -> Result<Interceptor, InterceptError> {
        let cert_path = base.join(&section.ca_cert);
        let key_path = base.join(&section.ca_key);
        let cert_pem = read(&cert_path)?;
        let bad = |path: &Path, e: String| InterceptError::File {
            path: path.to_path_buf(),
            reason: e,
        };
        let ca_key = rcgen::KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| bad(&key_path, e.to_string()))?;
        let params = rcgen::CertificateParams::from_ca_cert_pem(&cert_pem)
            .map_err(|e| bad(&cert_path, e.to_string()))?;
        let ca = params.self_signed(&ca_key)?;
        let ca_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(&cert_path, e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        match &section.upstream_ca {
            Some(p) => {
                let p = base.join(p);
                for c in CertificateDer::pem_slice_iter(read(&p)?.as_bytes()) {
                    let c = c.map_err(|e| bad(&p, e.to_string()))?;
                    roots.add(c).map_err(|e| bad(&p, e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Interceptor {
            ca,
            ca_key,
            ca_der,
            cache: Mutex::new(HashMap::new()),
            client: Arc::new(client),
        })
    }

    /// The server configuration presenting a certificate for `name` (minted once, cached).
    pub fn server_config(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, InterceptError> {
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(c);
        }
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(name.to_string(), Arc::clone(&cfg));
        }
        Ok(cfg)
    }
}

/// One intercepted connection's context.
struct Session {
    ctx: FlowCtx,
    icp: Arc<Interceptor>,
    sni: String,
    dest: SocketAddr,
    upstream: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
}

/// Terminates TLS on `client` (whose ClientHello named `sni`) and serves its HTTP requests,
/// blocking by URL and forwarding the rest to `dest`.
pub async fn serve<S>(icp: Arc<Interceptor>, ctx: FlowCtx, client: S, sni: String, dest: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = match icp.server_config(&sni) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(tls.sni = sni, error = %e, "cannot intercept");
            return;
        }
    };
    let tls = match tokio_rustls::TlsAcceptor::from(cfg).accept(client).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(tls.sni = sni, error = %e, "intercepted handshake failed (does the client trust the lab CA?)");
            return;
        }
    };
    let s = Arc::new(Session {
        ctx,
        icp,
        sni,
        dest,
        upstream: tokio::sync::Mutex::new(None),
    });
    let svc = hyper::service::service_fn(move |req| {
        let s = Arc::clone(&s);
        async move { s.handle(req).await }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), svc)
        .await
    {
        tracing::debug!(error = %e, "intercepted connection ended");
    }
}

impl Session {
    async fn handle(&self, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let ctx = &self.ctx;
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(crate::sniff::http_head::split_host_port)
            .map_or_else(|| self.sni.clone(), |(h, _)| h);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let url = format!("https://{host}{path}");
        let v = ctx.for_http(&host, &path);
        ctx.record(v, "tls", &url);
        if !v.passes() {
            let rule = ctx.rule_id(v);
            tracing::info!(client.addr = %ctx.peer, url, decision = v.name(), rule, intercepted = true, "blocked");
        }
        match v {
            Verdict::Blockpage { rule } => {
                return Ok(respond::blockpage(ctx.blockpage(rule, &url)))
            }
            Verdict::Reset { .. } => return Err(ProxyError::Reset),
            Verdict::Drop { .. } => {
                tokio::time::sleep(Duration::from_secs(
                    ctx.gw.config.tls.as_ref().map_or(120, |t| t.hold_secs),
                ))
                .await;
                return Err(ProxyError::Dropped);
            }
            Verdict::Pass | Verdict::Throttle { .. } | Verdict::Freeze { .. } => {}
        }
        // A frozen request gets an origin connection of its own, frozen after its bytes.
        let freeze = v.freeze_after();
        let mut up = self.upstream.lock().await;
        let mut reused = None;
        if let (Some(mut s), None) = (up.take(), freeze) {
            if s.ready().await.is_ok() {
                reused = Some(s);
            }
        }
        let mut sender = match reused {
            Some(s) => s,
            None => match self.open(freeze).await {
                Ok(s) => s,
                Err(msg) => return Ok(bad_gateway(format_args!("{}: {msg}", self.sni))),
            },
        };
        *req.uri_mut() = path.parse().unwrap_or_default();
        respond::strip_hop_by_hop(req.headers_mut());
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Ok(bad_gateway(format_args!("{}: {e}", self.sni))),
        };
        if freeze.is_none() {
            *up = Some(sender);
        }
        let (mut parts, body) = resp.into_parts();
        respond::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }
    /// Opens a TLS connection to the origin; with `freeze`, one that freezes after that many
    /// bytes from the origin.
    async fn open(&self, freeze: Option<u32>) -> Result<SendRequest<Incoming>, String> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(self.dest))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let hold =
            Duration::from_secs(self.ctx.gw.config.tls.as_ref().map_or(120, |t| t.hold_secs));
        let tcp = crate::enforce::freeze::Frozen::new(tcp, freeze, hold);
        let name = ServerName::try_from(self.sni.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.icp.client))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("origin TLS: {e}"))?;
        respond::origin(tls).await
    }
}
