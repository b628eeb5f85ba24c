//! Quiet hours (`[schedule] quiet_hours = "21:00-08:00"`, SPEC section 3): a daily span of local
//! wall-clock time in which campaigns do not send. A span whose end is before its start wraps
//! past midnight. And the [`Clock`] campaigns read wall time from, so tests can say "it is
//! 20:59:58" without waiting for it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ZonedDateTime};

/// Wall time for a campaign: the system's, or the system's shifted by a fixed offset (tests
/// start a campaign "just before quiet hours"; time still passes at its real pace).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    shift: SignedDuration,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `at` now and runs on from there.
    pub fn starting_at(at: Timestamp) -> Clock {
        Clock {
            shift: at.duration_since(Timestamp::now()),
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.shift)
            .expect("a shifted clock stays in range")
    }

    pub fn now_in(&self, tz: &TimeZone) -> ZonedDateTime {
        self.now().to_zoned_datetime(tz.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: Time,
    pub end: Time,
}

impl QuietHours {
    /// Whether `time` (local wall-clock) falls inside; the start is inside, the end is not.
    pub fn contains(&self, time: Time) -> bool {
        if self.start <= self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// How long from `now` until the quiet hours next begin (zero inside them).
    pub fn until_start(&self, now: &ZonedDateTime) -> Duration {
        if self.contains(now.time()) {
            return Duration::ZERO;
        }
        let mut date = now.date();
        loop {
            if let Ok(start) = date
                .to_datetime(self.start)
                .to_zoned_datetime(now.time_zone().clone())
                && start.timestamp() > now.timestamp()
            {
                let wait = start.timestamp().duration_since(now.timestamp());
                return Duration::try_from(wait).unwrap_or(Duration::ZERO);
            }
            date = date.tomorrow().expect("far from the end of the calendar");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quiet hours {0:?}: expected HH:MM-HH:MM, e.g. \"21:00-08:00\"")]
pub struct QuietHoursError(String);

impl FromStr for QuietHours {
    type Err = QuietHoursError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || QuietHoursError(text.to_string());
        let (start, end) = text.split_once('-').ok_or_else(error)?;
        let parse = |part: &str| -> Result<Time, QuietHoursError> {
            let (hour, minute) = part.trim().split_once(':').ok_or_else(error)?;
            let hour: i8 = hour.parse().map_err(|_| error())?;
            let minute: i8 = minute.parse().map_err(|_| error())?;
            Time::new(hour, minute, 0, 0).map_err(|_| error())
        };
        let hours = QuietHours {
            start: parse(start)?,
            end: parse(end)?,
        };
        if hours.start == hours.end {
            return Err(error());
        }
        Ok(hours)
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seoul(text: &str) -> ZonedDateTime {
        format!("{text}[Asia/Seoul]").parse().unwrap()
    }

    #[test]
    fn the_wait_until_quiet_hours_counts_to_the_next_start() {
        let hours: QuietHours = "21:00-08:00".parse().unwrap();
        assert_eq!(
            hours.until_start(&seoul("2026-11-24T20:59:58")),
            Duration::from_secs(2)
        );
        assert_eq!(
            hours.until_start(&seoul("2026-11-24T08:00:00")),
            Duration::from_secs(13 * 3600)
        );
        assert_eq!(
            hours.until_start(&seoul("2026-11-24T23:30:00")),
            Duration::ZERO
        );
        assert_eq!(
            hours.until_start(&seoul("2026-11-25T07:59:59")),
            Duration::ZERO
        );
        let daytime: QuietHours = "12:00-13:00".parse().unwrap();
        assert_eq!(
            daytime.until_start(&seoul("2026-11-24T13:00:00")),
            Duration::from_secs(23 * 3600)
        );
    }

    #[test]
    fn a_clock_started_at_a_time_reads_that_time_and_runs_on() {
        let at: Timestamp = "2026-11-24T11:59:58Z".parse().unwrap();
        let clock = Clock::starting_at(at);
        let read = clock.now();
        assert!(read >= at && read.duration_since(at) < SignedDuration::from_secs(1));
    }
    use jiff::civil::time;

    #[test]
    fn spans_past_midnight_wrap() {
        let night: QuietHours = "21:00-08:00".parse().unwrap();
        assert!(night.contains(time(21, 0, 0, 0)));
        assert!(night.contains(time(3, 0, 0, 0)));
        assert!(!night.contains(time(8, 0, 0, 0)));
        assert!(!night.contains(time(12, 0, 0, 0)));
        let lunch: QuietHours = "12:00-13:00".parse().unwrap();
        assert!(lunch.contains(time(12, 30, 0, 0)));
        assert!(!lunch.contains(time(13, 0, 0, 0)));
        assert_eq!(night.to_string(), "21:00-08:00");
    }

    #[test]
    fn malformed_spans_are_refused() {
        for bad in [
            "21:00",
            "25:00-08:00",
            "21-08",
            "21:00-21:00",
            "ab:cd-08:00",
        ] {
            assert!(bad.parse::<QuietHours>().is_err(), "{bad:?}");
        }
    }
}
