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

/// A job's deadline as `--valid-until` gives it: RFC 3339 (`2026-12-01T18:00:00+09:00`), or
/// `YYYY-MM-DD HH:MM` on the wall clock of `tz` (the config's `timezone`). A wall time that
/// does not exist or is ambiguous there (a DST change) is refused rather than guessed.
pub fn parse_deadline(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let wall = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", text).map_err(|_| {
        format!(
            "{text:?} is not a time: give RFC 3339 (2026-12-01T18:00:00+09:00) or \"YYYY-MM-DD HH:MM\" in the config's timezone"
        )
    })?;
    tz.to_ambiguous_timestamp(wall).unambiguous().map_err(|_| {
        format!(
            "{text:?} does not name one moment in {}",
            tz.iana_name().unwrap_or("the timezone")
        )
    })
}

/// `created + valid_for`, saturating at the end of time rather than failing.
pub fn deadline_after(created: Timestamp, valid_for: Duration) -> Timestamp {
    SignedDuration::try_from(valid_for)
        .ok()
        .and_then(|span| created.checked_add(span).ok())
        .unwrap_or(Timestamp::MAX)
}

/// How long from `now` until `deadline` (zero once it passed).
pub fn until(now: Timestamp, deadline: Timestamp) -> Duration {
    Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO)
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

    #[test]
    fn deadlines_read_rfc3339_or_wall_time_in_the_timezone() {
        let seoul = TimeZone::get("Asia/Seoul").unwrap();
        let expected: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        assert_eq!(
            parse_deadline("2026-12-01T18:00:00+09:00", &seoul),
            Ok(expected)
        );
        assert_eq!(parse_deadline("2026-12-01 18:00", &seoul), Ok(expected));
        for bad in ["tomorrow", "2026-12-01", "2026-13-01 18:00", "18:00", ""] {
            assert!(parse_deadline(bad, &seoul).is_err(), "{bad:?}");
        }
        // A wall time skipped by a DST change names no moment.
        let new_york = TimeZone::get("America/New_York").unwrap();
        assert!(parse_deadline("2026-03-08 02:30", &new_york).is_err());
    }

    #[test]
    fn a_deadline_after_a_duration_saturates() {
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            deadline_after(at, Duration::from_secs(3600)),
            "2026-12-01T01:00:00Z".parse().unwrap()
        );
        assert_eq!(deadline_after(at, Duration::MAX), Timestamp::MAX);
        assert_eq!(until(at, at), Duration::ZERO);
        assert_eq!(
            until(deadline_after(at, Duration::from_secs(5)), at),
            Duration::ZERO
        );
        assert_eq!(
            until(at, deadline_after(at, Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }
}
