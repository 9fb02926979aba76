//! The `dns` frontend: answers DNS over UDP and TCP as each client's censor would.
//!
//! For every address of `[dns] listen` it binds UDP (one socket and thread per core, sharing
//! the port with `SO_REUSEPORT`) and TCP on the same port, and logs one `listening` line per
//! listener. The UDP threads live as long as the process; the TCP tasks are returned.
//! Files: [`wire`] reads queries and writes responses ([`quick`]: plain queries on the hot
//! path, without allocating), [`answer`] makes the decision (policy,
//! technique, cache, upstream, screening of answers), [`cache`] is the TTL cache and
//! [`template`] its pre-encoded fast path, [`forward`] sends misses upstream (coalescing
//! identical questions), [`udp`] and [`tcp`] are the listeners. Counters go
//! to the gateway's metrics and every decision to [`Gateway::record`] (metrics and decision
//! log).

pub mod answer;
pub mod cache;
pub mod forward;
pub mod quick;
pub mod tcp;
pub mod template;
pub mod udp;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::gateway::{Gateway, StartError};
pub use answer::{DnsTransport, Frontend};

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
        let (udp, udp_addr, tcp) = bind_pair(addr, sockets)?;
        let tcp_addr = tcp.local_addr().map_err(bind_err("dns/tcp"))?;
        gw.announce("dns/udp", udp_addr);
        gw.announce("dns/tcp", tcp_addr);
        for (i, sock) in udp.into_iter().enumerate() {
            let (front, rt) = (Arc::clone(&front), tokio::runtime::Handle::current());
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp::serve(front, Arc::new(sock), rt))
                .map_err(bind_err("dns/udp"))?;
        }
        tasks.push(tokio::spawn(tcp::serve(
            Arc::clone(gw),
            Arc::clone(&front),
            tcp,
            cfg.max_connections,
        )));
    }
    Ok(tasks)
}

/// UDP sockets and a TCP listener on the same port. With port 0, the port UDP got may be in
/// use for TCP (e.g. by an outgoing connection): try a few fresh ports before giving up.
fn bind_pair(
    addr: SocketAddr,
    sockets: usize,
) -> Result<
    (
        Vec<std::net::UdpSocket>,
        SocketAddr,
        tokio::net::TcpListener,
    ),
    StartError,
> {
    let err = |what, source| StartError::Bind { addr, what, source };
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = std::io::Error::other("no attempt made");
    for _ in 0..attempts {
        let udp = udp::bind(addr, sockets).map_err(|e| err("dns/udp", e))?;
        let udp_addr = match udp.first().map(|s| s.local_addr()) {
            Some(Ok(a)) => a,
            Some(Err(e)) => return Err(err("dns/udp", e)),
            None => addr,
        };
        match tcp::bind(udp_addr) {
            Ok(l) => return Ok((udp, udp_addr, l)),
            Err(e) => last = e,
        }
    }
    Err(err("dns/tcp", last))
}
