//! The TCP listener: 2-byte length framing, several queries pipelined on one connection.
//!
//! Per connection a reader takes frames and answers each as soon as it can (queries that go
//! upstream run concurrently, so answers may come back out of order, as RFC 7766 allows); one
//! writer task sends the framed responses. An idle connection (no complete frame for
//! [`IDLE_TIMEOUT`]) is closed, as is one sending a zero-length frame. Answers still pending
//! when the client half-closes are delivered before the connection closes. At most
//! `[dns] max_connections` connections are open per listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::answer::{DnsTransport, Frontend, Step};
use crate::gateway::Gateway;
use crate::listen::{self, Admit, Listen};
use crate::metrics::Metrics;

/// How long a connection may stay without a complete query before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per connection before the reader waits for the writer.
const QUEUE: usize = 64;

/// Binds a TCP listener on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Accepts connections on `listener` until the task is aborted (`crate::listen`): at most
/// `max_connections` at once (more are closed at once and counted). Clients outside every
/// configured network are answered `REFUSED` per query, so every client is admitted.
pub async fn serve(
    gw: Arc<Gateway>,
    front: Arc<Frontend>,
    listener: TcpListener,
    max_connections: usize,
) {
    let opts = Listen {
        name: "dns/tcp",
        max_connections,
        admit: Admit::Everyone,
    };
    listen::serve(gw, listener, opts, move |c| {
        connection(Arc::clone(&front), c.stream, c.peer)
    })
    .await;
}

async fn connection(front: Arc<Frontend>, stream: TcpStream, peer: SocketAddr) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            let mut frame = Vec::with_capacity(bytes.len() + 2);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&bytes);
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    loop {
        let len = match timeout(IDLE_TIMEOUT, rd.read_u16()).await {
            Ok(Ok(0)) => {
                Metrics::inc(&front.metrics().malformed);
                break;
            }
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(_)) | Err(_) => break,
        };
        let mut buf = vec![0u8; len];
        match timeout(IDLE_TIMEOUT, rd.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                Metrics::inc(&front.metrics().malformed);
                break;
            }
        }
        match front.answer_now(peer, &buf, DnsTransport::Tcp) {
            Step::Reply(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Step::Silent => {}
            Step::Upstream(pending) => {
                let (front, tx) = (Arc::clone(&front), tx.clone());
                tokio::spawn(async move {
                    if let Some(bytes) = front.answer_later(pending).await {
                        let _ = tx.send(bytes).await;
                    }
                });
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
