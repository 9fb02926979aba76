//! Turning verdicts into hyper responses, shared by the forward proxy and TLS interception.
//!
//! [`Body`] is the response body of both hyper services; [`full`] builds a small complete
//! response; [`blockpage`] renders the `http-blockpage` page as a response; [`ProxyError`]
//! ends a request without a response (reset or swallowed on purpose); [`strip_hop_by_hop`]
//! removes the headers a proxy never forwards, in either direction; [`origin`] opens the
//! HTTP/1.1 client side towards an origin.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::blockpage;

/// The response body type of the proxy and the interceptor.
pub type Body = BoxBody<Bytes, hyper::Error>;

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
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Removes the [`HOP_BY_HOP`] headers from `headers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// A complete response with `status` and `body`.
pub fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// The `http-blockpage` response (302 or 451) serving `pg` (see [`FlowCtx::blockpage`]).
///
/// [`FlowCtx::blockpage`]: super::flow::FlowCtx::blockpage
pub fn blockpage(pg: blockpage::Page) -> Response<Body> {
    let mut r = full(
        StatusCode::from_u16(pg.status).unwrap_or(StatusCode::FORBIDDEN),
        pg.body,
    );
    for (k, val) in pg.headers {
        if let Ok(val) = HeaderValue::from_str(&val) {
            r.headers_mut().insert(k, val);
        }
    }
    r
}

/// A `502 Bad Gateway` naming what failed.
pub fn bad_gateway(what: impl std::fmt::Display) -> Response<Body> {
    full(
        StatusCode::BAD_GATEWAY,
        format!("502 Bad Gateway: {what}\n"),
    )
}

/// An HTTP/1.1 client connection over `stream` (already connected to the origin), driven by
/// its own task until the origin or the sender closes it.
pub async fn origin<S>(stream: S) -> Result<SendRequest<Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "origin connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
