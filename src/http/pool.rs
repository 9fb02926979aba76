//! Idle origin connections shared by every client connection of the forward proxy.
//!
//! A client connection keeps its own origin connection for its next request; when it closes,
//! an unthrottled origin connection goes here, so the next client (a browser opening a new
//! connection, or a load generator) skips the TCP handshake to the origin. A throttled origin
//! connection belongs to one client's flow and is never shared. Entries are keyed by host,
//! address and port; closed connections are dropped on the way, and each key keeps at most
//! [`MAX_IDLE_PER_KEY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

/// Idle connections kept per origin.
pub const MAX_IDLE_PER_KEY: usize = 32;

/// An origin: host name (as requested), address and port.
pub type Key = (String, IpAddr, u16);

/// The shared idle connections.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<SendRequest<Incoming>>>>,
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
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(key).or_default();
            if list.len() < MAX_IDLE_PER_KEY {
                list.push(sender);
            }
        }
    }
}
