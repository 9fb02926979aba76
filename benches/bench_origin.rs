//! A fast loopback origin for `benches/proxy.sh`: HTTP/1.1 keep-alive, `/` answers 13 bytes,
//! `/bytes/N` streams N bytes of the lab origins' pattern
//! ([`blocklab::lab::origins::Pattern`]). Prints `listening addr=...` on stdout.
//!
//! Usage: `cargo run --release --example bench_origin -- 127.0.0.1:0`

use std::convert::Infallible;

use blocklab::lab::origins::Pattern;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn serve(req: Request<hyper::body::Incoming>) -> Result<Response<Pattern>, Infallible> {
    let n = req
        .uri()
        .path()
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse().ok())
        .unwrap_or(13);
    Ok(Response::new(Pattern::new(n)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening addr={}", listener.local_addr()?);
    loop {
        let (s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(serve);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
