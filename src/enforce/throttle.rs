//! Throttling: every `throttle` goes through the one token bucket, [`Bucket`] (defined with
//! the other limits in `crate::limits`, since the DNS rate limit uses it too), here wrapped
//! around streams.
//!
//! The bucket starts full and refills at the rate up to a burst, so a flow's first burst
//! passes at once and the rest at the rate (a policer's shape, as measured for the Russian
//! throttling of 2021 and 2024; a pure pacer would delay even the first packets). Its callers:
//! [`Throttled`] (streams, in bytes, via `Bucket::grant`), the relays' per-packet shaping
//! (`Bucket::delay`, in `super::inspect`) and the DNS per-client rate limit (`Bucket::take`,
//! in queries). [`Throttled`] wraps any stream and limits its reads and writes each to `kbps`
//! kilobits per second, as the Russian throttling of 2021 limited both directions of a flow.
//! Without a rate it passes everything through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::time::Sleep;

use super::limited::{Limit, Limited, Pass};
pub use crate::limits::Bucket;

/// One direction's limiter: its bucket and the timer it sleeps on.
#[derive(Debug)]
struct Limiter {
    bucket: Bucket,
    sleep: Pin<Box<Sleep>>,
}

impl Limiter {
    fn new(kbps: u32) -> Limiter {
        let now = tokio::time::Instant::now();
        Limiter {
            bucket: Bucket::for_kbps(kbps, now.into_std()),
            sleep: Box::pin(tokio::time::sleep_until(now)),
        }
    }

    /// Waits until some of `want` bytes may pass (none limiter: all of them).
    fn poll_pass(lim: Option<&mut Limiter>, cx: &mut Context<'_>, want: usize) -> Poll<Pass> {
        let Some(lim) = lim else {
            return Poll::Ready(Pass::All);
        };
        if want == 0 {
            return Poll::Ready(Pass::UpTo(0));
        }
        loop {
            let now = tokio::time::Instant::now();
            match lim.bucket.grant(want, now.into_std()) {
                Ok(n) => return Poll::Ready(Pass::UpTo(n)),
                Err(wait) => {
                    lim.sleep.as_mut().reset(now + wait);
                    ready!(lim.sleep.as_mut().poll(cx));
                }
            }
        }
    }
}

/// A stream whose reads and writes are each limited to a rate (or not limited at all).
pub type Throttled<S> = Limited<S, Throttle>;

/// The [`Limit`] of a [`Throttled`] stream: a token bucket per direction.
#[derive(Debug)]
pub struct Throttle {
    read: Option<Limiter>,
    write: Option<Limiter>,
}

impl<S> Limited<S, Throttle> {
    /// Wraps `inner`, limited to `kbps` in each direction, or unlimited for `None`.
    pub fn new(inner: S, kbps: Option<u32>) -> Throttled<S> {
        let limit = Throttle {
            read: kbps.map(Limiter::new),
            write: kbps.map(Limiter::new),
        };
        Limited { inner, limit }
    }
}

impl Limit for Throttle {
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<Pass>> {
        Limiter::poll_pass(self.read.as_mut(), cx, want).map(Ok)
    }

    fn read(&mut self, n: usize) {
        if let Some(lim) = self.read.as_mut() {
            lim.bucket.consume(n);
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Pass> {
        Limiter::poll_pass(self.write.as_mut(), cx, want)
    }

    fn wrote(&mut self, n: usize) {
        if let Some(lim) = self.write.as_mut() {
            lim.bucket.consume(n);
        }
    }

    fn held(&mut self, _shutdown: bool) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn bucket_grants_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::for_kbps(140, t0);
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
            let start = tokio::time::Instant::now();
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
        let start = tokio::time::Instant::now();
        b.write_all(&[5u8; 500_000]).await.unwrap();
        let mut got = vec![0u8; 500_000];
        t.read_exact(&mut got).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
