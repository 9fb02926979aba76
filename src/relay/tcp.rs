//! The TCP relay: each accepted connection is spliced to a new connection to `forward`; the
//! bytes of each read are one packet for the detectors. At most `max_connections` flows are
//! open at once (more are closed at once and counted); a flow idle for `idle_secs` is closed.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::RelaySection;
use crate::detect::{Detector, Dir, Transport};
use crate::enforce::inspect::{Fate, Inspector};
use crate::gateway::{Gateway, StartError};
use crate::listen::{self, Accepted, Admit, Listen};

/// Binds the relay and spawns its accept loop (`crate::listen`): clients outside every
/// `[[clients]]` network are refused at accept and counted.
pub async fn start(
    gw: Arc<Gateway>,
    r: RelaySection,
    detectors: Arc<[Box<dyn Detector>]>,
) -> Result<JoinHandle<()>, StartError> {
    let listener = listen::bind(&gw, "relay/tcp", r.listen).await?;
    let local = listener.local_addr().unwrap_or(r.listen);
    let span = tracing::info_span!("relay", relay.listen = %local, relay.protocol = "tcp");
    let opts = Listen {
        name: "relay/tcp",
        max_connections: r.max_connections,
        admit: Admit::MappedClients { layer: "relay" },
    };
    let idle = std::time::Duration::from_secs(r.idle_secs.max(1));
    let g = Arc::clone(&gw);
    let handler = move |c: Accepted| {
        // Admission looked the jurisdiction up (`Admit::MappedClients`): always `Some`.
        let inspector = c.jurisdiction.map(|j| {
            Inspector::new(
                Arc::clone(&detectors),
                Transport::Tcp,
                c.peer,
                r.forward,
                j,
                r.mode,
            )
        });
        let g = Arc::clone(&g);
        async move {
            if let Some(inspector) = inspector {
                splice(g, c.stream, r.forward, inspector, idle).await;
            }
        }
    };
    Ok(tokio::spawn(
        listen::serve(gw, listener, opts, handler).instrument(span),
    ))
}

async fn splice(
    gw: Arc<Gateway>,
    mut client: TcpStream,
    forward: std::net::SocketAddr,
    mut inspector: Inspector,
    idle: std::time::Duration,
) {
    let mut server = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TcpStream::connect(forward),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, forward = %forward, "relay: cannot connect to the forward address");
            return;
        }
        Err(_) => {
            tracing::warn!(forward = %forward, "relay: connect to the forward address timed out");
            return;
        }
    };
    let (mut cbuf, mut sbuf) = (vec![0u8; 16384], vec![0u8; 16384]);
    let (mut c_open, mut s_open) = (true, true);
    while c_open || s_open {
        let next = tokio::time::timeout(idle, async {
            tokio::select! {
                r = client.read(&mut cbuf), if c_open => (Dir::ToServer, r),
                r = server.read(&mut sbuf), if s_open => (Dir::ToClient, r),
            }
        })
        .await;
        let Ok((dir, n)) = next else {
            tracing::debug!(idle_secs = idle.as_secs(), "relay: idle flow closed");
            return;
        };
        let n = match n {
            Ok(0) | Err(_) => {
                // Half-close: pass the FIN on.
                match dir {
                    Dir::ToServer => {
                        c_open = false;
                        let _ = server.shutdown().await;
                    }
                    Dir::ToClient => {
                        s_open = false;
                        let _ = client.shutdown().await;
                    }
                }
                continue;
            }
            Ok(n) => n,
        };
        let data = match dir {
            Dir::ToServer => &cbuf[..n],
            Dir::ToClient => &sbuf[..n],
        };
        let fate = inspector.on_packet(dir, data, &gw.policy(), gw.at(), Instant::now());
        let out = match dir {
            Dir::ToServer => &mut server,
            Dir::ToClient => &mut client,
        };
        match fate {
            Fate::Forward => {}
            Fate::Delay(d) => tokio::time::sleep(d).await,
            Fate::Discard => continue,
            Fate::Reset => {
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
                return; // dropping both sockets with zero linger sends RST
            }
        }
        if out.write_all(data).await.is_err() {
            return;
        }
    }
}
