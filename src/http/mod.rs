//! The `http` frontend: a forward proxy (HTTP/1.1 absolute-form requests and `CONNECT`).
//!
//! Each `[http] listen` address gets an accept loop; each connection is served by `hyper`
//! ([`proxy`]). Only clients in a mapped network are served: others get 403 and are counted
//! (`Gateway::record_refused`, the `refused_clients` metric). Plain HTTP requests are checked
//! by URL (host and path) and answered with the blockpage (`crate::enforce::blockpage`) when the rule says
//! `http-blockpage`; CONNECT tunnels are checked
//! by target and by the SNI/Host of their first bytes, then reset, swallowed, throttled or
//! spliced (`crate::enforce::flow`). Origins are resolved with the gateway's resolver and their
//! addresses checked for `ip-drop`/`ip-reset`.

pub mod pool;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::gateway::{Gateway, StartError};

/// Binds the `[http]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(section) = &gw.config.http else {
        return Ok(Vec::new());
    };
    let mut tasks = Vec::new();
    for addr in &section.listen {
        let bind = |source| StartError::Bind {
            addr: *addr,
            what: "http",
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        gw.announce("http", local);
        tasks.push(tokio::spawn(accept_loop(Arc::clone(gw), listener, local)));
    }
    Ok(tasks)
}

async fn accept_loop(gw: Arc<Gateway>, listener: TcpListener, local: SocketAddr) {
    let max = gw.config.http.as_ref().map_or(1024, |h| h.max_connections);
    let slots = crate::limits::ConnLimit::new(max, Arc::clone(&gw.metrics));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(permit) = slots.try_acquire("http") else {
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let span = tracing::info_span!("http", client.addr = %peer);
                let gw = Arc::clone(&gw);
                tokio::spawn(
                    async move {
                        proxy::serve_connection(gw, stream, peer, local).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // e.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
