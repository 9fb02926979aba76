//! The QUIC relay (`[tls] quic_listen`): a UDP relay for redirected UDP/443 that enacts
//! `quic-drop`.
//!
//! Per client address (a flow) the relay collects the client's first Initials, decrypts them
//! (`crate::sniff::quic`) to read the SNI, and decides: QUIC v1 Initials of at least 1001 bytes are
//! dropped when the name or the destination address is blocked with `quic-drop` (the shipped
//! `ru-quic-v1` rule does this for every address from 2022-03-04, as the Russian censor did);
//! everything else is relayed both ways. Rules decide on the flow as a UDP/443 connection
//! with the ClientHello's ECH and JA4 (`q` fingerprints), for the client group's ISP, at the
//! group's simulated date. With the jurisdiction's `reassemble = false` only the
//! first Initial is read. Idle flows are forgotten after a minute.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::enforce::conn::{Hello, Known};
use crate::enforce::verdict;
use crate::gateway::{Client, Gateway, StartError};
use crate::policy::{Policy, RuleId};
use crate::rules::{Port, Proto, Technique};
use crate::sniff::quic::{self, CryptoStream, InitialInfo};

/// A flow with no traffic this long is forgotten.
const IDLE: Duration = Duration::from_secs(60);

/// Initials read before the relay gives up on finding the SNI.
const MAX_INITIALS: usize = 4;

/// Binds the `[tls] quic_listen` sockets and spawns their relays.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(section) = &gw.config.tls else {
        return Ok(Vec::new());
    };
    let mut tasks = Vec::new();
    for addr in &section.quic_listen {
        let bind = |source| StartError::Bind {
            addr: *addr,
            what: "quic",
            source,
        };
        let sock = UdpSocket::bind(addr).await.map_err(bind)?;
        let local = sock.local_addr().map_err(bind)?;
        gw.announce("quic", local);
        let span = tracing::info_span!("quic", listen = %local);
        tasks.push(tokio::spawn(
            Relay::new(Arc::clone(gw), sock).run().instrument(span),
        ));
    }
    Ok(tasks)
}

/// What a flow does with its datagrams.
enum State {
    /// Waiting for enough Initials to read the SNI (datagrams held back).
    Deciding {
        crypto: CryptoStream,
        initials: usize,
        held: Vec<Vec<u8>>,
    },
    /// Relaying; big v1 Initials are dropped when `drop_initials`.
    Decided { drop_initials: bool },
}

struct Flow {
    state: State,
    upstream: Option<Arc<UdpSocket>>,
    last: Arc<AtomicU64>,
    _active: crate::enforce::flow::ActiveFlow,
}

struct Relay {
    gw: Arc<Gateway>,
    sock: Arc<UdpSocket>,
    flows: HashMap<SocketAddr, Flow>,
    start: Instant,
}

impl Relay {
    fn new(gw: Arc<Gateway>, sock: UdpSocket) -> Relay {
        Relay {
            gw,
            sock: Arc::new(sock),
            flows: HashMap::new(),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(mut self) {
        let (expired_tx, mut expired_rx) = mpsc::unbounded_channel::<SocketAddr>();
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                got = self.sock.recv_from(&mut buf) => match got {
                    Ok((n, client)) => {
                        let d = buf[..n].to_vec();
                        self.datagram(client, d, &expired_tx).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "recv failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(client) = expired_rx.recv() => {
                    self.flows.remove(&client);
                }
            }
        }
    }

    async fn datagram(
        &mut self,
        client: SocketAddr,
        d: Vec<u8>,
        expired: &mpsc::UnboundedSender<SocketAddr>,
    ) {
        let policy: Arc<Policy> = arc_swap::Guard::into_inner(self.gw.policy());
        let Some(c) = self.gw.client(&policy, client.ip()) else {
            self.gw.record_refused("quic", client, "");
            tracing::debug!(client.addr = %client, decision = "refused", "client is in no configured network");
            return;
        };
        let now = self.now_ms();
        let flow = self.flows.entry(client).or_insert_with(|| Flow {
            state: State::Deciding {
                crypto: CryptoStream::default(),
                initials: 0,
                held: Vec::new(),
            },
            upstream: None,
            last: Arc::new(AtomicU64::new(now)),
            _active: crate::enforce::flow::ActiveFlow::new(&self.gw.metrics),
        });
        flow.last.store(now, Ordering::Relaxed);
        let j = c.jurisdiction;
        let hello: Option<Hello> = match &mut flow.state {
            State::Decided { drop_initials } => {
                let drop_it = *drop_initials && quic::is_big_v1_initial(&d);
                if !drop_it {
                    if let Some(up) = &flow.upstream {
                        let _ = up.send(&d).await;
                    }
                }
                return;
            }
            State::Deciding {
                crypto,
                initials,
                held,
            } => {
                let reassemble = policy.jurisdiction(j).reassemble;
                let parsed = InitialInfo::parse(&d);
                held.push(d);
                match parsed {
                    Ok(info) => {
                        *initials += 1;
                        crypto.add(info.crypto);
                        match crypto.client_hello() {
                            Ok(h) => h.as_ref().map(Hello::of),
                            Err(_) if reassemble && *initials < MAX_INITIALS => return,
                            Err(_) => None,
                        }
                    }
                    Err(_) => None,
                }
            }
        };
        let State::Deciding { held, .. } = std::mem::replace(
            &mut flow.state,
            State::Decided {
                drop_initials: false,
            },
        ) else {
            return;
        };
        let sni = hello.as_ref().and_then(|h| h.sni.clone()).map(|s| s.0);
        let dest = self.destination(sni.as_deref()).await;
        let Some(flow) = self.flows.get_mut(&client) else {
            return;
        };
        let Some(dest) = dest else {
            tracing::info!(client.addr = %client, tls.sni = sni.as_deref().unwrap_or(""), "no destination for the QUIC flow");
            flow.state = State::Decided {
                drop_initials: true,
            };
            return;
        };
        let rule = quic_drop_rule(&policy, &c, sni.as_deref(), hello.as_ref(), dest.ip());
        let drop_initials = rule.is_some();
        let decision = match &rule {
            Some((r, _)) => crate::policy::Decision::Block(crate::policy::Block {
                jurisdiction: j,
                rule: *r,
                techniques: policy.rule(*r).techniques,
            }),
            None => crate::policy::Decision::Allow {
                jurisdiction: j,
                rule: None,
            },
        };
        let shown = sni.clone().unwrap_or_else(|| dest.to_string());
        let enacted = drop_initials.then_some(Technique::QuicDrop);
        self.gw
            .record("quic", client, &shown, &decision, enacted, |_| {});
        if let Some((_, rule)) = &rule {
            tracing::info!(client.addr = %client, dest = %dest, tls.sni = sni.as_deref().unwrap_or(""), decision = "quic-drop", rule = rule.as_str(), "blocked");
        }
        flow.state = State::Decided { drop_initials };
        let up = match open_upstream(dest).await {
            Ok(u) => Arc::new(u),
            Err(e) => {
                tracing::info!(dest = %dest, error = %e, "cannot open the upstream socket");
                return;
            }
        };
        for h in held {
            if !(drop_initials && quic::is_big_v1_initial(&h)) {
                let _ = up.send(&h).await;
            }
        }
        flow.upstream = Some(Arc::clone(&up));
        let back = Arc::clone(&self.sock);
        let last = Arc::clone(&flow.last);
        let start = self.start;
        let expired = expired.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match tokio::time::timeout(IDLE, up.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                        let _ = back.send_to(&buf[..n], client).await;
                    }
                    Ok(Err(_)) => {}
                    Err(_) => {
                        let idle_ms = (start.elapsed().as_millis() as u64)
                            .saturating_sub(last.load(Ordering::Relaxed));
                        if idle_ms >= IDLE.as_millis() as u64 {
                            let _ = expired.send(client);
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Where a flow goes: the fixed `quic_forward`, or the SNI's address.
    async fn destination(&self, sni: Option<&str>) -> Option<SocketAddr> {
        let section = self.gw.config.tls.as_ref()?;
        if let Some(f) = section.quic_forward {
            return Some(f);
        }
        let addrs = self.gw.upstream.lookup_ip(sni?).await.ok()?;
        let ip = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first())?;
        Some(SocketAddr::new(*ip, section.direct_quic_port))
    }
}

/// The rule (id and name) that drops this flow's big v1 Initials, by name or by address, for
/// `client` on a UDP/443 connection with the ClientHello `hello` (its ECH and JA4).
fn quic_drop_rule(
    policy: &Policy,
    client: &Client,
    sni: Option<&str>,
    hello: Option<&Hello>,
    ip: IpAddr,
) -> Option<(RuleId, String)> {
    let (j, at) = (client.jurisdiction, client.at);
    let mut known = Known {
        port: Some(Port {
            proto: Proto::Udp,
            port: 443,
        }),
        dst: Some(ip),
        ..Known::default()
    };
    if let Some(h) = hello {
        known.saw(h);
    }
    let minute = crate::gateway::clock_minute(at, policy.jurisdiction(j).utc_offset);
    let conn = known.conn(client.isp, minute);
    verdict::for_quic(policy, j, sni, ip, &conn, at).map(|r| (r, policy.rule(r).id.clone()))
}

async fn open_upstream(dest: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: IpAddr = if dest.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind((any, 0)).await?;
    s.connect(dest).await?;
    Ok(s)
}
