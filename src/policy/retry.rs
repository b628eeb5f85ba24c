//! Retry with exponential backoff (`[retry]`, SPEC section 3). With the defaults a transient
//! failure gives: attempt 1, wait ~1 s, attempt 2, wait ~2 s, attempt 3, then the caller falls
//! back. Delays grow by `multiplier` up to `max_delay`; with `jitter` each is spread by up to
//! ±50 % so that many workers that failed together do not retry together. A `Retry-After` from
//! the provider replaces the computed delay for that wait.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::RngExt as _;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    pub jitter: bool,
}

/// What the caller should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAdvice {
    /// Try again, after `after` when the provider said so, else after the backoff delay.
    Retry { after: Option<Duration> },
    /// Give up now: the failure is permanent, or the channel cannot be used.
    Stop,
}

/// An error that knows whether it is worth another attempt.
pub trait Retryable {
    fn advice(&self) -> RetryAdvice;
}

impl RetryPolicy {
    /// The waits between attempts, before jitter: `max_attempts - 1` of them. The exponential
    /// schedule itself is backon's.
    pub fn base_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_factor(self.multiplier as f32)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.jitter {
            delay.mul_f64(rand::rng().random_range(0.5..=1.5))
        } else {
            delay
        }
    }

    /// The schedule for one message's attempts on one channel.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            delays: Box::new(self.base_delays()),
        }
    }
}

/// The retry state of one message on one channel: how many waits are left and how long the
/// next one is. The caller loops: attempt, and on failure ask [`Backoff::after_failure`].
pub struct Backoff {
    policy: RetryPolicy,
    delays: Box<dyn Iterator<Item = Duration> + Send + Sync>,
}

impl Backoff {
    /// After a failed attempt: how long to wait before the next one, or `None` to give up
    /// (the failure is permanent, `max_attempts` have been made, or the provider asked to wait
    /// longer than `max_delay`: a retry never waits longer, SPEC section 7, so the message goes
    /// on to the fallback instead of stalling).
    pub fn after_failure(&mut self, advice: RetryAdvice) -> Option<Duration> {
        let RetryAdvice::Retry { after } = advice else {
            return None;
        };
        if after.is_some_and(|after| after > self.policy.max_delay) {
            return None;
        }
        let delay = self.delays.next()?;
        Some(after.unwrap_or_else(|| self.policy.jittered(delay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[derive(Debug, PartialEq)]
    enum Failure {
        Transient,
        TransientAfter(Duration),
        Permanent,
    }

    impl Retryable for Failure {
        fn advice(&self) -> RetryAdvice {
            match self {
                Failure::Transient => RetryAdvice::Retry { after: None },
                Failure::TransientAfter(after) => RetryAdvice::Retry {
                    after: Some(*after),
                },
                Failure::Permanent => RetryAdvice::Stop,
            }
        }
    }

    fn spec_example() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: false,
        }
    }

    /// Runs attempts from a script of results the way a channel does, under paused time;
    /// returns the instants of each attempt, relative to the start, and the final result.
    async fn attempts_against(
        policy: RetryPolicy,
        script: Vec<Result<(), Failure>>,
    ) -> (Vec<Duration>, Result<(), Failure>) {
        let start = Instant::now();
        let mut at = Vec::new();
        let mut script = script.into_iter();
        let mut backoff = policy.backoff();
        loop {
            at.push(start.elapsed());
            let error = match script.next().unwrap_or(Ok(())) {
                Ok(()) => return (at, Ok(())),
                Err(error) => error,
            };
            match backoff.after_failure(error.advice()) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return (at, Err(error)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_attempts_one_and_two_seconds_apart_then_give_up() {
        let script = vec![
            Err(Failure::Transient),
            Err(Failure::Transient),
            Err(Failure::Transient),
            Ok(()),
        ];
        let (at, result) = attempts_against(spec_example(), script).await;
        assert_eq!(
            at,
            [
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(3)
            ]
        );
        assert_eq!(result, Err(Failure::Transient));
    }

    #[tokio::test(start_paused = true)]
    async fn success_on_the_third_attempt_is_a_success() {
        let script = vec![Err(Failure::Transient), Err(Failure::Transient), Ok(())];
        let (at, result) = attempts_against(spec_example(), script).await;
        assert_eq!(at.len(), 3);
        assert_eq!(result, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_not_retried() {
        let (at, result) =
            attempts_against(spec_example(), vec![Err(Failure::Permanent), Ok(())]).await;
        assert_eq!(at, [Duration::ZERO]);
        assert_eq!(result, Err(Failure::Permanent));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff_delay() {
        let script = vec![Err(Failure::TransientAfter(Duration::from_secs(7))), Ok(())];
        let (at, result) = attempts_against(spec_example(), script).await;
        assert_eq!(at, [Duration::ZERO, Duration::from_secs(7)]);
        assert_eq!(result, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_longer_than_max_delay_ends_the_attempts_on_this_channel() {
        let day = Duration::from_secs(86_400);
        let script = vec![Err(Failure::TransientAfter(day)), Ok(())];
        let (at, result) = attempts_against(spec_example(), script).await;
        assert_eq!(at, [Duration::ZERO]);
        assert_eq!(result, Err(Failure::TransientAfter(day)));
        // Exactly max_delay is still waited for.
        let script = vec![
            Err(Failure::TransientAfter(Duration::from_secs(30))),
            Ok(()),
        ];
        let (at, result) = attempts_against(spec_example(), script).await;
        assert_eq!(at, [Duration::ZERO, Duration::from_secs(30)]);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 7,
            max_delay: Duration::from_secs(10),
            ..spec_example()
        };
        let delays: Vec<u64> = policy.base_delays().map(|d| d.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        let once = RetryPolicy {
            max_attempts: 1,
            ..spec_example()
        };
        assert_eq!(once.base_delays().count(), 0);
    }

    #[test]
    fn jitter_stays_within_half_the_delay_either_way() {
        let policy = RetryPolicy {
            jitter: true,
            ..spec_example()
        };
        let delay = Duration::from_secs(2);
        let spread: Vec<Duration> = (0..1000).map(|_| policy.jittered(delay)).collect();
        assert!(
            spread
                .iter()
                .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3))
        );
        assert!(spread.iter().any(|d| *d < Duration::from_millis(1500)));
        assert!(spread.iter().any(|d| *d > Duration::from_millis(2500)));
    }
}
