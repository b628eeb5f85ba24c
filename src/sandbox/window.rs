//! The sandbox's own rate limit, as a strict provider keeps it: every authenticated request
//! that arrives is counted against its credential (those answered 429 too), and a request that
//! makes more than N in the last W is answered 429 with the seconds until a slot frees.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::units::Rate;

#[derive(Debug)]
pub struct ArrivalWindow {
    rate: Rate,
    arrivals: VecDeque<Instant>,
}

/// The verdict on one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the quota; `in_window` requests (this one included) in the last W.
    Allowed { in_window: usize },
    /// Over the quota: come back after `retry_after`.
    Exceeded {
        in_window: usize,
        retry_after: Duration,
    },
}

impl ArrivalWindow {
    pub fn new(rate: Rate) -> Self {
        ArrivalWindow {
            rate,
            arrivals: VecDeque::new(),
        }
    }

    pub fn arrive(&mut self, now: Instant) -> Verdict {
        while self
            .arrivals
            .front()
            .is_some_and(|&at| now.duration_since(at) >= self.rate.per)
        {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(now);
        let in_window = self.arrivals.len();
        if in_window <= self.rate.count as usize {
            return Verdict::Allowed { in_window };
        }
        // The request that must leave the window before one more fits.
        let blocking = self.arrivals[in_window - 1 - self.rate.count as usize];
        let wait = (blocking + self.rate.per).duration_since(now);
        Verdict::Exceeded {
            in_window,
            retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_n_plus_first_request_in_a_window_is_refused() {
        let start = Instant::now();
        let mut window = ArrivalWindow::new("3/s".parse().unwrap());
        for i in 0..3 {
            assert_eq!(
                window.arrive(start + Duration::from_millis(i * 100)),
                Verdict::Allowed {
                    in_window: i as usize + 1
                }
            );
        }
        assert!(matches!(
            window.arrive(start + Duration::from_millis(500)),
            Verdict::Exceeded { in_window: 4, .. }
        ));
        // A full second after the first arrival it has left the window, but the refused one counts.
        assert!(matches!(
            window.arrive(start + Duration::from_millis(1000)),
            Verdict::Exceeded { .. }
        ));
        assert!(matches!(
            window.arrive(start + Duration::from_millis(2600)),
            Verdict::Allowed { .. }
        ));
    }
}
