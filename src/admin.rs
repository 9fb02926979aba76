//! The admin listener: `/metrics`, `/healthz`, `POST /reload`, `/decide`.
//!
//! A deliberately small HTTP/1.1 server (one request per connection, bounded header size and
//! read time, at most [`MAX_CONNECTIONS`] at once) so that the admin surface has no dependency the frontends do not already have.
//! It binds to loopback by default; the config refuses a non-loopback address without a
//! `token`, and with a token every request needs `Authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::gateway::{Gateway, StartError};
use crate::policy::At;
use crate::rules::Day;

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 64;

/// Binds the `[admin]` listener, if configured.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(admin) = &gw.config.admin else {
        return Ok(Vec::new());
    };
    let listener = TcpListener::bind(admin.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: admin.listen,
            what: "admin",
            source,
        })?;
    let local = listener.local_addr().unwrap_or(admin.listen);
    gw.announce("admin", local);
    let gw = Arc::clone(gw);
    let slots = crate::limits::ConnLimit::new(MAX_CONNECTIONS, Arc::clone(&gw.metrics));
    Ok(vec![tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let Some(permit) = slots.try_acquire("admin") else {
                drop(stream);
                continue;
            };
            let gw = Arc::clone(&gw);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(30), serve_one(&gw, stream, peer))
                    .await;
                drop(permit);
            });
        }
    })])
}

struct Request {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
}

async fn read_head(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    };
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        authorization,
    })
}

async fn respond(stream: &mut TcpStream, status: u16, reason: &str, ctype: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_one(gw: &Arc<Gateway>, mut stream: TcpStream, peer: SocketAddr) {
    let Some(req) = read_head(&mut stream).await else {
        respond(
            &mut stream,
            400,
            "Bad Request",
            "text/plain",
            "bad request\n",
        )
        .await;
        return;
    };
    let token = gw.config.admin.as_ref().and_then(|a| a.token.as_deref());
    if let Some(t) = token {
        if req.authorization.as_deref() != Some(&format!("Bearer {t}")) {
            tracing::warn!(client.addr = %peer, path = %req.path, "admin request without a valid token");
            respond(
                &mut stream,
                401,
                "Unauthorized",
                "text/plain",
                "missing or wrong bearer token\n",
            )
            .await;
            return;
        }
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/healthz") => respond(&mut stream, 200, "OK", "text/plain", "ok\n").await,
        ("GET", "/metrics") => {
            let body = gw.metrics.render();
            respond(&mut stream, 200, "OK", "text/plain; version=0.0.4", &body).await;
        }
        ("POST", "/reload") => {
            let g = Arc::clone(gw);
            match tokio::task::spawn_blocking(move || g.reload()).await {
                Ok(Ok(())) => {
                    respond(
                        &mut stream,
                        200,
                        "OK",
                        "application/json",
                        "{\"status\":\"ok\"}\n",
                    )
                    .await
                }
                Ok(Err(e)) => {
                    let body = serde_json::json!({"status": "failed", "errors": e.lines().collect::<Vec<_>>()});
                    respond(
                        &mut stream,
                        422,
                        "Unprocessable Entity",
                        "application/json",
                        &format!("{body}\n"),
                    )
                    .await;
                }
                Err(_) => {
                    respond(
                        &mut stream,
                        500,
                        "Internal Server Error",
                        "text/plain",
                        "reload task failed\n",
                    )
                    .await
                }
            }
        }
        ("GET", "/decide") => {
            let (status, body) = decide(gw, &req.query);
            let reason = if status == 200 { "OK" } else { "Bad Request" };
            respond(
                &mut stream,
                status,
                reason,
                "application/json",
                &format!("{body}\n"),
            )
            .await;
        }
        (_, "/healthz" | "/metrics" | "/reload" | "/decide") => {
            respond(
                &mut stream,
                405,
                "Method Not Allowed",
                "text/plain",
                "method not allowed\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "Not Found",
                "text/plain",
                "not found: try /metrics, /healthz, POST /reload, /decide?client=IP&target=NAME\n",
            )
            .await
        }
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
    fn decodes_query_values() {
        assert_eq!(
            percent_decode("https%3A%2F%2Ffacebook.com%2F"),
            "https://facebook.com/"
        );
        assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
    }
}
