//! The rules a visit to the quota ledger applies to one credential's facts: which requests
//! still count in each window, how many slots are free, when the next one frees, and how the
//! adaptive allowance moves after a 429 (see the parent module's doc for why they hold).
//! Pure functions of the ledger entry and the time, so several simulated processes can share
//! them in tests.

use std::time::Duration;

use crate::ledger::{Entry, Micros, Pace};
use crate::units::{Rate, RateLimit};

/// How much of the quota a window without a 429 gives back to a cut allowance.
const RECOVERY_PER_WINDOW: f64 = 0.05;

/// The largest margin kept beyond a window (see [`margin_for`]).
const MAX_MARGIN: Duration = Duration::from_millis(250);

/// The spacing kept beyond the window: 1 % of it, at most [`MAX_MARGIN`]. It absorbs a
/// provider that counts in coarse clock ticks, and costs at most 1 % of the quota.
pub fn margin_for(window: Duration) -> Duration {
    (window / 100).min(MAX_MARGIN)
}

pub(super) fn micros(duration: Duration) -> Micros {
    Micros::try_from(duration.as_micros()).unwrap_or(Micros::MAX)
}

/// One window as the ledger counts it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub count: u32,
    /// W plus the margin: how long after its arrival a request still counts.
    pub hold: Micros,
}

/// What the rules need to know of a credential's quota.
#[derive(Debug, Clone)]
pub(super) struct Quota {
    pub windows: Vec<Window>,
    /// The tightest window's N and W: the allowance is kept in its terms.
    pub tightest: Rate,
    pub longest_hold: Micros,
}

impl Quota {
    pub fn new(limit: &RateLimit) -> Self {
        let windows: Vec<Window> = limit
            .windows()
            .iter()
            .map(|rate| Window {
                count: rate.count,
                hold: micros(rate.per).saturating_add(micros(margin_for(rate.per))),
            })
            .collect();
        let longest_hold = windows.iter().map(|w| w.hold).max().unwrap_or(0);
        Quota {
            windows,
            tightest: limit.tightest(),
            longest_hold,
        }
    }

    fn tightest_window(&self) -> Micros {
        micros(self.tightest.per).max(1)
    }

    /// Requests allowed in the tightest window now.
    pub fn allowance(&self, pace: &Pace) -> u32 {
        pace.allowance
            .unwrap_or(self.tightest.count)
            .clamp(1, self.tightest.count)
    }

    /// Requests allowed in `window` now: its N scaled like the tightest window's allowance.
    fn allowance_of(&self, window: &Window, pace: &Pace) -> u64 {
        let scaled = u64::from(window.count) * u64::from(self.allowance(pace))
            / u64::from(self.tightest.count.max(1));
        scaled.clamp(1, u64::from(window.count))
    }
}

/// A 429 a process saw, to be applied to the shared pace on its next visit.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateLimited {
    pub at: Micros,
    pub retry_after: Option<Duration>,
    /// Requests this process saw the provider accept in the tightest window before `at`.
    pub accepted: u32,
}

/// Raises a cut allowance by one step per whole tightest window since it last changed.
pub(super) fn recover(pace: &mut Pace, quota: &Quota, now: Micros) {
    let Some(changed) = pace.last_change.filter(|_| pace.allowance.is_some()) else {
        return;
    };
    let window = quota.tightest_window();
    let windows = now.saturating_sub(changed) / window;
    if windows <= 0 {
        return;
    }
    let step = ((f64::from(quota.tightest.count) * RECOVERY_PER_WINDOW) as u64).max(1);
    let raised = u64::from(quota.allowance(pace))
        .saturating_add(step.saturating_mul(u64::try_from(windows).unwrap_or(u64::MAX)));
    pace.allowance = u32::try_from(raised)
        .ok()
        .filter(|&raised| raised < quota.tightest.count);
    pace.last_change = Some(changed.saturating_add(windows.saturating_mul(window)));
}

/// A 429: pause for its `Retry-After`, and cut the allowance to the larger of half of it and
/// what the provider accepted — once per window, since one window's requests left together.
pub(super) fn rate_limited(pace: &mut Pace, quota: &Quota, event: RateLimited) {
    if let Some(after) = event.retry_after {
        // A day at most: every duration from outside saturates.
        let until = event
            .at
            .saturating_add(micros(after.min(Duration::from_secs(86_400))));
        pace.paused_until = pace.paused_until.max(Some(until));
    }
    if pace
        .last_cut
        .is_some_and(|cut| event.at < cut.saturating_add(quota.tightest_window()))
    {
        return;
    }
    let allowance = quota.allowance(pace);
    let cut = (allowance / 2).max(event.accepted).max(1);
    pace.allowance = Some(cut.min(allowance.saturating_sub(1)).max(1));
    pace.last_cut = Some(event.at);
    pace.last_change = Some(event.at);
}

/// What a visit found.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settled {
    pub granted: u32,
    /// When nothing was granted: the earliest moment a slot can free.
    pub next_free: Option<Micros>,
    pub pace: Pace,
}

/// What a process brings to a visit and asks of it.
#[derive(Debug, Default)]
pub(super) struct Ask<'a> {
    /// Leases whose rows it knows better now.
    pub write_backs: Vec<(i64, Vec<(Micros, u32)>)>,
    /// 429s it saw.
    pub events: &'a [RateLimited],
    /// Slots it wants, under a new lease `lease`, each counted as arriving by `arrival` until
    /// the process says better.
    pub want: u32,
    pub lease: i64,
    pub arrival: Micros,
}

/// Applies what a process learnt, then grants up to the slots it wants (see [`Ask`]).
pub(super) fn settle(entry: &mut Entry, quota: &Quota, now: Micros, ask: Ask<'_>) -> Settled {
    let Ask {
        write_backs,
        events,
        want,
        lease,
        arrival,
    } = ask;
    for (lease, rows) in write_backs {
        entry.replace_lease(lease, rows);
    }
    // A row counts while `arrived_by + hold > now`.
    entry.expire_before(now.saturating_sub(quota.longest_hold).saturating_add(1));
    recover(&mut entry.pace, quota, now);
    for &event in events {
        rate_limited(&mut entry.pace, quota, event);
    }
    if let Some(until) = entry.pace.paused_until {
        if now < until {
            return Settled {
                granted: 0,
                next_free: Some(until),
                pace: entry.pace,
            };
        }
        entry.pace.paused_until = None;
    }
    let mut free = u64::from(want);
    let mut next_free: Option<Micros> = None;
    for window in &quota.windows {
        let allowance = quota.allowance_of(window, &entry.pace);
        let counted: u64 = entry
            .rows()
            .iter()
            .filter(|row| row.arrived_by.saturating_add(window.hold) > now)
            .map(|row| u64::from(row.count))
            .sum();
        free = free.min(allowance.saturating_sub(counted));
        if counted >= allowance {
            let frees = first_free(entry, window, now, counted - allowance + 1);
            next_free = next_free.max(Some(frees));
        }
    }
    let granted = u32::try_from(free).unwrap_or(u32::MAX);
    if granted > 0 {
        entry.replace_lease(lease, vec![(arrival, granted)]);
    }
    Settled {
        granted,
        next_free: next_free.filter(|_| granted == 0),
        pace: entry.pace,
    }
}

/// When `need` of the requests counted in `window` have stopped counting: oldest first.
fn first_free(entry: &Entry, window: &Window, now: Micros, need: u64) -> Micros {
    let mut counted: Vec<(Micros, u32)> = entry
        .rows()
        .iter()
        .filter(|row| row.arrived_by.saturating_add(window.hold) > now)
        .map(|row| (row.arrived_by, row.count))
        .collect();
    counted.sort_unstable();
    let mut expired = 0u64;
    for (arrived_by, count) in counted {
        expired += u64::from(count);
        if expired >= need {
            return arrived_by.saturating_add(window.hold);
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(text: &[&str]) -> Quota {
        Quota::new(&RateLimit::new(text.iter().map(|t| t.parse().unwrap()).collect()).unwrap())
    }

    const S: Micros = 1_000_000;

    fn ask(
        write_backs: Vec<(i64, Vec<(Micros, u32)>)>,
        events: &[RateLimited],
        want: u32,
        lease: i64,
        arrival: Micros,
    ) -> Ask<'_> {
        Ask {
            write_backs,
            events,
            want,
            lease,
            arrival,
        }
    }

    #[test]
    fn every_window_holds_and_the_first_to_free_is_found() {
        let quota = quota(&["2/s", "3/10s"]);
        let mut entry = Entry::default();
        let settled = settle(&mut entry, &quota, 0, ask(vec![], &[], 5, 1, 0));
        assert_eq!(settled.granted, 2, "the 2/s window");
        let settled = settle(&mut entry, &quota, 0, ask(vec![], &[], 5, 2, 0));
        assert_eq!(settled.granted, 0);
        assert_eq!(
            settled.next_free,
            Some(S + 10_000),
            "a second and its margin"
        );
        let settled = settle(&mut entry, &quota, 2 * S, ask(vec![], &[], 5, 3, 2 * S));
        assert_eq!(settled.granted, 1, "the 3/10s window");
        let settled = settle(&mut entry, &quota, 3 * S, ask(vec![], &[], 5, 4, 3 * S));
        assert_eq!(settled.next_free, Some(10 * S + 100_000));
    }

    #[test]
    fn a_write_back_replaces_the_worst_case_and_frees_earlier() {
        let quota = quota(&["1/s"]);
        let mut entry = Entry::default();
        assert_eq!(
            settle(&mut entry, &quota, 0, ask(vec![], &[], 1, 1, 30 * S)).granted,
            1
        );
        let blocked = settle(&mut entry, &quota, 2 * S, ask(vec![], &[], 1, 2, 0));
        assert_eq!(blocked.next_free, Some(31 * S + 10_000));
        // The answer came back at 0.1 s: the slot frees at 1.11 s.
        let settled = settle(
            &mut entry,
            &quota,
            2 * S,
            ask(vec![(1, vec![(S / 10, 1)])], &[], 1, 3, 0),
        );
        assert_eq!(settled.granted, 1);
    }

    #[test]
    fn cuts_and_recovery_follow_the_tightest_window() {
        let quota = quota(&["20/s", "100/min"]);
        let mut pace = Pace::default();
        let event = |at, accepted| RateLimited {
            at,
            retry_after: None,
            accepted,
        };
        rate_limited(&mut pace, &quota, event(0, 10));
        assert_eq!(pace.allowance, Some(50));
        rate_limited(&mut pace, &quota, event(S, 0));
        assert_eq!(pace.allowance, Some(50), "one cut per window");
        assert_eq!(quota.allowance_of(&quota.windows[0], &pace), 10);
        recover(&mut pace, &quota, 120 * S);
        assert_eq!(pace.allowance, Some(60));
        recover(&mut pace, &quota, 3600 * S);
        assert_eq!(pace.allowance, None, "never above the quota");
    }

    #[test]
    fn retry_after_pauses_and_saturates() {
        let quota = quota(&["10/s"]);
        let mut entry = Entry::default();
        let events = [RateLimited {
            at: 0,
            retry_after: Some(Duration::MAX),
            accepted: 0,
        }];
        let settled = settle(&mut entry, &quota, 0, ask(vec![], &events, 1, 1, 0));
        assert_eq!(settled.granted, 0);
        assert_eq!(settled.next_free, Some(86_400 * S));
    }
}
