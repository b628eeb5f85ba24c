//! Per-credential rate limiting with a hard guarantee: **no window of length W ever holds more
//! than N requests** to one credential whose quota is N per W, retries and health probes
//! included, from the very first request on, however late the network delivers them.
//!
//! How: a request holds a [`Slot`] from the moment it is let go until its answer is back (or it
//! failed); the slot then stays counted for W (plus a small margin) after that completion. A
//! request may go only while fewer than N slots are counted (in flight, or completed less than
//! W ago). Why that is enough whatever the network does: take any window of length W at the
//! provider and, among the requests that arrived in it, the one `r` msgsend let go last. Every
//! other request `x` in the window arrived before its own completion, so
//! `start(r) <= arrival(r) < arrival(x) + W <= completion(x) + W`: `x` was still counted when
//! `r` was let go, so at most N-1 others share the window with `r`. Stamping the time when the
//! request is *let go* (as a plain sliding log does) is not enough: a request delayed on its
//! way (a slow connect, a busy machine) arrives close to the next window's first requests and
//! the provider answers 429. CI machines showed exactly that.
//!
//! This is a "burst" of exactly N spread over a window, never 2N: a fresh GCRA limiter
//! (governor's `Quota::per_minute(100)`) lets 100 through at once *and then* refills, so its
//! first minute carries ~200 requests and a strict provider answers 429 to half of them.
//! governor can only hold the invariant by giving up rate (burst b, rate N-b), and it knows
//! nothing of completions, which is why this limiter is written here; it also runs on tokio's
//! clock, so tests drive it with paused time. The price is the round trip: a slot is reused
//! after W + latency rather than W, about 0.1 % at 100 ms latency and a one-minute window.
//!
//! The `margin` (1 % of W, at most 250 ms) absorbs a provider that counts in coarse clock
//! ticks. It costs at most 1 % of the quota.
//!
//! **Adaptive pacing**: the configured quota is a ceiling, not a promise. A 429 tells the
//! limiter the provider's real quota is lower (another client shares the credential, or the
//! config is wrong), so that credential's *allowance* (requests per window, at most the quota)
//! is cut: to the larger of half the allowance and the requests the provider accepted in the
//! last window (what it demonstrably takes), at most once per window since the requests of one
//! window were let go together. A `Retry-After` also pauses the credential until then. Every
//! window without a cut raises the allowance again by 5 % of the quota (at least one request),
//! up to the quota: additive increase, multiplicative decrease, as TCP does. The invariant above
//! holds for the allowance, hence for the quota.
//!
//! Waiters are served in arrival order: one async mutex (FIFO in tokio) is held while a waiter
//! waits for its slot, so the next waiter looks for a slot only after the previous one took
//! its own. A waiter that gives up (dropped by `tokio::time::timeout`) takes no slot.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::{Instant, sleep_until};

use crate::units::Rate;

/// The largest margin kept beyond the window (see module doc).
const MAX_MARGIN: Duration = Duration::from_millis(250);

/// How much of the quota a window without a 429 gives back to a cut allowance.
const RECOVERY_PER_WINDOW: f64 = 0.05;

/// Rate limits for the credentials of one provider; [`acquire`](Self::acquire) picks the
/// credential that can send soonest, which spreads a campaign over all of them.
#[derive(Debug)]
pub struct RateLimiter {
    /// Held by the waiter whose turn it is; tokio's mutex is fair, so turns go in FIFO order.
    turn: Mutex<()>,
    /// Short critical sections only (never held across an await): slots are released from
    /// `Drop`, which cannot await.
    credentials: std::sync::Mutex<Vec<CredentialLog>>,
    /// Woken when a slot completes, which may free a credential whose N slots were all in flight.
    completed: Notify,
}

#[derive(Debug)]
struct CredentialLog {
    rate: Rate,
    margin: Duration,
    in_flight: usize,
    /// Completions of the requests that still count, oldest first: when, and whether the
    /// provider accepted the request (anything but a 429).
    completed: VecDeque<(Instant, bool)>,
    /// Requests allowed per window now: the quota, or less after a 429 (adaptive pacing).
    allowance: usize,
    /// The provider asked (`Retry-After`) not to be called before then.
    paused_until: Option<Instant>,
    /// When the allowance was last cut (one cut per window).
    last_cut: Option<Instant>,
    /// When the allowance was last cut or raised (one raise per window without a cut).
    last_change: Option<Instant>,
}

/// When a credential can take another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Availability {
    Now,
    At(Instant),
    /// All N slots are in flight: free only after one completes.
    AfterACompletion,
}

impl CredentialLog {
    fn new(rate: Rate) -> Self {
        CredentialLog {
            rate,
            margin: margin_for(rate.per),
            in_flight: 0,
            // Grown on demand, not sized to the quota: the ring buffer's head walks through
            // its whole capacity before wrapping, so a capacity of `count` (100 M for a quota
            // set "off" in a benchmark) would touch fresh memory with every request.
            completed: VecDeque::new(),
            allowance: quota(rate),
            paused_until: None,
            last_cut: None,
            last_change: None,
        }
    }

    fn availability(&mut self, now: Instant) -> Availability {
        let hold = self.rate.per + self.margin;
        while self
            .completed
            .front()
            .is_some_and(|&(at, _)| at + hold <= now)
        {
            self.completed.pop_front();
        }
        self.recover(now);
        if let Some(until) = self.paused_until {
            if now < until {
                return Availability::At(until);
            }
            self.paused_until = None;
        }
        // Counted slots must fall below the allowance: the in-flight ones free only on their
        // completion, the completed ones expire oldest first.
        let Some(free_while_in_flight) = self.allowance.checked_sub(self.in_flight + 1) else {
            return Availability::AfterACompletion;
        };
        match self.completed.len().checked_sub(free_while_in_flight) {
            None | Some(0) => Availability::Now,
            Some(to_expire) => Availability::At(self.completed[to_expire - 1].0 + hold),
        }
    }

    fn last_completion(&self) -> Option<Instant> {
        self.completed.back().map(|&(at, _)| at)
    }

    /// A 429: pause for `retry_after` if given, and cut the allowance (see the module doc).
    fn rate_limited(&mut self, now: Instant, retry_after: Option<Duration>) {
        if let Some(after) = retry_after {
            let until = now
                .checked_add(after)
                .unwrap_or(now + Duration::from_secs(86_400));
            self.paused_until = self.paused_until.max(Some(until));
        }
        if self.last_cut.is_some_and(|cut| now < cut + self.rate.per) {
            return;
        }
        let accepted = self
            .completed
            .iter()
            .filter(|&&(at, accepted)| accepted && at + self.rate.per > now)
            .count();
        let cut = (self.allowance / 2).max(accepted).max(1);
        self.allowance = cut.min(self.allowance.saturating_sub(1)).max(1);
        self.last_cut = Some(now);
        self.last_change = Some(now);
    }

    /// Raises a cut allowance by one step per whole window since it last changed.
    fn recover(&mut self, now: Instant) {
        let quota = quota(self.rate);
        let Some(changed) = self.last_change.filter(|_| self.allowance < quota) else {
            return;
        };
        let windows = (now - changed).as_nanos() / self.rate.per.as_nanos().max(1);
        if windows == 0 {
            return;
        }
        let step = ((quota as f64 * RECOVERY_PER_WINDOW) as usize).max(1);
        let windows = usize::try_from(windows).unwrap_or(usize::MAX);
        self.allowance = self
            .allowance
            .saturating_add(step.saturating_mul(windows))
            .min(quota);
        self.last_change =
            Some(changed + self.rate.per * u32::try_from(windows).unwrap_or(u32::MAX));
    }
}

fn quota(rate: Rate) -> usize {
    usize::try_from(rate.count).unwrap_or(usize::MAX)
}

/// The spacing kept beyond the window: 1 % of it, at most [`MAX_MARGIN`].
pub fn margin_for(window: Duration) -> Duration {
    (window / 100).min(MAX_MARGIN)
}

/// One request's place in its credential's quota; dropping it (when the answer is back, or the
/// request failed or was abandoned) starts the window-long wait before the place is reused.
#[derive(Debug)]
#[must_use = "the slot must live until the request has completed"]
pub struct Slot<'a> {
    limiter: &'a RateLimiter,
    credential: usize,
}

impl Slot<'_> {
    /// The index of the credential the request must use.
    pub fn credential(&self) -> usize {
        self.credential
    }

    /// Gives the slot back without a request having been made: it does not count.
    pub fn unused(self) {
        self.release(Release::Unused);
        std::mem::forget(self);
    }

    /// The provider answered 429 (with its `Retry-After`, if any): the slot counts, and the
    /// credential's pace adapts (see the module doc).
    pub fn rate_limited(self, retry_after: Option<Duration>) {
        self.release(Release::RateLimited(retry_after));
        std::mem::forget(self);
    }

    fn release(&self, how: Release) {
        {
            let mut credentials = self.limiter.lock();
            let log = &mut credentials[self.credential];
            log.in_flight -= 1;
            let now = Instant::now();
            match how {
                Release::Unused => {}
                Release::Answered => log.completed.push_back((now, true)),
                Release::RateLimited(retry_after) => {
                    log.completed.push_back((now, false));
                    log.rate_limited(now, retry_after);
                }
            }
        }
        self.limiter.completed.notify_waiters();
    }
}

/// How a slot ends.
enum Release {
    /// No request was made.
    Unused,
    /// The request completed: answered (anything but a 429), or failed on the way.
    Answered,
    /// The provider answered 429.
    RateLimited(Option<Duration>),
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.release(Release::Answered);
    }
}

impl RateLimiter {
    /// One limit per credential, in the provider's credential order.
    pub fn new(rates: impl IntoIterator<Item = Rate>) -> Self {
        let credentials: Vec<CredentialLog> = rates.into_iter().map(CredentialLog::new).collect();
        assert!(
            !credentials.is_empty(),
            "a rate limiter needs at least one credential"
        );
        RateLimiter {
            turn: Mutex::new(()),
            credentials: std::sync::Mutex::new(credentials),
            completed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CredentialLog>> {
        // A panic while holding this lock leaves counts that are still consistent (every
        // section is a few integer updates), so a poisoned lock is used as is.
        self.credentials
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a slot and takes it on the credential that can send soonest.
    pub async fn acquire(&self) -> Slot<'_> {
        self.acquire_on(None).await
    }

    /// Waits for a slot of credential `index` (a health probe of that credential) and takes it.
    pub async fn acquire_for(&self, index: usize) -> Slot<'_> {
        self.acquire_on(Some(index)).await
    }

    /// Like [`acquire`](Self::acquire), but gives up (taking nothing) after `limit`.
    pub async fn acquire_within(&self, limit: Duration) -> Option<Slot<'_>> {
        tokio::time::timeout(limit, self.acquire()).await.ok()
    }

    async fn acquire_on(&self, only: Option<usize>) -> Slot<'_> {
        let _turn = self.turn.lock().await;
        loop {
            // Registered before looking, so a completion between the look and the wait is seen.
            let completion = self.completed.notified();
            tokio::pin!(completion);
            completion.as_mut().enable();
            let availability = {
                let mut credentials = self.lock();
                let now = Instant::now();
                let (index, availability) = match only {
                    Some(index) => (index, credentials[index].availability(now)),
                    None => {
                        let mut soonest: Option<(usize, Availability)> = None;
                        for index in 0..credentials.len() {
                            let availability = credentials[index].availability(now);
                            // Between equals, the credential idle the longest.
                            let better = match soonest {
                                None => true,
                                Some((best, best_availability)) => {
                                    (availability, credentials[index].last_completion())
                                        < (best_availability, credentials[best].last_completion())
                                }
                            };
                            if better {
                                soonest = Some((index, availability));
                            }
                        }
                        soonest.expect("at least one credential")
                    }
                };
                if availability == Availability::Now {
                    credentials[index].in_flight += 1;
                    return Slot {
                        limiter: self,
                        credential: index,
                    };
                }
                availability
            };
            match availability {
                Availability::At(at) => {
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = &mut completion => {}
                    }
                }
                _ => completion.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Runs `tasks` tasks that together make `total` requests under paused time, each holding
    /// its slot for `round_trip`; returns when each request reached the "provider", sorted, per
    /// credential. Arrivals are adversarial: even-numbered requests arrive the moment they are
    /// let go, odd-numbered ones only just before their answer comes back, so late arrivals of
    /// one window meet early arrivals of the next.
    fn arrivals(
        rates: Vec<Rate>,
        tasks: usize,
        total: usize,
        round_trip: Duration,
    ) -> Vec<Vec<Instant>> {
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
                    while let Ok(left) = remaining.fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    ) {
                        let slot = limiter.acquire().await;
                        let started = Instant::now();
                        tokio::time::sleep(round_trip).await;
                        let arrived = if left % 2 == 0 {
                            started
                        } else {
                            Instant::now()
                        };
                        mine.push((slot.credential(), arrived));
                        drop(slot);
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
            round_trip_percent in 0u32..60,
        ) {
            let rate = Rate { count, per: Duration::from_millis(window_ms) };
            let total = count as usize * windows_run + 1;
            let round_trip = rate.per * round_trip_percent / 100;
            let times = arrivals(vec![rate], tasks, total, round_trip).remove(0);
            prop_assert_eq!(times.len(), total);
            prop_assert!(busiest_window(&times, rate.per) <= count as usize);
        }

        #[test]
        fn several_credentials_each_keep_their_own_quota(
            counts in proptest::collection::vec(1u32..20, 1..4),
            window_ms in 10u64..2_000,
            tasks in 1usize..12,
            round_trip_percent in 0u32..60,
        ) {
            let rates: Vec<Rate> = counts.iter().map(|&count| Rate { count, per: Duration::from_millis(window_ms) }).collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum::<usize>() * 3;
            let round_trip = Duration::from_millis(window_ms) * round_trip_percent / 100;
            let per_credential = arrivals(rates.clone(), tasks, total, round_trip);
            for (times, rate) in per_credential.iter().zip(&rates) {
                prop_assert!(busiest_window(times, rate.per) <= rate.count as usize);
            }
        }
    }

    #[test]
    fn the_first_window_is_not_a_double_burst() {
        let rate: Rate = "100/min".parse().unwrap();
        let times = arrivals(vec![rate], 50, 300, Duration::ZERO).remove(0);
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
            let times = arrivals(
                vec![rate],
                tasks,
                rate.count as usize * windows,
                Duration::ZERO,
            )
            .remove(0);
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
        let per_credential = arrivals(vec![rate; 4], 16, 400, Duration::from_millis(20));
        for times in &per_credential {
            assert_eq!(times.len(), 100);
            assert!(busiest_window(times, rate.per) <= 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_takes_no_slot() {
        let limiter = RateLimiter::new(["1/s".parse().unwrap()]);
        let first = limiter.acquire_within(Duration::from_millis(1)).await;
        assert_eq!(first.map(|slot| slot.credential()), Some(0));
        assert!(
            limiter
                .acquire_within(Duration::from_millis(500))
                .await
                .is_none()
        );
        let before = Instant::now();
        let _slot = limiter.acquire().await;
        // One second (plus the 1 % margin) after the first slot, not after the abandoned one.
        assert_eq!(Instant::now() - before, Duration::from_millis(510));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_slot_does_not_count() {
        let limiter = RateLimiter::new(["1/s".parse().unwrap()]);
        limiter.acquire().await.unused();
        let before = Instant::now();
        let _slot = limiter.acquire().await;
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_counts_from_when_its_answer_came_back() {
        let limiter = Arc::new(RateLimiter::new(["1/s".parse().unwrap()]));
        let start = Instant::now();
        let slow = limiter.acquire().await;
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let _slot = limiter.acquire().await;
                Instant::now()
            }
        });
        // The first request takes 3 s to answer: the next may not go before it is back + 1 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(slow);
        let second = waiter.await.unwrap();
        assert_eq!(second - start, Duration::from_millis(4_010));
    }

    fn allowance(limiter: &RateLimiter) -> usize {
        limiter.lock()[0].allowance
    }

    /// How many slots can be taken right now, all given back answered.
    async fn takeable_now(limiter: &RateLimiter) -> usize {
        let mut slots = Vec::new();
        while let Some(slot) = limiter.acquire_within(Duration::from_millis(1)).await {
            slots.push(slot);
        }
        slots.len()
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_cuts_the_pace_to_what_the_provider_took_and_clean_windows_raise_it() {
        let limiter = RateLimiter::new(["20/s".parse().unwrap()]);
        let mut slots = Vec::new();
        for _ in 0..20 {
            slots.push(limiter.acquire().await);
        }
        // The provider took 12 and refused 8: one cut (the 8 answers belong to one window),
        // to the 12 it took, more than half the allowance.
        for (i, slot) in slots.into_iter().enumerate() {
            if i < 12 {
                drop(slot);
            } else {
                slot.rate_limited(None);
            }
        }
        assert_eq!(allowance(&limiter), 12);
        tokio::time::advance(Duration::from_millis(1_010)).await;
        // A window after the cut the first step back (5 % of 20 = 1) is already due.
        assert_eq!(takeable_now(&limiter).await, 13);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(takeable_now(&limiter).await, 18);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(takeable_now(&limiter).await, 20, "never above the quota");
    }

    #[tokio::test(start_paused = true)]
    async fn without_accepted_requests_a_429_halves_the_pace() {
        let limiter = RateLimiter::new(["100/min".parse().unwrap()]);
        limiter.acquire().await.rate_limited(None);
        assert_eq!(allowance(&limiter), 50);
        // A second 429 within the same window does not cut again...
        limiter.acquire().await.rate_limited(None);
        assert_eq!(allowance(&limiter), 50);
        // ...one a window later does, from the allowance that clean window raised (50 + 5).
        tokio::time::advance(Duration::from_secs(60)).await;
        limiter.acquire().await.rate_limited(None);
        assert_eq!(allowance(&limiter), 27);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_credential() {
        let limiter = RateLimiter::new(["10/s".parse().unwrap(), "10/s".parse().unwrap()]);
        let first = limiter.acquire_for(0).await;
        first.rate_limited(Some(Duration::from_secs(3)));
        let before = Instant::now();
        // The other credential is not paused...
        assert_eq!(limiter.acquire().await.credential(), 1);
        assert_eq!(Instant::now(), before);
        // ...this one is, for the 3 s the provider asked.
        let _slot = limiter.acquire_for(0).await;
        assert_eq!(Instant::now() - before, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_retry_after_saturates_instead_of_panicking() {
        let limiter = RateLimiter::new(["10/s".parse().unwrap(), "10/s".parse().unwrap()]);
        limiter
            .acquire_for(0)
            .await
            .rate_limited(Some(Duration::MAX));
        // The other credential still serves, once each: no slot was released twice.
        assert_eq!(limiter.acquire().await.credential(), 1);
    }
}
