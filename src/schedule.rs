//! Quiet hours (`[schedule] quiet_hours = "21:00-08:00"`, SPEC section 3): a daily span of local
//! wall-clock time in which campaigns do not send. A span whose end is before its start wraps
//! past midnight.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Time;

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
