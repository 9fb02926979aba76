//! The admin listener: `/metrics`, `/healthz`, `POST /reload`, `/decide`.
//!
//! Served by `hyper` (HTTP/1.1, one request per connection, the head read within
//! [`READ_TIMEOUT`], a connection closed after [`CONNECTION_TIMEOUT`]) behind the shared accept
//! loop (`crate::listen`: at most [`MAX_CONNECTIONS`] at once, backoff when out of file
//! descriptors). It binds to loopback by default; the config refuses a non-loopback address
//! without a `token`, and with a token every request needs `Authorization: Bearer <token>`
//! (compared in constant time). `/decide` answers with the JSON of `blocklab check --json`
//! (`policy::explain`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::gateway::{Gateway, StartError};
use crate::listen::{self, Admit, Listen};
use crate::policy::At;
use crate::rules::Day;

/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one admin connection may last in all.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head read (hyper answers 431 beyond it).
const MAX_HEAD: usize = 16 * 1024;
/// Admin connections served at once; more are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 64;

/// Binds the `[admin]` listener, if configured.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(admin) = &gw.config.admin else {
        return Ok(Vec::new());
    };
    let listener = listen::bind(gw, "admin", admin.listen).await?;
    let opts = Listen {
        name: "admin",
        max_connections: MAX_CONNECTIONS,
        admit: Admit::Everyone,
    };
    let g = Arc::clone(gw);
    Ok(vec![tokio::spawn(listen::serve(
        Arc::clone(gw),
        listener,
        opts,
        move |c| serve_connection(Arc::clone(&g), c.stream),
    ))])
}

async fn serve_connection(gw: Arc<Gateway>, stream: TcpStream) {
    let svc = service_fn(move |req| {
        let gw = Arc::clone(&gw);
        async move { Ok::<_, Infallible>(route(&gw, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "admin connection ended"),
        Err(_) => tracing::debug!("admin connection timed out"),
    }
}

fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", body)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", format!("{body}\n"))
}

/// `a == b` in time independent of where they differ (only the length may show).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0 && a.len() == b.len()
}

/// Whether `req` carries `Authorization: Bearer <token>`.
fn authorised(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req.headers().get(AUTHORIZATION) else {
        return false;
    };
    let given = given.as_bytes();
    let Some(secret) = given.strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(secret, token.as_bytes())
}

async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(t) = gw.config.admin.as_ref().and_then(|a| a.token.as_deref()) {
        if !authorised(&req, t) {
            tracing::warn!(path, "admin request without a valid token");
            return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
        }
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            gw.metrics.render(),
        ),
        (&Method::POST, "/reload") => {
            let g = Arc::clone(gw);
            match tokio::task::spawn_blocking(move || g.reload()).await {
                Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
                Ok(Err(e)) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({"status": "failed", "errors": e.lines().collect::<Vec<_>>()}),
                ),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed\n"),
            }
        }
        (&Method::GET, "/decide") => {
            let (status, body) = decide(gw, req.uri().query().unwrap_or(""));
            let status = if status == 200 {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            json(status, &body)
        }
        (_, "/healthz" | "/metrics" | "/reload" | "/decide") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, POST /reload, /decide?client=IP&target=NAME\n",
        ),
    }
}

fn decide(gw: &Gateway, query: &str) -> (u16, serde_json::Value) {
    let mut client = None;
    let mut target = None;
    let mut at = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "client" => client = Some(v),
            "target" => target = Some(v),
            "at" => at = Some(v),
            _ => {}
        }
    }
    let err = |m: String| (400, serde_json::json!({ "error": m }));
    let Some(client) = client.and_then(|c| c.parse::<std::net::IpAddr>().ok()) else {
        return err("give client=IP".into());
    };
    let Some(target) = target else {
        return err("give target=NAME, IP or URL".into());
    };
    let day = match at {
        Some(s) => match s.parse::<Day>() {
            Ok(d) => d,
            Err(e) => return err(e.to_string()),
        },
        None => match gw.at() {
            At::Day(d) => d,
            At::Instant(_) => Day::today_utc(),
        },
    };
    let policy = gw.policy();
    let Some(jid) = policy.jurisdiction_for(client) else {
        return err(format!("client {client} is not in any configured network"));
    };
    // The same normalisation and JSON as `blocklab check --json`.
    match crate::policy::explain::explain(&policy, jid, &target, day) {
        Ok(e) => (200, e.json()),
        Err(e) => err(e),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn decodes_query_values() {
        assert_eq!(
            percent_decode("https%3A%2F%2Ffacebook.com%2F"),
            "https://facebook.com/"
        );
        assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
    }
}
