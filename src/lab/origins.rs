//! The catch-all origins of the internet namespace (`[lab] origins = true`): HTTP on :80,
//! HTTPS on :443 and QUIC on UDP :443 of every address (the namespace has AnyIP local routes),
//! for any name, with certificates minted per SNI by the lab CA; and an authoritative DNS
//! giving every name its `[hosts]` addresses or the internet namespace's own address.
//!
//! `GET /` answers a small page naming the host; `GET /bytes/N` answers N bytes of a fixed
//! pattern (byte `i` is `(i * 7) ^ (i >> 8)`, truncated), streamed, for throughput, throttle
//! and freeze experiments. The QUIC origin speaks HTTP/0.9 over QUIC v1 (ALPN `hq-interop`,
//! as QUIC interop runners do: one `GET /path` per bidirectional stream, the body, FIN), not
//! HTTP/3; enough to see a QUIC handshake and a transfer pass or be dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata, RData, Record, RecordType};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::ca::LabCa;

/// Largest `/bytes/N` served (16 GiB).
const MAX_BYTES: u64 = 16 << 30;
/// TTL of the authoritative answers.
const TTL: u32 = 60;

/// What the origins serve.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Address of the authoritative DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// `[hosts]`: names and their addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// The answer for every other name (A).
    pub default_v4: Ipv4Addr,
    /// The lab CA.
    pub ca: Arc<LabCa>,
}

/// Byte `i` of a `/bytes/N` body.
pub fn pattern_byte(i: u64) -> u8 {
    ((i as usize).wrapping_mul(7) ^ ((i as usize) >> 8)) as u8
}

/// One period (64 KiB) of the pattern, shared by every body.
fn period() -> &'static Bytes {
    static P: OnceLock<Bytes> = OnceLock::new();
    P.get_or_init(|| Bytes::from((0..65536u64).map(pattern_byte).collect::<Vec<u8>>()))
}

/// A streamed `/bytes/N` body: slices of the shared period, no copy.
pub struct Pattern {
    pos: u64,
    end: u64,
}

impl Pattern {
    /// The first `n` bytes of the pattern.
    pub const fn new(n: u64) -> Pattern {
        Pattern { pos: 0, end: n }
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let off = (self.pos % 65536) as usize;
        let n = ((65536 - off) as u64).min(self.end - self.pos) as usize;
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(period().slice(off..off + n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}

type OriginBody = BoxBody<Bytes, Infallible>;

fn page(status: StatusCode, ctype: &str, body: String) -> Response<OriginBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn service(
    req: Request<Incoming>,
    scheme: &'static str,
    local: SocketAddr,
) -> Result<Response<OriginBody>, Infallible> {
    let path = req.uri().path();
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_else(|| local.ip().to_string());
    if let Some(n) = path.strip_prefix("/bytes/") {
        return Ok(match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => {
                let mut r = Response::new(Pattern::new(n).boxed());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            _ => page(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("/bytes/N: N must be a number up to {MAX_BYTES}\n"),
            ),
        });
    }
    if path == "/" {
        let h = html_escape(&host);
        let body = format!(
            "<!doctype html>\n<html><head><title>{h}</title></head><body>\n\
             <h1>{h}</h1>\n<p>blocklab lab origin: host={h} scheme={scheme} address={local}</p>\n\
             </body></html>\n"
        );
        return Ok(page(StatusCode::OK, "text/html; charset=utf-8", body));
    }
    Ok(page(
        StatusCode::NOT_FOUND,
        "text/plain",
        format!("not found: {path} (this origin serves / and /bytes/N)\n"),
    ))
}

async fn serve_http<S>(io: S, scheme: &'static str, local: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |r| service(r, scheme, local));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn https_conn(stream: TcpStream, ca: Arc<LabCa>) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let Ok(start) = acceptor.await else {
        return;
    };
    let name = start
        .client_hello()
        .server_name()
        .map_or_else(|| local.ip().to_string(), str::to_string);
    let cfg = match ca.server_config(&name) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(tls.sni = %name, error = %e, "origin cannot mint a certificate");
            return;
        }
    };
    if let Ok(tls) = start.into_stream(cfg).await {
        serve_http(tls, "https", local).await;
    }
}

/// The authoritative answer to one DNS query (None for a packet that is not a query).
pub fn answer(spec: &Spec, query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.message_type() != MessageType::Query {
        return None;
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_authoritative(true)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    r.add_queries(q.queries().to_vec());
    match q.queries().first() {
        Some(question) => {
            let name = question.name().to_ascii();
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let addrs: Vec<IpAddr> = spec
                .hosts
                .get(&key)
                .cloned()
                .unwrap_or_else(|| vec![IpAddr::V4(spec.default_v4)]);
            for a in addrs {
                let rd = match (question.query_type(), a) {
                    (RecordType::A, IpAddr::V4(v4)) => RData::A(rdata::A(v4)),
                    (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(rdata::AAAA(v6)),
                    _ => continue,
                };
                r.add_answer(Record::from_rdata(question.name().clone(), TTL, rd));
            }
        }
        None => {
            r.set_response_code(ResponseCode::FormErr);
        }
    }
    r.to_vec().ok()
}

async fn dns_udp(sock: UdpSocket, spec: Arc<Spec>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(a) = answer(&spec, &buf[..n]) {
            let _ = sock.send_to(&a, from).await;
        }
    }
}

async fn dns_tcp_conn(mut s: TcpStream, spec: Arc<Spec>) {
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).await.is_err() {
            return;
        }
        let Some(a) = answer(&spec, &q) else { return };
        let Ok(n) = u16::try_from(a.len()) else {
            return;
        };
        if s.write_all(&n.to_be_bytes()).await.is_err() || s.write_all(&a).await.is_err() {
            return;
        }
    }
}

fn accept_loop<F, Fut>(l: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(handle(s));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
}

/// What a QUIC stream answers (HTTP/0.9: a body, no status line or headers).
enum QuicAnswer {
    /// `/bytes/N`.
    Bytes(Pattern),
    /// A page (the host's, or an error text).
    Page(String),
}

/// The answer to `GET path` over QUIC: the same pages as HTTP.
fn quic_body(path: &str, host: &str, local: SocketAddr) -> QuicAnswer {
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => QuicAnswer::Bytes(Pattern::new(n)),
            _ => QuicAnswer::Page(format!("/bytes/N: N must be a number up to {MAX_BYTES}\n")),
        };
    }
    let h = html_escape(host);
    QuicAnswer::Page(format!(
        "<!doctype html>\n<html><head><title>{h}</title></head><body>\n\
         <h1>{h}</h1>\n<p>blocklab lab origin: host={h} scheme=quic address={local}</p>\n\
         </body></html>\n"
    ))
}

async fn quic_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    host: String,
    local: SocketAddr,
) {
    let Ok(req) = recv.read_to_end(8192).await else {
        return;
    };
    let line = String::from_utf8_lossy(&req);
    let path = line
        .strip_prefix("GET ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("/")
        .to_string();
    match quic_body(&path, &host, local) {
        QuicAnswer::Bytes(mut body) => {
            while body.pos < body.end {
                let off = (body.pos % 65536) as usize;
                let n = ((65536 - off) as u64).min(body.end - body.pos) as usize;
                if send.write_all(&period()[off..off + n]).await.is_err() {
                    return;
                }
                body.pos += n as u64;
            }
        }
        QuicAnswer::Page(page) => {
            if send.write_all(page.as_bytes()).await.is_err() {
                return;
            }
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn quic_conn(incoming: quinn::Incoming) {
    let local = SocketAddr::from((
        incoming
            .local_ip()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        443,
    ));
    let Ok(conn) = incoming.await else { return };
    let host = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name)
        .unwrap_or_else(|| local.ip().to_string());
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(quic_stream(send, recv, host.clone(), local));
    }
}

/// The QUIC origin's endpoint on UDP `addr`.
fn quic_endpoint(addr: SocketAddr, ca: &Arc<LabCa>) -> Result<quinn::Endpoint, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(super::ca::Resolver(Arc::clone(ca))));
    tls.alpn_protocols = vec![b"hq-interop".to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(cfg, addr).map_err(|e| format!("quic {addr}: {e}"))
}

/// Binds every origin listener (on the current runtime, inside the internet namespace) and
/// starts serving; returns the tasks.
pub async fn start(spec: Spec) -> Result<Vec<JoinHandle<()>>, String> {
    let bind = |what: &str, addr: SocketAddr, e: std::io::Error| format!("{what} {addr}: {e}");
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let spec = Arc::new(spec);
    let mut tasks = Vec::new();
    let http = TcpListener::bind(any(80))
        .await
        .map_err(|e| bind("http", any(80), e))?;
    tasks.push(accept_loop(http, |s| async move {
        if let Ok(local) = s.local_addr() {
            serve_http(s, "http", local).await;
        }
    }));
    let https = TcpListener::bind(any(443))
        .await
        .map_err(|e| bind("https", any(443), e))?;
    let ca = Arc::clone(&spec.ca);
    tasks.push(accept_loop(https, move |s| https_conn(s, Arc::clone(&ca))));
    let quic = quic_endpoint(any(443), &spec.ca)?;
    tasks.push(tokio::spawn(async move {
        while let Some(incoming) = quic.accept().await {
            tokio::spawn(quic_conn(incoming));
        }
    }));
    let udp = UdpSocket::bind(spec.dns)
        .await
        .map_err(|e| bind("dns/udp", spec.dns, e))?;
    tasks.push(tokio::spawn(dns_udp(udp, Arc::clone(&spec))));
    let tcp = TcpListener::bind(spec.dns)
        .await
        .map_err(|e| bind("dns/tcp", spec.dns, e))?;
    let s2 = Arc::clone(&spec);
    tasks.push(accept_loop(tcp, move |s| dns_tcp_conn(s, Arc::clone(&s2))));
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn spec() -> Spec {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "cdn.example".to_string(),
            vec![
                "104.16.1.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
        );
        Spec {
            dns: "127.0.0.1:0".parse().unwrap(),
            hosts,
            default_v4: "10.77.0.2".parse().unwrap(),
            ca: Arc::new(LabCa::new("t").unwrap()),
        }
    }

    fn ask(name: &str, t: RecordType) -> Message {
        let mut q = Message::new();
        q.set_id(7)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        Message::from_vec(&answer(&spec(), &q.to_vec().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn every_name_answers_hosts_or_the_default() {
        let r = ask("CDN.example.", RecordType::A);
        assert_eq!(r.id(), 7);
        assert!(r.authoritative());
        assert_eq!(r.answers().len(), 1);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(rdata::A("104.16.1.1".parse().unwrap()))
        );
        assert_eq!(ask("cdn.example.", RecordType::AAAA).answers().len(), 1);
        let r = ask("anything.test.", RecordType::A);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(rdata::A("10.77.0.2".parse().unwrap()))
        );
        assert_eq!(ask("anything.test.", RecordType::AAAA).answers().len(), 0);
        assert_eq!(answer(&spec(), b"\x00\x01junk"), None);
    }

    #[test]
    fn pattern_body_is_the_pattern() {
        assert_eq!(pattern_byte(0), 0);
        assert_eq!(pattern_byte(1), 7);
        assert_eq!(pattern_byte(256), ((256usize * 7) ^ 1) as u8);
        let p = period();
        assert_eq!(p[300], pattern_byte(300));
        assert_eq!(pattern_byte(65536 + 5), pattern_byte(5));
    }
}
