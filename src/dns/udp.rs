//! The UDP listener: one or more sockets sharing a port (`SO_REUSEPORT`), one task each.
//!
//! Each task receives a datagram, answers it synchronously when it can (blocked names, cached
//! answers, errors) and spawns a task only for queries that must go upstream, so the hot path
//! does not allocate a task per packet. Responses larger than the client's EDNS payload size
//! (512 bytes without EDNS) go out truncated, with TC set, for the client to retry over TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::answer::{Frontend, Step, Transport};

/// Receive buffer asked of the kernel per socket, to ride out bursts.
const RECV_BUFFER: usize = 4 << 20;

/// Binds `count` UDP sockets on `addr` (port 0: a free port, the same for all of them).
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let first = bind_one(addr, count > 1)?;
    let bound = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..count {
        socks.push(bind_one(bound, true)?);
    }
    Ok(socks)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Best effort: a smaller buffer only means drops under bursts.
    let _ = s.set_recv_buffer_size(RECV_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Serves queries arriving on `sock` until the task is aborted.
pub async fn serve(front: Arc<Frontend>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        match front.answer_now(peer, &buf[..n], Transport::Udp) {
            Step::Reply(bytes) => send(&sock, &bytes, peer).await,
            Step::Silent => {}
            Step::Upstream(pending) => {
                let (front, sock) = (Arc::clone(&front), Arc::clone(&sock));
                tokio::spawn(async move {
                    if let Some(bytes) = front.answer_later(pending).await {
                        send(&sock, &bytes, peer).await;
                    }
                });
            }
        }
    }
}

async fn send(sock: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, peer).await {
        tracing::debug!(error = %e, %peer, "udp send failed");
    }
}
