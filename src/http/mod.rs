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

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::gateway::{Gateway, StartError};
use crate::listen::{self, Admit, Listen};

/// Binds the `[http]` listeners and spawns their accept loops (`crate::listen`).
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(section) = &gw.config.http else {
        return Ok(Vec::new());
    };
    let opts = Listen {
        name: "http",
        max_connections: section.max_connections,
        // Unmapped clients get a 403 from the proxy (and are counted there).
        admit: Admit::Everyone,
    };
    let mut tasks = Vec::new();
    for addr in &section.listen {
        let listener = listen::bind(gw, "http", *addr).await?;
        let g = Arc::clone(gw);
        tasks.push(tokio::spawn(listen::serve(
            Arc::clone(gw),
            listener,
            opts,
            move |c| proxy::serve_connection(Arc::clone(&g), c.stream, c.peer, c.local),
        )));
    }
    Ok(tasks)
}
