//! The `dns` frontend: answers DNS over UDP and TCP as each client's censor would.
//!
//! For every address of `[dns] listen` it binds UDP (one socket per core, sharing the port
//! with `SO_REUSEPORT`) and TCP on the same port, and logs one `listening` line per listener.
//! Files: [`wire`] reads queries and writes responses, [`answer`] makes the decision (policy,
//! technique, cache, upstream, screening of answers), [`cache`] is the TTL cache, [`template`] its pre-encoded fast path, [`udp`] and
//! [`tcp`] are the listeners. Counters go to the gateway's metrics and every decision to
//! [`Gateway::record`] (metrics and decision log).

pub mod answer;
pub mod cache;
pub mod tcp;
pub mod template;
pub mod udp;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::serve::{announce, Gateway, StartError};
pub use answer::{Frontend, Transport};

/// Binds the `[dns]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(cfg) = gw.config.dns.as_ref().filter(|d| !d.listen.is_empty()) else {
        return Ok(Vec::new());
    };
    let front = Arc::new(Frontend::new(Arc::clone(gw), cfg.cache_size));
    let sockets = cfg
        .udp_sockets
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let mut tasks = Vec::new();
    for &addr in &cfg.listen {
        let bind_err = |what: &'static str| move |source| StartError::Bind { addr, what, source };
        let udp = udp::bind(addr, sockets).map_err(bind_err("dns/udp"))?;
        let udp_addr = udp
            .first()
            .map(|s| s.local_addr())
            .transpose()
            .map_err(bind_err("dns/udp"))?
            .unwrap_or(addr);
        // TCP on the port UDP got; with port 0, any free port if that one is taken for TCP.
        let tcp = match tcp::bind(udp_addr) {
            Ok(l) => l,
            Err(_) if addr.port() == 0 => {
                tcp::bind(SocketAddr::new(addr.ip(), 0)).map_err(bind_err("dns/tcp"))?
            }
            Err(e) => return Err(bind_err("dns/tcp")(e)),
        };
        let tcp_addr = tcp.local_addr().map_err(bind_err("dns/tcp"))?;
        announce("dns/udp", udp_addr);
        announce("dns/tcp", tcp_addr);
        for sock in udp {
            tasks.push(tokio::spawn(udp::serve(Arc::clone(&front), Arc::new(sock))));
        }
        tasks.push(tokio::spawn(tcp::serve(Arc::clone(&front), tcp)));
    }
    Ok(tasks)
}
