//! Durations (`"250ms"`, `"5s"`, `"1m"`) and rates (`"100/min"`, `"20/s"`, `"50/10s"`) as SPEC
//! section 7 writes them. Hand-written because the grammar is deliberately narrower than what
//! humantime or jiff's friendly format accept (one integer, one unit): a config that says
//! `"1h30m"` or `"5 seconds"` is refused rather than guessed at.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Parses an integer followed by a unit: `ms`, `s`, `m`/`min`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| UnitError::new(text, "a duration needs a unit: ms, s, m, min or h"))?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(UnitError::new(
            text,
            "a duration starts with a whole number, e.g. \"5s\"",
        ));
    }
    let amount: u64 = digits
        .parse()
        .map_err(|_| UnitError::new(text, "the number is too large"))?;
    let unit_millis = unit_millis(unit.trim())
        .ok_or_else(|| UnitError::new(text, "unknown unit (expected ms, s, m, min or h)"))?;
    amount
        .checked_mul(unit_millis)
        .map(Duration::from_millis)
        .ok_or_else(|| UnitError::new(text, "the duration is too long"))
}

fn unit_millis(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    })
}

/// A rate's window unit: a duration's units, and the day.
fn window_unit_millis(unit: &str) -> Option<u64> {
    match unit {
        "d" | "day" => Some(86_400_000),
        other => unit_millis(other),
    }
}

/// Writes a duration back in the form [`parse_duration`] reads, in the largest exact unit.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 || !millis.is_multiple_of(1000) {
        format!("{millis}ms")
    } else if millis.is_multiple_of(3_600_000) {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else {
        format!("{}s", millis / 1000)
    }
}

/// "At most `count` requests in any window of length `per`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Requests per second at the full quota.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = UnitError;

    /// `N/unit` (`100/min`, `20/s`, `1000/h`) or `N/duration` (`50/10s`, `300/5m`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (count, window) = trimmed.split_once('/').ok_or_else(|| {
            UnitError::new(text, "a rate is N/unit, e.g. \"100/min\" or \"50/10s\"")
        })?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| UnitError::new(text, "the count before '/' must be a whole number"))?;
        if count == 0 {
            return Err(UnitError::new(text, "the count must be at least 1"));
        }
        let window = window.trim();
        // A window may also be a day (SPEC section 8: "10000/day"); durations elsewhere stop
        // at hours, so the day is a rate's unit only.
        let per = match window_unit_millis(window).map(Duration::from_millis) {
            Some(length) => length,
            None => parse_duration(window).map_err(|_| {
                UnitError::new(
                    text,
                    "after '/' comes a unit (s, min, h, day) or a duration (\"10s\")",
                )
            })?,
        };
        if per.is_zero() {
            return Err(UnitError::new(text, "the window must be longer than zero"));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_millis() {
            1000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/min", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            86_400_000 => write!(f, "{}/day", self.count),
            _ => write!(f, "{}/{}", self.count, format_duration(self.per)),
        }
    }
}

/// A credential's quota: one window or several (`["20/s", "100/min", "10000/day"]`), every one
/// of which holds (SPEC section 8). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    windows: Vec<Rate>,
}

impl RateLimit {
    /// `None` for an empty list.
    pub fn new(windows: Vec<Rate>) -> Option<Self> {
        (!windows.is_empty()).then_some(RateLimit { windows })
    }

    pub fn windows(&self) -> &[Rate] {
        &self.windows
    }

    /// The window with the smallest rate (N ÷ W): it sets the even pace of `burst`.
    pub fn tightest(&self) -> Rate {
        *self
            .windows
            .iter()
            .min_by(|a, b| a.per_second().total_cmp(&b.per_second()))
            .expect("a rate limit has a window")
    }

    /// The longest window: how long a request stays counted at most.
    pub fn longest_window(&self) -> Duration {
        self.windows
            .iter()
            .map(|rate| rate.per)
            .max()
            .expect("a rate limit has a window")
    }
}

impl From<Rate> for RateLimit {
    fn from(rate: Rate) -> Self {
        RateLimit {
            windows: vec![rate],
        }
    }
}

/// `100/min`, or `["20/s", "100/min"]` for several windows.
impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.windows.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                let quoted: Vec<String> = many.iter().map(|rate| format!("\"{rate}\"")).collect();
                write!(f, "[{}]", quoted.join(", "))
            }
        }
    }
}

/// A duration or rate that does not parse; the message quotes the text and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {text:?}: {reason}")]
pub struct UnitError {
    text: String,
    reason: &'static str,
}

impl UnitError {
    fn new(text: &str, reason: &'static str) -> Self {
        UnitError {
            text: text.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_is_a_rate_or_an_error_without_panic(text in "\\PC{0,24}") {
            if let Ok(rate) = text.parse::<Rate>() {
                // A valid rate prints as a rate that parses back to itself.
                prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
                prop_assert!(rate.count > 0 && !rate.per.is_zero());
            }
            let _ = parse_duration(&text);
        }

        #[test]
        fn durations_print_and_parse_back(millis in 1u64..10_000_000_000) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn rates_print_and_parse_back(count in 1u32..1_000_000, seconds in 1u64..100_000) {
            let rate = Rate { count, per: Duration::from_secs(seconds) };
            prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }
    }

    #[test]
    fn durations_take_one_integer_and_one_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "5",
            "s",
            "5 sec",
            "1h30m",
            "-1s",
            "1.5s",
            "5S",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations_format_back_to_what_they_parse_from() {
        for text in ["250ms", "5s", "1m", "2h", "90s", "0ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn rates_take_a_unit_or_a_window() {
        let rate = |count, secs| Rate {
            count,
            per: Duration::from_secs(secs),
        };
        assert_eq!("100/min".parse(), Ok(rate(100, 60)));
        assert_eq!("20/s".parse(), Ok(rate(20, 1)));
        assert_eq!("50/10s".parse(), Ok(rate(50, 10)));
        assert_eq!("1000/h".parse(), Ok(rate(1000, 3600)));
        assert_eq!("300/5m".parse(), Ok(rate(300, 300)));
        assert_eq!("10000/day".parse(), Ok(rate(10_000, 86_400)));
        assert_eq!("10/d".parse(), Ok(rate(10, 86_400)));
        for bad in [
            "100", "0/s", "-1/s", "10/0s", "10/week", "10/2day", "x/s", "10/", "/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_tightest_window_has_the_smallest_rate() {
        let limit = RateLimit::new(vec![
            "20/s".parse().unwrap(),
            "100/min".parse().unwrap(),
            "10000/day".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(limit.tightest().to_string(), "10000/day");
        assert_eq!(limit.longest_window(), Duration::from_secs(86_400));
        assert_eq!(limit.to_string(), r#"["20/s", "100/min", "10000/day"]"#);
        assert!(RateLimit::new(Vec::new()).is_none());
    }

    #[test]
    fn rates_display_in_the_config_form() {
        for text in [
            "100/min",
            "20/s",
            "50/10s",
            "1000/h",
            "7/250ms",
            "10000/day",
        ] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
    }
}
