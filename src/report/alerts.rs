//! The run's watched conditions (SPEC section 6): success rate below `min_success_rate`, queue
//! above `max_queue`, a provider's p95 response time above `max_response_time`. Each raises its
//! alert ([`crate::alert`]) once per episode: an [`Episode`] fires when a condition becomes true
//! and re-arms only once it has become false again.

use std::time::Duration;

use crate::alert::{Alert, Alerter};
use crate::provider::ProviderKind;

/// One watched condition's episodes: [`update`](Self::update) says when a new one begins.
#[derive(Debug, Default, Clone, Copy)]
pub struct Episode {
    active: bool,
}

impl Episode {
    /// Feeds the condition's current truth; true exactly when an episode begins.
    pub fn update(&mut self, condition: bool) -> bool {
        let begins = condition && !self.active;
        self.active = condition;
        begins
    }
}

/// The minimum of attempted recipients (or requests, for a provider's p95) before the
/// success-rate and response-time alerts may fire: a handful of early failures is not a trend.
pub const WATCH_MINIMUM: u64 = 20;

/// The watched conditions of a run and their episodes (SPEC section 6 thresholds).
#[derive(Debug)]
pub struct Watch {
    alerter: Alerter,
    min_success_rate: f64,
    max_queue: u64,
    max_response_time: Duration,
    low_success: Episode,
    high_queue: Episode,
    slow: [Episode; 2],
}

/// What the run looks like now, for [`Watch::check`].
#[derive(Debug, Clone, Copy)]
pub struct Figures<'a> {
    pub attempted: u64,
    pub delivered: u64,
    pub queue: u64,
    /// Each provider's p95 response time and its number of requests so far.
    pub p95: &'a [(ProviderKind, Duration, u64)],
}

impl Watch {
    pub fn new(alerter: Alerter, settings: &crate::config::AlertSettings) -> Watch {
        Watch {
            alerter,
            min_success_rate: settings.min_success_rate,
            max_queue: settings.max_queue,
            max_response_time: settings.max_response_time,
            low_success: Episode::default(),
            high_queue: Episode::default(),
            slow: [Episode::default(); 2],
        }
    }

    pub fn check(&mut self, now: Figures<'_>) {
        let rate = now.delivered as f64 / now.attempted.max(1) as f64;
        let low = now.attempted >= WATCH_MINIMUM && rate < self.min_success_rate;
        if self.low_success.update(low) {
            self.alerter.raise(&Alert::LowSuccessRate {
                value: rate,
                threshold: self.min_success_rate,
            });
        }
        if self.high_queue.update(now.queue > self.max_queue) {
            self.alerter.raise(&Alert::HighQueue {
                value: now.queue,
                threshold: self.max_queue,
            });
        }
        for &(provider, p95, requests) in now.p95 {
            let slow = requests >= WATCH_MINIMUM && p95 > self.max_response_time;
            let episode = &mut self.slow[usize::from(provider == ProviderKind::Sms)];
            if episode.update(slow) {
                self.alerter.raise(&Alert::SlowResponses {
                    provider,
                    value: p95,
                    threshold: self.max_response_time,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_fires_once_and_rearms_after_it_ends() {
        let mut episode = Episode::default();
        let fired: Vec<bool> = [false, true, true, true, false, true, true]
            .into_iter()
            .map(|c| episode.update(c))
            .collect();
        assert_eq!(fired, [false, true, false, false, false, true, false]);
    }
}
