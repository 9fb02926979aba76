//! Throttling: a token bucket per direction and a stream wrapper that obeys it.
//!
//! [`Bucket`] is the pure rate arithmetic (bytes per second, a small initial burst), driven by
//! `tokio::time::Instant` so tests can pause the clock. [`Throttled`] wraps any stream and
//! limits its reads and writes each to `kbps` kilobits per second, as the Russian throttling
//! of 2021 limited both directions of a flow. Without a rate it passes everything through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The smallest grant worth waking up for (unless the bucket is smaller).
const MIN_GRANT: usize = 512;

/// A token bucket counting bytes.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket refilling at `kbps` kilobits per second (1 kbit = 1000 bit), starting full.
    pub fn new(kbps: u32, now: Instant) -> Bucket {
        let rate = f64::from(kbps.max(1)) * 1000.0 / 8.0;
        // A small initial burst: a quarter second of traffic, at least one full-size segment.
        let burst = (rate / 4.0).clamp(1500.0, 64.0 * 1024.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// How many of `want` bytes may pass now, or how long to wait before asking again.
    pub fn grant(&mut self, want: usize, now: Instant) -> Result<usize, Duration> {
        self.refill(now);
        let floor = (want.min(MIN_GRANT) as f64).min(self.burst);
        if self.tokens >= floor && self.tokens >= 1.0 {
            return Ok((self.tokens as usize).min(want).max(1));
        }
        let missing = floor.max(1.0) - self.tokens;
        Err(Duration::from_secs_f64(missing / self.rate))
    }

    /// Records that `n` granted bytes passed.
    pub fn consume(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// One direction's limiter: its bucket and the timer it sleeps on.
#[derive(Debug)]
struct Limiter {
    bucket: Bucket,
    sleep: Pin<Box<Sleep>>,
}

impl Limiter {
    fn new(kbps: u32) -> Limiter {
        let now = Instant::now();
        Limiter {
            bucket: Bucket::new(kbps, now),
            sleep: Box::pin(tokio::time::sleep_until(now)),
        }
    }

    /// Waits until some bytes may pass; returns how many.
    fn poll_grant(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        loop {
            let now = Instant::now();
            match self.bucket.grant(want, now) {
                Ok(n) => return Poll::Ready(n),
                Err(wait) => {
                    self.sleep.as_mut().reset(now + wait);
                    ready!(self.sleep.as_mut().poll(cx));
                }
            }
        }
    }
}

/// A stream whose reads and writes are each limited to a rate (or not limited at all).
#[derive(Debug)]
pub struct Throttled<S> {
    inner: S,
    read: Option<Limiter>,
    write: Option<Limiter>,
    scratch: Vec<u8>,
}

impl<S> Throttled<S> {
    /// Wraps `inner`, limited to `kbps` in each direction, or unlimited for `None`.
    pub fn new(inner: S, kbps: Option<u32>) -> Throttled<S> {
        Throttled {
            inner,
            read: kbps.map(Limiter::new),
            write: kbps.map(Limiter::new),
            scratch: Vec::new(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(lim) = this.read.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = ready!(lim.poll_grant(cx, buf.remaining()));
        this.scratch.resize(n, 0);
        let mut small = ReadBuf::new(&mut this.scratch);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut small))?;
        let got = small.filled().len();
        lim.bucket.consume(got);
        buf.put_slice(&this.scratch[..got]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(lim) = this.write.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(lim.poll_grant(cx, data.len()));
        let wrote = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..n]))?;
        lim.bucket.consume(wrote);
        Poll::Ready(Ok(wrote))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn bucket_grants_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(140, t0);
        assert_eq!(b.rate(), 17_500.0);
        let n = b.grant(100_000, t0).unwrap();
        assert_eq!(n, 4375, "initial burst is a quarter second");
        b.consume(n);
        let wait = b.grant(100_000, t0).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 512.0 / 17_500.0).abs() < 1e-6,
            "{wait:?}"
        );
        // after one second, a full burst again (capped)
        assert_eq!(b.grant(100_000, t0 + Duration::from_secs(1)), Ok(4375));
        // a small want is granted as soon as that much is there
        b.consume(4375);
        assert_eq!(
            b.grant(10, t0 + Duration::from_secs(1) + Duration::from_millis(1)),
            Ok(10)
        );
        assert!(b
            .grant(100, t0 + Duration::from_secs(1) + Duration::from_millis(1))
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_pipe_runs_at_the_rate_both_ways() {
        for upload in [false, true] {
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut t = Throttled::new(a, Some(140));
            let start = Instant::now();
            let total = 175_000usize; // 10 s at 17 500 B/s
            if upload {
                let writer = tokio::spawn(async move {
                    t.write_all(&vec![1u8; total]).await.unwrap();
                    t
                });
                let mut got = vec![0u8; total];
                b.read_exact(&mut got).await.unwrap();
                drop(writer.await.unwrap());
            } else {
                b.write_all(&vec![1u8; total]).await.unwrap();
                let mut got = vec![0u8; total];
                t.read_exact(&mut got).await.unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            let want = (total as f64 - 4375.0) / 17_500.0;
            assert!(
                (secs - want).abs() < 0.2,
                "upload={upload}: {secs} s, want {want} s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unthrottled_is_instant() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut t = Throttled::new(a, None);
        let start = Instant::now();
        b.write_all(&[5u8; 500_000]).await.unwrap();
        let mut got = vec![0u8; 500_000];
        t.read_exact(&mut got).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
