//! The UDP relay: one flow per client address, each with its own upstream socket connected to
//! `forward`; flows end after [`super::UDP_IDLE`] without packets. Datagrams from clients
//! outside every `[[clients]]` network are dropped and counted ([`Refusals`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::RelaySection;
use crate::detect::{Detector, Dir, Transport};
use crate::enforce::inspect::{Fate, Inspector};
use crate::gateway::{Gateway, StartError};
use crate::listen::Refusals;

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

#[derive(Debug)]
struct Session {
    upstream: UdpSocket,
    inspector: Mutex<Inspector>,
}

impl Session {
    /// The inspector's fate for one datagram travelling in `dir`.
    fn fate(&self, gw: &Gateway, dir: Dir, data: &[u8]) -> Fate {
        match self.inspector.lock() {
            Ok(mut i) => i.on_packet(dir, data, &gw.policy(), gw.at(), Instant::now()),
            Err(_) => Fate::Discard,
        }
    }
}

/// Binds the relay and spawns its receive loop.
pub async fn start(
    gw: Arc<Gateway>,
    r: RelaySection,
    detectors: Arc<[Box<dyn Detector>]>,
) -> Result<JoinHandle<()>, StartError> {
    let sock = UdpSocket::bind(r.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: r.listen,
            what: "relay/udp",
            source,
        })?;
    let local = sock.local_addr().map_err(|source| StartError::Bind {
        addr: r.listen,
        what: "relay/udp",
        source,
    })?;
    gw.announce("relay/udp", local);
    let sock = Arc::new(sock);
    let span = tracing::info_span!("relay", relay.listen = %local, relay.protocol = "udp");
    Ok(tokio::spawn(serve(gw, r, detectors, sock).instrument(span)))
}

async fn serve(
    gw: Arc<Gateway>,
    r: RelaySection,
    detectors: Arc<[Box<dyn Detector>]>,
    sock: Arc<UdpSocket>,
) {
    let sessions: Sessions = Arc::default();
    let refusals = Refusals::new("relay/udp", "relay");
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "recv failed");
                continue;
            }
        };
        let existing = sessions.lock().ok().and_then(|s| s.get(&client).cloned());
        let session = match existing {
            Some(s) => s,
            None => match open(&gw, &r, &detectors, &sock, &sessions, &refusals, client).await {
                Some(s) => s,
                None => continue,
            },
        };
        let fate = session.fate(&gw, Dir::ToServer, &buf[..n]);
        let s = Arc::clone(&session);
        send(fate, &buf[..n], move |d| async move {
            s.upstream.send(&d).await
        })
        .await;
    }
}

/// Forwards `data` according to `fate` (throttled packets are sent from a timer task).
async fn send<F, Fut>(fate: Fate, data: &[u8], f: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<usize>> + Send,
{
    match fate {
        Fate::Forward => {
            if let Err(e) = f(data.to_vec()).await {
                tracing::debug!(error = %e, "send failed");
            }
        }
        Fate::Delay(d) => {
            let data = data.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let _ = f(data).await;
            });
        }
        Fate::Discard | Fate::Reset => {}
    }
}

/// Admits a new client: mapped to a jurisdiction, with an upstream socket and a reply task.
async fn open(
    gw: &Arc<Gateway>,
    r: &RelaySection,
    detectors: &Arc<[Box<dyn Detector>]>,
    sock: &Arc<UdpSocket>,
    sessions: &Sessions,
    refusals: &Refusals,
    client: SocketAddr,
) -> Option<Arc<Session>> {
    let Some(j) = gw.policy().jurisdiction_for(client.ip()) else {
        // Counted per datagram; the warning is rate-limited.
        refusals.refuse(gw, client, "");
        return None;
    };
    let bind: SocketAddr = if r.forward.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(bind).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "relay: cannot bind an upstream socket");
            return None;
        }
    };
    if let Err(e) = upstream.connect(r.forward).await {
        tracing::error!(error = %e, forward = %r.forward, "relay: cannot reach the forward address");
        return None;
    }
    let inspector = Inspector::new(
        Arc::clone(detectors),
        Transport::Udp,
        client,
        r.forward,
        j,
        r.mode,
    );
    let session = Arc::new(Session {
        upstream,
        inspector: Mutex::new(inspector),
    });
    if let Ok(mut s) = sessions.lock() {
        s.insert(client, Arc::clone(&session));
    }
    tracing::debug!(client = %client, "relay: new udp flow");
    let (gw, sock, sessions, s) = (
        Arc::clone(gw),
        Arc::clone(sock),
        Arc::clone(sessions),
        Arc::clone(&session),
    );
    let span = tracing::info_span!("flow", client.addr = %client);
    tokio::spawn(
        async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match tokio::time::timeout(super::UDP_IDLE, s.upstream.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        let fate = s.fate(&gw, Dir::ToClient, &buf[..n]);
                        let sock = Arc::clone(&sock);
                        send(fate, &buf[..n], move |d| async move {
                            sock.send_to(&d, client).await
                        })
                        .await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "upstream recv failed"),
                    Err(_) => break, // idle
                }
            }
            if let Ok(mut m) = sessions.lock() {
                m.remove(&client);
            }
        }
        .instrument(span),
    );
    Some(session)
}
