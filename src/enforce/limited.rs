//! One stream wrapper for the techniques that limit how a relayed flow's bytes pass:
//! [`Limited`] sends every read and write of the wrapped stream through a [`Limit`], which says
//! how many bytes may pass now. `throttle` ([`super::throttle::Throttled`], a token bucket per
//! direction) and `freeze` ([`super::freeze::Frozen`], a byte budget, then a hold) are its two
//! limits; the polling around them is written here once.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of a read or write may pass now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Everything, straight through (no limit to account to).
    All,
    /// At most this many bytes; the limit is told how many passed.
    UpTo(usize),
    /// Nothing: a read ends (end of stream), a write is swallowed whole.
    Nothing,
}

/// What a [`Limited`] stream's reads and writes may do.
pub trait Limit {
    /// How much of a read of up to `want` bytes may pass now (or the read's error).
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<Pass>>;
    /// `n` bytes were read after [`Pass::UpTo`].
    fn read(&mut self, n: usize);
    /// How much of a write of `want` bytes may pass now.
    fn poll_write(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Pass>;
    /// `n` bytes were written after [`Pass::UpTo`].
    fn wrote(&mut self, n: usize);
    /// Whether the write side is held, so flushes and shutdowns stop here (`shutdown`: this
    /// is a shutdown).
    fn held(&mut self, shutdown: bool) -> bool;
}

/// A stream whose reads and writes pass as its [`Limit`] allows.
#[derive(Debug)]
pub struct Limited<S, L> {
    pub(super) inner: S,
    pub(super) limit: L,
}

impl<S, L> Limited<S, L> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin, L: Limit + Unpin> AsyncRead for Limited<S, L> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let max = match ready!(this.limit.poll_read(cx, buf.remaining()))? {
            Pass::All => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Pass::Nothing => return Poll::Ready(Ok(())),
            Pass::UpTo(n) => n.min(buf.remaining()),
        };
        if max == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(max));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        buf.advance(n);
        this.limit.read(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin, L: Limit + Unpin> AsyncWrite for Limited<S, L> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let max = match ready!(this.limit.poll_write(cx, data.len())) {
            Pass::All => return Pin::new(&mut this.inner).poll_write(cx, data),
            Pass::Nothing => return Poll::Ready(Ok(data.len())),
            Pass::UpTo(n) => n.min(data.len()),
        };
        if max == 0 {
            return Poll::Ready(Ok(0));
        }
        let wrote = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..max]))?;
        this.limit.wrote(wrote);
        Poll::Ready(Ok(wrote))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.limit.held(false) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.limit.held(true) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
