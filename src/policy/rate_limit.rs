//! Per-credential rate limiting with a hard guarantee: **no window of length W ever holds more
//! than N requests** to one credential whose quota is N per W, retries and health probes
//! included, from the very first request on.
//!
//! How: each credential keeps a log of the times of its last N requests (a sliding-window log).
//! A request may go at time `t` only if `t >= oldest + W + margin`, where `oldest` is the N-th
//! most recent request; any window of length W that ends at `t` then holds at most the N-1 later
//! requests and this one. This is a "burst" of exactly N spread over a window, never 2N: a fresh
//! GCRA limiter (governor's `Quota::per_minute(100)`) lets 100 through at once *and then* refills,
//! so its first minute carries ~200 requests and a strict provider answers 429 to half of them.
//! governor can only hold the invariant by giving up rate (burst b, rate N-b), which is why
//! this limiter is written here; it also runs on tokio's clock, so tests drive it with paused
//! time.
//!
//! The `margin` (1 % of W, at most 250 ms) absorbs the difference between when msgsend lets a
//! request go and when it arrives at the provider, which is where the provider counts it:
//! arrivals can bunch up by a few milliseconds when an earlier request waited for a connection.
//! It costs at most 1 % of the quota. Times are recorded when the request is let go (after the
//! timer fired), so a timer that fires late delays later requests rather than crowding them.
//!
//! Waiters are served in arrival order: one async mutex (FIFO in tokio) is held while a waiter
//! sleeps until its slot, so the next waiter computes its slot only after the previous one took
//! its own. A waiter that gives up (dropped by `tokio::time::timeout`) takes no slot.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{Instant, sleep_until};

use crate::units::Rate;

/// The largest margin kept between a window's oldest request and the next (see module doc).
const MAX_MARGIN: Duration = Duration::from_millis(250);

/// Rate limits for the credentials of one provider; [`acquire`](Self::acquire) picks the
/// credential that can send soonest, which spreads a campaign over all of them.
#[derive(Debug)]
pub struct RateLimiter {
    logs: Mutex<Vec<SlidingLog>>,
}

#[derive(Debug)]
struct SlidingLog {
    rate: Rate,
    margin: Duration,
    /// The times of the last `rate.count` requests, oldest first.
    sent: VecDeque<Instant>,
}

impl SlidingLog {
    fn new(rate: Rate) -> Self {
        SlidingLog {
            rate,
            margin: margin_for(rate.per),
            sent: VecDeque::with_capacity(rate.count as usize),
        }
    }

    /// The earliest time at or after `now` at which a request keeps the invariant.
    fn next_free(&self, now: Instant) -> Instant {
        if self.sent.len() < self.rate.count as usize {
            return now;
        }
        let oldest = self.sent[0];
        now.max(oldest + self.rate.per + self.margin)
    }

    fn record(&mut self, at: Instant) {
        if self.sent.len() == self.rate.count as usize {
            self.sent.pop_front();
        }
        self.sent.push_back(at);
    }
}

/// The spacing kept beyond the window: 1 % of it, at most [`MAX_MARGIN`].
pub fn margin_for(window: Duration) -> Duration {
    (window / 100).min(MAX_MARGIN)
}

impl RateLimiter {
    /// One limit per credential, in the provider's credential order.
    pub fn new(rates: impl IntoIterator<Item = Rate>) -> Self {
        let logs: Vec<SlidingLog> = rates.into_iter().map(SlidingLog::new).collect();
        assert!(
            !logs.is_empty(),
            "a rate limiter needs at least one credential"
        );
        RateLimiter {
            logs: Mutex::new(logs),
        }
    }

    /// Waits for a slot and takes it; returns the index of the credential to use.
    pub async fn acquire(&self) -> usize {
        let mut logs = self.logs.lock().await;
        let now = Instant::now();
        // Soonest slot first; between equals, the credential idle the longest.
        let (index, at) = logs
            .iter()
            .enumerate()
            .map(|(index, log)| (index, log.next_free(now)))
            .min_by_key(|&(index, at)| (at, logs[index].sent.back().copied()))
            .expect("at least one credential");
        Self::take(&mut logs, index, at).await;
        index
    }

    /// Waits for a slot of credential `index` (a health probe of that credential) and takes it.
    pub async fn acquire_for(&self, index: usize) {
        let mut logs = self.logs.lock().await;
        let at = logs[index].next_free(Instant::now());
        Self::take(&mut logs, index, at).await;
    }

    async fn take(logs: &mut [SlidingLog], index: usize, at: Instant) {
        if at > Instant::now() {
            sleep_until(at).await;
        }
        logs[index].record(Instant::now());
    }

    /// Like [`acquire`](Self::acquire), but gives up (taking nothing) after `limit`.
    pub async fn acquire_within(&self, limit: Duration) -> Option<usize> {
        tokio::time::timeout(limit, self.acquire()).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Runs `tasks` tasks that together acquire `total` slots under paused time; returns the
    /// instants of the acquisitions, sorted, per credential.
    fn acquisitions(rates: Vec<Rate>, tasks: usize, total: usize) -> Vec<Vec<Instant>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let credentials = rates.len();
            let limiter = Arc::new(RateLimiter::new(rates));
            let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(total));
            let mut handles = Vec::new();
            for _ in 0..tasks {
                let (limiter, remaining) = (limiter.clone(), remaining.clone());
                handles.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while remaining
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok()
                    {
                        let index = limiter.acquire().await;
                        mine.push((index, Instant::now()));
                        tokio::task::yield_now().await;
                    }
                    mine
                }));
            }
            let mut per_credential = vec![Vec::new(); credentials];
            for handle in handles {
                for (index, at) in handle.await.unwrap() {
                    per_credential[index].push(at);
                }
            }
            per_credential.iter_mut().for_each(|times| times.sort());
            per_credential
        })
    }

    /// The largest number of instants inside any half-open window `[t, t + window)`.
    fn busiest_window(times: &[Instant], window: Duration) -> usize {
        let mut busiest = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            busiest = busiest.max(end - start + 1);
        }
        busiest
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn no_window_ever_holds_more_than_the_quota(
            count in 1u32..40,
            window_ms in 10u64..5_000,
            tasks in 1usize..16,
            windows_run in 1usize..6,
        ) {
            let rate = Rate { count, per: Duration::from_millis(window_ms) };
            let total = count as usize * windows_run + 1;
            let times = acquisitions(vec![rate], tasks, total).remove(0);
            prop_assert_eq!(times.len(), total);
            prop_assert!(busiest_window(&times, rate.per) <= count as usize);
        }

        #[test]
        fn several_credentials_each_keep_their_own_quota(
            counts in proptest::collection::vec(1u32..20, 1..4),
            window_ms in 10u64..2_000,
            tasks in 1usize..12,
        ) {
            let rates: Vec<Rate> = counts.iter().map(|&count| Rate { count, per: Duration::from_millis(window_ms) }).collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum::<usize>() * 3;
            let per_credential = acquisitions(rates.clone(), tasks, total);
            for (times, rate) in per_credential.iter().zip(&rates) {
                prop_assert!(busiest_window(times, rate.per) <= rate.count as usize);
            }
        }
    }

    #[test]
    fn the_first_window_is_not_a_double_burst() {
        let rate: Rate = "100/min".parse().unwrap();
        let times = acquisitions(vec![rate], 50, 300).remove(0);
        let start = times[0];
        let in_first_minute = times
            .iter()
            .filter(|&&t| t - start < Duration::from_secs(60))
            .count();
        assert_eq!(in_first_minute, 100);
    }

    #[test]
    fn steady_state_throughput_is_within_a_few_percent_of_the_quota() {
        for (text, tasks) in [("100/min", 50), ("50/s", 8), ("250/s", 32), ("7/10s", 3)] {
            let rate: Rate = text.parse().unwrap();
            let windows = 20;
            let times = acquisitions(vec![rate], tasks, rate.count as usize * windows).remove(0);
            // The opening burst goes at once; every later request needed a slot to free up, so
            // the steady rate is the requests after the first window over the time they took.
            let elapsed = *times.last().unwrap() - times[0];
            let achieved = (times.len() - rate.count as usize) as f64 / elapsed.as_secs_f64();
            let ratio = achieved / rate.per_second();
            assert!(
                (0.97..=1.0).contains(&ratio),
                "{text}: achieved {ratio:.4} of the quota"
            );
        }
    }

    #[test]
    fn credentials_share_the_load_and_add_up() {
        let rate: Rate = "10/s".parse().unwrap();
        let per_credential = acquisitions(vec![rate; 4], 16, 400);
        for times in &per_credential {
            assert_eq!(times.len(), 100);
            assert!(busiest_window(times, rate.per) <= 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_takes_no_slot() {
        let limiter = RateLimiter::new(["1/s".parse().unwrap()]);
        assert_eq!(
            limiter.acquire_within(Duration::from_millis(1)).await,
            Some(0)
        );
        assert_eq!(
            limiter.acquire_within(Duration::from_millis(500)).await,
            None
        );
        let before = Instant::now();
        assert_eq!(limiter.acquire().await, 0);
        // One second (plus the 1 % margin) after the first slot, not after the abandoned one.
        assert_eq!(Instant::now() - before, Duration::from_millis(510));
    }
}
