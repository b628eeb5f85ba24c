//! A slot from whichever of several limiters has one first (spillover, SPEC section 3): each
//! limiter in turn is asked for a slot free *now*, the first in the list winning when several
//! have one; when none has, the waiter sleeps until the earliest moment any of them could
//! have one (or one of their requests completes) and asks again, in the same order.
//!
//! It holds none of the limiters' turns (like a health probe): one waiter at a time per set of
//! limiters is the caller's business, which keeps the queue in arrival order and stops every
//! waiter from waking on every free slot. It takes nothing it does not hand out: looking visits
//! the ledger, but only a slot returned counts, and a waiter dropped while it sleeps takes none.

use std::time::Duration;

use futures_util::future::select_all;
use tokio::time::sleep_until;

use super::{Look, QuotaSpent, RateLimiter, Slot, Wake};

/// Waits for a slot of any of `limiters`, preferring the earlier ones among those free at the
/// same look; returns its limiter's index with it. With a `horizon`, says at once (in the
/// limiters' order) when every limiter's next slot is further away than it (a spent day
/// window, `[bulk] max_wait`), like [`RateLimiter::acquire_within_horizon`].
pub async fn acquire_first_free<'a>(
    limiters: &[&'a RateLimiter],
    horizon: Option<Duration>,
) -> Result<(usize, Slot<'a>), Vec<QuotaSpent>> {
    assert!(!limiters.is_empty(), "at least one limiter");
    loop {
        // Registered before looking, so a completion between the look and the wait is seen.
        let mut completions: Vec<_> = limiters
            .iter()
            .map(|limiter| Box::pin(limiter.completed.notified()))
            .collect();
        for completion in &mut completions {
            completion.as_mut().enable();
        }
        let mut wake: Option<Wake> = None;
        let mut spent = Vec::new();
        for (index, limiter) in limiters.iter().enumerate() {
            match limiter.look(None, horizon).await {
                Ok(Look::Slot(slot)) => return Ok((index, slot)),
                Ok(Look::Wait(at)) => wake = Some(wake.map_or(at, |wake| wake.min(at))),
                Err(until) => spent.push(until),
            }
        }
        match wake {
            None => return Err(spent),
            Some(Wake::Yield) => tokio::task::yield_now().await,
            Some(Wake::At(at)) => {
                tokio::select! {
                    () = sleep_until(at) => {}
                    _ = select_all(completions) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{quotas, simulated_clock, single};
    use super::*;
    use crate::ledger::Ledger;
    use crate::units::RateLimit;
    use tokio::time::Instant;

    /// Takes a slot of the first free of `limiters`, answers it at once, and says whose it was.
    async fn take(limiters: &[&RateLimiter]) -> usize {
        let (index, slot) = acquire_first_free(limiters, None).await.unwrap();
        slot.answered();
        index
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_limiter_wins_while_it_has_a_slot_free_and_the_next_takes_over_at_once() {
        let (primary, fallback) = (single("2/s"), single("4/s"));
        let started = Instant::now();
        assert_eq!(take(&[&primary, &fallback]).await, 0);
        assert_eq!(take(&[&primary, &fallback]).await, 0);
        // The primary's quota is spent for a second: no waiting for it.
        assert_eq!(take(&[&primary, &fallback]).await, 1);
        assert_eq!(Instant::now(), started);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_whichever_slot_frees_first() {
        let (primary, fallback) = (single("1/s"), single("1/s"));
        let started = Instant::now();
        assert_eq!(take(&[&primary, &fallback]).await, 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(take(&[&primary, &fallback]).await, 1);
        // The primary's next slot (one second plus the 1 % margin after its first) comes before
        // the fallback's, and then the fallback's.
        assert_eq!(take(&[&primary, &fallback]).await, 0);
        assert_eq!(started.elapsed(), Duration::from_millis(1_010));
        assert_eq!(take(&[&primary, &fallback]).await, 1);
        assert_eq!(started.elapsed(), Duration::from_millis(1_510));
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_limiter_leaves_its_share_to_the_other_and_both_spent_are_said_at_once() {
        let day = |n: u32| {
            RateLimit::new(vec![
                "100/s".parse().unwrap(),
                format!("{n}/day").parse().unwrap(),
            ])
            .unwrap()
        };
        let limiter = |limit| {
            RateLimiter::with_clock(
                &quotas(&[limit], None),
                Duration::from_secs(5),
                Ledger::in_memory(),
                simulated_clock(),
            )
        };
        let (primary, fallback) = (limiter(day(1)), limiter(day(2)));
        let horizon = Some(Duration::from_secs(600));
        let mut taken = Vec::new();
        for _ in 0..3 {
            let (index, slot) = acquire_first_free(&[&primary, &fallback], horizon)
                .await
                .unwrap();
            slot.answered();
            taken.push(index);
        }
        assert_eq!(taken, [0, 1, 1]);
        let started = Instant::now();
        let spent = acquire_first_free(&[&primary, &fallback], horizon)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(spent.len(), 2);
        assert_eq!(Instant::now(), started, "said at once");
    }
}
