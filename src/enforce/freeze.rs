//! The `freeze` technique on a stream: after `freeze_after_bytes` server->client bytes the
//! flow silently stops both ways (the 2025 Russian "16 KB" behaviour).
//!
//! [`Frozen`] (a [`Limited`] stream) wraps the *server* side of a relayed flow (the origin connection of the forward
//! proxy, the upstream of a CONNECT tunnel or of the transparent listener). Reads from the
//! server pass until the budget is spent, exactly to the byte; then reads never complete and
//! writes towards the server are swallowed, so the client gets neither more data nor a FIN
//! nor a RST. The hold ends when the client side closes (the relay shuts the server side
//! down: the frozen read then ends) or after `hold`, so the gateway keeps nothing forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Sleep;

use super::limited::{Limit, Limited, Pass};

/// A server-side stream that freezes after a byte budget (or passes through without one).
pub type Frozen<S> = Limited<S, Freeze>;

/// The [`Limit`] of a [`Frozen`] stream: its byte budget, then the hold.
#[derive(Debug)]
pub struct Freeze {
    /// Server->client bytes still allowed; `None` = never freezes.
    left: Option<u64>,
    hold: Duration,
    /// Set once the budget is spent: the end of the hold.
    until: Option<Pin<Box<Sleep>>>,
    /// The relay shut the server side down while frozen (the client left).
    closed: bool,
    waker: Option<Waker>,
}

impl<S> Limited<S, Freeze> {
    /// `inner`, frozen after `after` bytes read from it (none: never), held for `hold`.
    pub fn new(inner: S, after: Option<u32>, hold: Duration) -> Frozen<S> {
        let limit = Freeze {
            left: after.map(u64::from),
            hold,
            until: None,
            closed: false,
            waker: None,
        };
        Limited { inner, limit }
    }

    /// Whether the budget is spent.
    pub fn is_frozen(&self) -> bool {
        self.limit.until.is_some()
    }
}

impl Limit for Freeze {
    fn poll_read(&mut self, cx: &mut Context<'_>, _want: usize) -> Poll<io::Result<Pass>> {
        let Some(left) = self.left else {
            return Poll::Ready(Ok(Pass::All));
        };
        let Some(until) = self.until.as_mut() else {
            return Poll::Ready(Ok(Pass::UpTo(usize::try_from(left).unwrap_or(usize::MAX))));
        };
        if self.closed {
            return Poll::Ready(Ok(Pass::Nothing));
        }
        if until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "frozen flow held until its hold time",
            )));
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn read(&mut self, n: usize) {
        let Some(left) = self.left.as_mut() else {
            return;
        };
        *left -= n as u64;
        if *left == 0 {
            tracing::debug!("flow frozen");
            self.until = Some(Box::pin(tokio::time::sleep(self.hold)));
        }
    }

    fn poll_write(&mut self, _cx: &mut Context<'_>, _want: usize) -> Poll<Pass> {
        Poll::Ready(if self.until.is_some() {
            Pass::Nothing
        } else {
            Pass::All
        })
    }

    fn wrote(&mut self, _n: usize) {}

    fn held(&mut self, shutdown: bool) -> bool {
        if self.until.is_none() {
            return false;
        }
        if shutdown {
            self.closed = true;
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn stops_at_the_byte_then_holds_and_swallows() {
        let (mut server, ours) = tokio::io::duplex(1 << 16);
        server.write_all(&[7u8; 5000]).await.unwrap();
        let mut f = Frozen::new(ours, Some(1234), Duration::from_millis(200));
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !f.is_frozen() {
            let n = f.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), 1234);
        // Frozen: nothing more arrives although the server has sent more ...
        let more = tokio::time::timeout(Duration::from_millis(50), f.read(&mut buf)).await;
        assert!(more.is_err(), "a frozen read must not complete");
        // ... writes are swallowed, and the hold ends with an error, not an EOF.
        f.write_all(b"to the server").await.unwrap();
        let end = f.read(&mut buf).await;
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(f);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the server got nothing after the freeze");
    }

    #[tokio::test]
    async fn a_shutdown_while_frozen_ends_the_hold() {
        let (mut server, ours) = tokio::io::duplex(1 << 16);
        server.write_all(&[1u8; 100]).await.unwrap();
        let mut f = Frozen::new(ours, Some(100), Duration::from_secs(3600));
        let mut buf = [0u8; 256];
        assert_eq!(f.read(&mut buf).await.unwrap(), 100);
        f.shutdown().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(1), f.read(&mut buf))
            .await
            .expect("the hold ends once the client side left")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn without_a_budget_everything_passes() {
        let (mut server, ours) = tokio::io::duplex(1 << 16);
        server.write_all(&[9u8; 3000]).await.unwrap();
        drop(server);
        let mut f = Frozen::new(ours, None, Duration::from_secs(1));
        let mut all = Vec::new();
        f.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 3000);
    }
}
