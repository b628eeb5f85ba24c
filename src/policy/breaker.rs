//! The circuit breaker, one per provider (SPEC section 3): after `failure_threshold` consecutive
//! transient failures (5xx, timeout, connection) it opens and calls go straight to the fallback;
//! after `open_timeout` one probe call is let through (half-open); its success closes the
//! circuit, its failure opens it again. A 429 or a 400 says nothing about the provider being
//! down: it neither counts nor resets the count.
//!
//! The machine is pure: the caller passes `now`, so tests drive every transition with chosen
//! instants, and the caller turns the returned [`Transition`]s into alerts.

use std::time::Duration;

use tokio::time::Instant;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` consecutive transient failures so far.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One probe call may go; `probing` while it is in flight, refusing all others.
    HalfOpen { probing: bool },
}

/// May a call go now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Yes, as an ordinary call.
    Allowed,
    /// Yes, as the half-open probe; its outcome decides the circuit.
    Probe,
    /// No: the circuit is open (or a probe is already in flight).
    Refused,
}

/// What a finished call says about the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    /// A transient failure: server error, timeout or connection failure.
    Failure,
    /// An answer that says nothing about the provider's health (429, 400, 401).
    Neutral,
}

/// A change worth an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → Open: the provider is down.
    Opened,
    /// Half-open probe failed: still down (no new alert: the same episode).
    Reopened,
    /// Half-open probe succeeded: the provider recovered.
    Closed,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_timeout: Duration,
    state: BreakerState,
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, open_timeout: Duration) -> Self {
        CircuitBreaker {
            failure_threshold: failure_threshold.max(1),
            open_timeout,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether [`admit`](Self::admit) would refuse a call now, without changing anything.
    pub fn would_refuse(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } | BreakerState::HalfOpen { probing: false } => false,
            BreakerState::Open { until } => now < until,
            BreakerState::HalfOpen { probing: true } => true,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed { .. } => Permit::Allowed,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probing: true };
                Permit::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => Permit::Refused,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Permit::Probe
            }
        }
    }

    /// Opens the circuit now, whatever it was (a pre-flight found the provider down): calls are
    /// refused until `open_timeout` has passed, then one probe goes.
    pub fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.open_timeout,
        };
    }

    /// Records the outcome of a call that [`admit`](Self::admit) let through.
    pub fn record(
        &mut self,
        now: Instant,
        permit: Permit,
        outcome: CallOutcome,
    ) -> Option<Transition> {
        match (self.state, permit, outcome) {
            (BreakerState::HalfOpen { .. }, Permit::Probe, CallOutcome::Success) => {
                self.state = BreakerState::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (BreakerState::HalfOpen { .. }, Permit::Probe, CallOutcome::Failure) => {
                self.state = BreakerState::Open {
                    until: now + self.open_timeout,
                };
                Some(Transition::Reopened)
            }
            (BreakerState::HalfOpen { .. }, Permit::Probe, CallOutcome::Neutral) => {
                // The probe proved nothing; let the next call probe.
                self.state = BreakerState::HalfOpen { probing: false };
                None
            }
            (BreakerState::Closed { .. }, _, CallOutcome::Success) => {
                self.state = BreakerState::Closed { failures: 0 };
                None
            }
            (BreakerState::Closed { failures }, _, CallOutcome::Failure) => {
                let failures = failures + 1;
                if failures >= self.failure_threshold {
                    self.state = BreakerState::Open {
                        until: now + self.open_timeout,
                    };
                    Some(Transition::Opened)
                } else {
                    self.state = BreakerState::Closed { failures };
                    None
                }
            }
            // Neutral outcomes, and late answers to calls admitted before the circuit changed.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    #[test]
    fn would_refuse_peeks_without_taking_the_probe() {
        let start = Instant::now();
        let mut breaker = opened(start);
        assert!(breaker.would_refuse(start));
        let later = start + OPEN_FOR;
        assert!(!breaker.would_refuse(later));
        assert!(!breaker.would_refuse(later), "peeking took nothing");
        assert_eq!(breaker.admit(later), Permit::Probe);
        assert!(breaker.would_refuse(later), "the probe is out");
    }

    fn opened(start: Instant) -> CircuitBreaker {
        let mut breaker = CircuitBreaker::new(3, OPEN_FOR);
        for _ in 0..2 {
            assert_eq!(breaker.admit(start), Permit::Allowed);
            assert_eq!(
                breaker.record(start, Permit::Allowed, CallOutcome::Failure),
                None
            );
        }
        assert_eq!(
            breaker.record(start, Permit::Allowed, CallOutcome::Failure),
            Some(Transition::Opened)
        );
        breaker
    }

    #[test]
    fn consecutive_failures_open_the_circuit() {
        let start = Instant::now();
        let breaker = opened(start);
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: start + OPEN_FOR
            }
        );
    }

    #[test]
    fn a_success_resets_the_count_and_neutral_answers_do_not_count() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(3, OPEN_FOR);
        breaker.record(now, Permit::Allowed, CallOutcome::Failure);
        breaker.record(now, Permit::Allowed, CallOutcome::Failure);
        breaker.record(now, Permit::Allowed, CallOutcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        breaker.record(now, Permit::Allowed, CallOutcome::Failure);
        breaker.record(now, Permit::Allowed, CallOutcome::Neutral);
        breaker.record(now, Permit::Allowed, CallOutcome::Failure);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 2 });
    }

    #[test]
    fn an_open_circuit_refuses_until_the_timeout() {
        let start = Instant::now();
        let mut breaker = opened(start);
        assert_eq!(
            breaker.admit(start + OPEN_FOR - Duration::from_millis(1)),
            Permit::Refused
        );
        assert_eq!(breaker.admit(start + OPEN_FOR), Permit::Probe);
        assert_eq!(breaker.state(), BreakerState::HalfOpen { probing: true });
        // Only one probe at a time.
        assert_eq!(breaker.admit(start + OPEN_FOR), Permit::Refused);
    }

    #[test]
    fn a_successful_probe_closes_the_circuit() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let probe = breaker.admit(start + OPEN_FOR);
        assert_eq!(
            breaker.record(start + OPEN_FOR, probe, CallOutcome::Success),
            Some(Transition::Closed)
        );
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(breaker.admit(start + OPEN_FOR), Permit::Allowed);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let at = start + OPEN_FOR;
        let probe = breaker.admit(at);
        assert_eq!(
            breaker.record(at, probe, CallOutcome::Failure),
            Some(Transition::Reopened)
        );
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: at + OPEN_FOR
            }
        );
    }

    #[test]
    fn a_neutral_probe_lets_the_next_call_probe() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let at = start + OPEN_FOR;
        let probe = breaker.admit(at);
        assert_eq!(breaker.record(at, probe, CallOutcome::Neutral), None);
        assert_eq!(breaker.state(), BreakerState::HalfOpen { probing: false });
        assert_eq!(breaker.admit(at), Permit::Probe);
    }

    #[test]
    fn late_answers_from_before_the_opening_change_nothing() {
        let start = Instant::now();
        let mut breaker = opened(start);
        assert_eq!(
            breaker.record(start, Permit::Allowed, CallOutcome::Success),
            None
        );
        assert_eq!(
            breaker.record(start, Permit::Allowed, CallOutcome::Failure),
            None
        );
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: start + OPEN_FOR
            }
        );
    }
}
