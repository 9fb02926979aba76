//! The UDP listener: one or more sockets sharing a port (`SO_REUSEPORT`), one thread each.
//!
//! Each socket is served by a dedicated OS thread doing blocking, batched I/O: one
//! `recvmmsg(2)` takes every query waiting on the socket (up to [`BATCH`]; it blocks only for
//! the first), each is answered in turn, and one `sendmmsg(2)` sends every answer that needed
//! no I/O (blocked names, cached answers, errors). Under load a batch holds many queries, so
//! the two system calls are shared by all of them; when idle a batch is one query and costs
//! what `recv_from`/`send_to` did. There is no readiness polling and no task wake-up on this
//! path. Only queries that must go upstream are handed to the tokio runtime as a task, which
//! sends its answer on the same socket. Responses larger than the client's EDNS payload size
//! (512 bytes without EDNS) go out truncated, with TC set, for the client to retry over TCP.
//! The threads end with the process.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;

use super::answer::{DnsTransport, Frontend, Step};

/// Receive buffer asked of the kernel per socket, to ride out bursts.
const RECV_BUFFER: usize = 4 << 20;

/// Queries taken from the socket per `recvmmsg` at most.
pub const BATCH: usize = 32;

/// The largest datagram a slot holds (the largest UDP payload).
const SLOT: usize = 65_535;

/// Binds `count` UDP sockets on `addr` (port 0: a free port, the same for all of them).
///
/// With more than one socket, a socket without `SO_REUSEPORT` first checks the port (port 0:
/// lets the kernel pick one) and is closed, then the group binds it. Asked directly for
/// port 0 with `SO_REUSEPORT`, Linux may hand out a port that another process's
/// `SO_REUSEPORT` socket (same user) holds, and a fixed port held that way binds too: the
/// two would then share its datagrams. With the check, a held fixed port is `AddrInUse`; a
/// picked port taken in between is given up for another.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    if count <= 1 {
        return Ok(vec![bind_one(addr, false)?]);
    }
    let mut last = None;
    for _ in 0..8 {
        let port = bind_one(addr, false)?.local_addr()?.port();
        match bind_group(SocketAddr::new(addr.ip(), port), count) {
            Ok(socks) => return Ok(socks),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}

/// Binds `count` sockets with `SO_REUSEPORT` on `addr`, whose port is not 0.
fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    (0..count).map(|_| bind_one(addr, true)).collect()
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
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Serves queries arriving on `sock` on the calling thread, forever; upstream work goes to
/// `rt`.
pub fn serve(front: Arc<Frontend>, sock: Arc<UdpSocket>, rt: Handle) {
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        if let Err(e) = recv_batch(&sock, &mut rx, &mut bufs, &mut got) {
            // Interrupted, or an ICMP error of an earlier send on some systems: keep
            // serving, without spinning if the error persists.
            tracing::debug!(error = %e, "udp receive error");
            if e != Errno::EINTR {
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        for (i, &(len, peer)) in got.iter().enumerate() {
            let Some(peer) = peer else { continue };
            let query = &bufs[i * SLOT..i * SLOT + len];
            match front.answer_now(peer, query, DnsTransport::Udp) {
                Step::Reply(bytes) => replies.push((bytes, peer)),
                Step::Silent => {}
                Step::Upstream(pending) => {
                    let (front, sock) = (Arc::clone(&front), Arc::clone(&sock));
                    rt.spawn(async move {
                        if let Some(bytes) = front.answer_later(pending).await {
                            send(&sock, &bytes, peer);
                        }
                    });
                }
            }
        }
        send_batch(&sock, &mut tx, &replies);
        replies.clear();
    }
}

/// Blocks until a datagram is there, then takes up to [`BATCH`] of them into the slots of
/// `bufs`; `got` says each one's length and sender (`None`: not an IP sender).
fn recv_batch(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [u8],
    got: &mut Vec<(usize, Option<SocketAddr>)>,
) -> Result<(), Errno> {
    got.clear();
    let mut slots = bufs.chunks_mut(SLOT);
    let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
        [IoSliceMut::new(
            slots.next().expect("BATCH slots of SLOT bytes"),
        )]
    });
    let flags = MsgFlags::MSG_WAITFORONE;
    for m in socket::recvmmsg(sock.as_raw_fd(), headers, iovs.iter_mut(), flags, None)? {
        got.push((m.bytes.min(SLOT), m.address.and_then(|a| socket_addr(&a))));
    }
    Ok(())
}

/// Sends every reply (at most [`BATCH`]) with as few `sendmmsg` calls as the kernel
/// allows; a reply the kernel refuses is logged and skipped.
fn send_batch(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    replies: &[(Vec<u8>, SocketAddr)],
) {
    let mut rest = replies;
    while !rest.is_empty() {
        if let [(bytes, peer)] = rest {
            return send(sock, bytes, *peer);
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = rest.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> =
            rest.iter().map(|(_, p)| Some((*p).into())).collect();
        let fd = sock.as_raw_fd();
        match socket::sendmmsg(fd, headers, &iovs, &addrs, [], MsgFlags::empty()) {
            Ok(sent) => rest = &rest[sent.count().max(1)..],
            Err(Errno::EINTR) => {}
            Err(e) => {
                // The first unsent reply failed on its own: log it, go on with the rest.
                tracing::debug!(error = %e, peer = %rest[0].1, "udp send failed");
                rest = &rest[1..];
            }
        }
    }
}

/// The sender of a datagram as a socket address, if it is IPv4 or IPv6.
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

fn send(sock: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, peer) {
        tracing::debug!(error = %e, %peer, "udp send failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process's `SO_REUSEPORT` socket on `addr`, as a test of sharing would meet it.
    fn foreign(addr: SocketAddr) -> io::Result<UdpSocket> {
        bind_one(addr, true)
    }

    #[test]
    fn a_picked_port_is_never_one_a_reuseport_socket_holds() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let held: Vec<UdpSocket> = (0..400).map(|_| foreign(any).unwrap()).collect();
        let ports: std::collections::HashSet<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        for _ in 0..300 {
            let socks = bind(any, 2).unwrap();
            let port = socks[0].local_addr().unwrap().port();
            assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
            assert!(
                !ports.contains(&port),
                "port {port} is shared with another socket"
            );
        }
    }

    #[test]
    fn a_fixed_port_held_by_a_reuseport_socket_is_in_use() {
        let other = foreign("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind(other.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
