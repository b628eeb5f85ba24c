//! Korean advertising rules (정보통신망법 제50조, SPEC section 10) as msgsend enforces them on the
//! client side: what kind a message is, how an advertisement is framed (`(광고) {sender}` first,
//! the free opt-out line last), which texts look like an ad marker, and whose consent still
//! holds on the campaign's date. The night rule (no ads 21:00–08:00) is [`AD_NIGHT`].
//!
//! Consent collection itself, the content of the offer and the sender's registration are the
//! operator's: nothing here can see them.

use std::str::FromStr;

use jiff::civil::{Date, Time};

use crate::schedule::QuietHours;
use crate::template::Frame;

/// What a message is. Stored with a job (`"info"`, `"ad"`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MessageKind {
    /// Information the recipient needs (a receipt, a notice): no advertising rule applies.
    #[default]
    Info,
    /// An advertisement: framed, consent-checked, never sent at night.
    Ad,
}

impl FromStr for MessageKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "info" => Ok(MessageKind::Info),
            "ad" => Ok(MessageKind::Ad),
            other => Err(format!(
                "unknown message kind {other:?} (expected \"info\" or \"ad\")"
            )),
        }
    }
}

/// The hours no advertisement may be sent, whatever `[schedule]` says and whatever
/// `--ignore-quiet-hours` asks: 21:00 to 08:00 in the config's `timezone`.
pub const AD_NIGHT: QuietHours = QuietHours {
    start: Time::constant(21, 0, 0, 0),
    end: Time::constant(8, 0, 0, 0),
};

/// The marker an advertisement starts with, exactly.
pub const AD_MARKER: &str = "(광고)";

/// The frame of an ad from `sender` and `opt_out`: `(광고) {sender}` first, the opt-out line
/// last; or why they cannot make one.
pub fn frame(sender: &str, opt_out: &str) -> Result<Frame, String> {
    let sender = sender.trim();
    if sender.is_empty() {
        return Err("the sender's name is empty".into());
    }
    check_single_line(sender, "the sender's name")?;
    if starts_with_marker(sender) {
        return Err(
            "the sender's name must not be an ad marker: msgsend writes (광고) itself".into(),
        );
    }
    check_opt_out(opt_out)?;
    Ok(Frame {
        first_line: format!("{AD_MARKER} {sender}"),
        last_line: opt_out.trim().to_string(),
    })
}

/// Refuses a header or body (`what`) that starts with an ad marker (see [`starts_with_marker`]).
pub fn check_unmarked(what: &str, text: &str) -> Result<(), String> {
    if starts_with_marker(text) {
        return Err(format!("{what} {MARKER_REFUSED}"));
    }
    Ok(())
}

/// Why a header or body that starts with an ad marker is refused (SPEC section 10).
pub const MARKER_REFUSED: &str = "starts with an advertising marker such as (광고): an ad gets its marker from msgsend ([message] kind = \"ad\" or --kind ad, with sender and opt_out), and an info message must not look like one";

/// A frame line is one line of printable text: no line or paragraph break of any kind (a
/// phone shows U+2028 as one), no control character.
fn check_single_line(text: &str, what: &str) -> Result<(), String> {
    if text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "{what} must be one line of printable text (no line break or control character)"
        ));
    }
    Ok(())
}

/// The least digits of the number an opt-out line must give (a Korean phone, `080-123-4567`).
const OPT_OUT_MIN_DIGITS: usize = 8;

/// An opt-out line must hold a number of at least 8 digits (spaces and hyphens allowed within
/// it) the recipient can call or text for free.
pub fn check_opt_out(text: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the opt-out line is empty".into());
    }
    check_single_line(text, "the opt-out line")?;
    // The longest run of digits, spaces and hyphens, counted in digits.
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        match c {
            '0'..='9' => {
                run += 1;
                longest = longest.max(run);
            }
            ' ' | '-' => {}
            _ => run = 0,
        }
    }
    if longest < OPT_OUT_MIN_DIGITS {
        return Err(format!(
            "the opt-out line must give a number of at least {OPT_OUT_MIN_DIGITS} digits (e.g. \"무료수신거부 080-123-4567\")"
        ));
    }
    Ok(())
}

/// Whether `text` begins with an advertising marker — `(광고)`, `[광고]`, `<광고>`, `(광 고)`,
/// `(AD)` and their like: any bracket pair (doubled, full-width) around `광고` or `AD`, spaces,
/// invisible characters (a byte-order mark, zero-width spaces) and case ignored, full-width
/// letters read as ASCII. An ad gets its marker from msgsend, and an info message must not look
/// like an ad, so a header or body that starts with one is refused.
pub fn starts_with_marker(text: &str) -> bool {
    // A marker is a handful of characters: the first few significant ones say it all.
    let mut start = text
        .chars()
        .filter(|&c| !ignorable(c))
        .map(narrow)
        .take(16)
        .peekable();
    let mut closers = Vec::new();
    while let Some(close) = start.peek().copied().and_then(closing_bracket) {
        closers.push(close);
        start.next();
    }
    if closers.is_empty() {
        return false;
    }
    let mut inside = String::new();
    for c in start {
        if closers.contains(&c) {
            return inside == "광고" || inside == "ad";
        }
        inside.extend(c.to_lowercase());
    }
    false // no closing bracket: not a marker
}

/// Whitespace and the characters that print as nothing (format characters: a byte-order mark,
/// zero-width spaces and joiners, direction marks).
fn ignorable(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{00ad}')
}

/// A full-width ASCII form (`Ａ`, `（`) read as its ASCII character.
fn narrow(c: char) -> char {
    match c {
        '\u{ff01}'..='\u{ff5e}' => char::from_u32(u32::from(c) - 0xfee0).unwrap_or(c),
        other => other,
    }
}

fn closing_bracket(open: char) -> Option<char> {
    Some(match open {
        '(' => ')',
        '[' => ']',
        '<' => '>',
        '{' => '}',
        '（' => '）',
        '［' => '］',
        '〈' => '〉',
        '《' => '》',
        '【' => '】',
        '「' => '」',
        '『' => '』',
        '〔' => '〕',
        '＜' => '＞',
        _ => return None,
    })
}

/// Whether an advertisement may go to a recipient, judged on the campaign's date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Consent given within the last two years.
    Given,
    /// No usable consent date: empty, malformed or in the future.
    None,
    /// Consent given two years ago or more.
    Expired,
}

impl Consent {
    /// The value of `[source] consent_column` (`YYYY-MM-DD`) judged on `campaign_date`. A
    /// consent holds until its second anniversary, exclusive; one given on 29 February ends on
    /// 1 March two years later (there is no 29 February then).
    pub fn judge(value: &str, campaign_date: Date) -> Consent {
        let Ok(given) = crate::recipient::parse_birth_date(value.trim()) else {
            return Consent::None;
        };
        if given > campaign_date {
            return Consent::None;
        }
        if campaign_date < second_anniversary(given) {
            Consent::Given
        } else {
            Consent::Expired
        }
    }

    /// The `suppressed_by_reason` key of a recipient this consent keeps out.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Consent::Given => None,
            Consent::None => Some("no_consent"),
            Consent::Expired => Some("consent_expired"),
        }
    }
}

/// The same day two years on; 29 February becomes 1 March when that year has none.
fn second_anniversary(date: Date) -> Date {
    let year = date.year().saturating_add(2);
    Date::new(year, date.month(), date.day())
        .or_else(|_| Date::new(year, 3, 1))
        .unwrap_or(Date::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    #[test]
    fn markers_are_found_whatever_the_brackets_spaces_and_case() {
        for marked in [
            "(광고) 오토에버",
            "[광고]할인",
            "<광고>",
            "(광 고) x",
            "  ( 광고 ) x",
            "(AD) sale",
            "(ad)",
            "[Ad] sale",
            "（광고）",
            "【광고】 x",
            "（ＡＤ） x",
            "\u{200b}(광고) x",
            "\u{feff}(광고) x",
            "{{광고}} x",
            "((광고)) x",
        ] {
            assert!(
                starts_with_marker(marked),
                "{marked:?} not seen as a marker"
            );
        }
        for plain in [
            "광고 없음",
            "(광고",
            "광고)",
            "(공지) 점검",
            "(add) x",
            "",
            "   ",
            "hello (광고)",
            "(광고 안내)",
            "(Address) x",
            "[adult]",
        ] {
            assert!(!starts_with_marker(plain), "{plain:?} seen as a marker");
        }
    }

    #[test]
    fn an_opt_out_line_needs_a_number_of_eight_digits() {
        assert!(check_opt_out("무료수신거부 080-123-4567").is_ok());
        assert!(check_opt_out("수신거부 0801234567").is_ok());
        assert!(check_opt_out("080 1234 56").is_ok());
        assert!(check_opt_out("무료수신거부 080-12-34").is_err());
        assert!(check_opt_out("무료수신거부").is_err());
        assert!(check_opt_out("").is_err());
        assert!(check_opt_out("080-123-4567\n두 줄").is_err());
        // Digits split by letters are not one number.
        assert!(check_opt_out("080a1234b567").is_err());
    }

    #[test]
    fn the_frame_is_the_marker_and_sender_then_the_opt_out_line() {
        let made = frame(" 현대오토에버 ", "무료수신거부 080-123-4567").unwrap();
        assert_eq!(made.first_line, "(광고) 현대오토에버");
        assert_eq!(made.last_line, "무료수신거부 080-123-4567");
        assert!(frame("", "무료수신거부 080-123-4567").is_err());
        assert!(frame("a\nb", "무료수신거부 080-123-4567").is_err());
        assert!(frame("오토에버", "call us").is_err());
        assert!(frame("현대\u{0}오토에버", "무료수신거부 080-123-4567").is_err());
        assert!(frame("현대\u{2028}오토에버", "무료수신거부 080-123-4567").is_err());
        assert!(frame("(광고)", "무료수신거부 080-123-4567").is_err());
        assert!(frame("오토에버", "무료수신거부\t080-123-4567").is_err());
        assert!(check_unmarked("--message", "[광고] x").is_err());
        assert!(check_unmarked("--message", "광고 x").is_ok());
    }

    #[test]
    fn consent_holds_until_its_second_anniversary_exclusive() {
        let given = "2024-12-01";
        assert_eq!(Consent::judge(given, date(2026, 11, 30)), Consent::Given);
        assert_eq!(Consent::judge(given, date(2026, 12, 1)), Consent::Expired);
        assert_eq!(Consent::judge(given, date(2026, 12, 2)), Consent::Expired);
        assert_eq!(Consent::judge(given, date(2024, 12, 1)), Consent::Given);
        // 29 February: the anniversary is 1 March.
        assert_eq!(
            Consent::judge("2024-02-29", date(2026, 2, 28)),
            Consent::Given
        );
        assert_eq!(
            Consent::judge("2024-02-29", date(2026, 3, 1)),
            Consent::Expired
        );
        // Empty, malformed, impossible, future: no consent.
        for value in ["", "2025/03/01", "2025-02-30", "yesterday", "2026-12-02"] {
            assert_eq!(
                Consent::judge(value, date(2026, 12, 1)),
                Consent::None,
                "{value}"
            );
        }
        assert_eq!(Consent::None.reason(), Some("no_consent"));
        assert_eq!(Consent::Expired.reason(), Some("consent_expired"));
        assert_eq!(Consent::Given.reason(), None);
    }

    #[test]
    fn the_night_is_nine_to_eight() {
        assert!(!AD_NIGHT.contains(Time::constant(20, 59, 59, 0)));
        assert!(AD_NIGHT.contains(Time::constant(21, 0, 0, 0)));
        assert!(AD_NIGHT.contains(Time::constant(7, 59, 59, 0)));
        assert!(!AD_NIGHT.contains(Time::constant(8, 0, 0, 0)));
    }

    proptest! {
        #[test]
        fn any_text_is_judged_without_panic(text in "\\PC{0,20}") {
            let _ = starts_with_marker(&text);
            let _ = check_opt_out(&text);
            let _ = Consent::judge(&text, date(2026, 12, 1));
        }
    }
}
