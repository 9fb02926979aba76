//! Idle origin connections shared by every client connection of the forward proxy.
//!
//! A client connection keeps its own origin connection for its next request; when it closes,
//! an unthrottled origin connection goes here, so the next client (a browser opening a new
//! connection, or a load generator) skips the TCP handshake to the origin. A throttled origin
//! connection belongs to one client's flow and is never shared. Entries are keyed by host,
//! address and port; closed connections are dropped on the way (and in a periodic sweep), and
//! each key keeps at most [`MAX_IDLE_PER_KEY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

/// Idle connections kept per origin.
pub const MAX_IDLE_PER_KEY: usize = 32;

/// Every this many `put`s the whole pool is swept of closed connections.
const SWEEP_EVERY: u64 = 1024;

/// An origin: host name (as requested), address and port.
pub type Key = (String, IpAddr, u16);

/// The shared idle connections.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<SendRequest<Incoming>>>>,
    puts: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// The process-wide pool.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::default)
    }

    /// An idle connection to `key` that can send a request now, if any.
    pub fn take(&self, key: &Key) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        list.retain(|s| !s.is_closed());
        let i = list.iter().position(SendRequest::is_ready)?;
        Some(list.swap_remove(i))
    }

    /// Keeps `sender` for the next request to `key` (dropped if the pool is full or it closed).
    pub fn put(&self, key: Key, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let puts = self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock() {
            if puts % SWEEP_EVERY == SWEEP_EVERY - 1 {
                // Forget connections the origins closed, and origins with none left.
                idle.retain(|_, list| {
                    list.retain(|s| !s.is_closed());
                    !list.is_empty()
                });
            }
            let list = idle.entry(key).or_default();
            if list.len() < MAX_IDLE_PER_KEY {
                list.push(sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// A client connection to an in-memory HTTP/1.1 server, and the server's task.
    async fn connection() -> (SendRequest<Incoming>, tokio::task::JoinHandle<()>) {
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, hyper::Error>(hyper::Response::new(
                    http_body_util::Empty::<bytes::Bytes>::new(),
                ))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(b), svc)
                .await;
        });
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(a))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut sender = sender;
        sender.ready().await.unwrap();
        (sender, server)
    }

    #[tokio::test]
    async fn keeps_ready_connections_and_forgets_closed_ones() {
        let pool = Pool::default();
        let key: Key = ("example.org".into(), "127.0.0.1".parse().unwrap(), 80);
        let (sender, _server) = connection().await;
        pool.put(key.clone(), sender);
        assert!(pool.take(&key).is_some());
        assert!(pool.take(&key).is_none(), "a connection is handed out once");

        let (sender, server) = connection().await;
        pool.put(key.clone(), sender);
        server.abort();
        let _ = server.await;
        // the client side notices the closed stream
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            pool.take(&key).is_none(),
            "a closed connection was handed out"
        );

        let other: Key = ("example.net".into(), "127.0.0.1".parse().unwrap(), 80);
        for _ in 0..MAX_IDLE_PER_KEY + 3 {
            pool.put(other.clone(), connection().await.0);
        }
        assert_eq!(pool.idle.lock().unwrap()[&other].len(), MAX_IDLE_PER_KEY);
    }
}
