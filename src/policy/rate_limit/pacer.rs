//! Even pacing (SPEC section 8, `burst`): at most `burst` requests leave back to back, and
//! beyond them one every W ÷ N of the tightest window — governor's GCRA, driven by tokio's
//! clock so that tests with paused time pace too (governor's own clock ignores it). It only
//! spaces requests; the window ledger in front of the provider is what holds the quota.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::units::Rate;

/// governor's clock on tokio's.
#[derive(Debug, Clone)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

pub(super) struct Pacer {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>,
    clock: TokioClock,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pacer")
    }
}

impl Pacer {
    /// One request every `tightest.per ÷ tightest.count`, `burst` back to back.
    pub(super) fn new(tightest: Rate, burst: u32) -> Self {
        let spacing = (tightest.per / tightest.count.max(1)).max(Duration::from_nanos(1));
        // governor multiplies the spacing by `burst - 1` in nanoseconds, unchecked: a burst so
        // large that the product passes u64 (e.g. `burst = 4294967295` on "1/h") would wrap, or
        // panic in a debug build. Beyond that product the burst is unlimited anyway.
        let most = u64::MAX / u64::try_from(spacing.as_nanos()).unwrap_or(u64::MAX).max(1);
        let burst =
            u32::try_from(u64::from(burst).min(most.saturating_add(1)).max(1)).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(spacing)
            .expect("a spacing of at least 1 ns")
            .allow_burst(burst);
        let clock = TokioClock {
            start: Instant::now(),
        };
        Pacer {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// Takes the next cell if it is due, else says how long until it is.
    pub(super) fn take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_huge_burst_on_a_slow_rate_neither_panics_nor_wraps() {
        // ["5/s", "10000/day"]: the day window is the tightest (one per 8.64 s). governor's
        // spacing × (burst - 1) in u64 nanoseconds passes 2^64 by less than one spacing at
        // this burst: wrapped, the burst would be 1.
        let pacer = Pacer::new("10000/day".parse().unwrap(), 2_135_039_825);
        for _ in 0..1_000 {
            assert_eq!(pacer.take(), Ok(()), "the burst is huge");
        }
        for rate in ["1/h", "1/day", "4294967295/day", "1/1ms"] {
            let pacer = Pacer::new(rate.parse().unwrap(), u32::MAX);
            for _ in 0..1_000 {
                assert_eq!(pacer.take(), Ok(()), "{rate}: the burst is huge");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_burst_cells_come_evenly() {
        let pacer = Pacer::new("10/s".parse().unwrap(), 3);
        for _ in 0..3 {
            assert_eq!(pacer.take(), Ok(()));
        }
        assert_eq!(pacer.take(), Err(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(pacer.take(), Ok(()));
        assert!(pacer.take().is_err());
    }
}
