//! Korean mobile phone numbers: normalisation to `010-1234-5678` form (SPEC section 7) and the
//! masked form `010-****-5678` that is the only one logs and alerts may carry.

use std::fmt;

/// A valid Korean mobile number in normalised form: `01X-NNN(N)-NNNN`, with `X` one of
/// `0 1 6 7 8 9`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

/// Why a phone number was refused. It never repeats the number, so it is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the phone number is empty")]
    Empty,
    #[error(
        "the phone number holds characters other than digits, spaces, '-', '.', '(' , ')' and a leading '+82'"
    )]
    BadCharacters,
    #[error("not a Korean mobile number (01X, then 3 or 4 digits, then 4 digits)")]
    NotMobile,
}

impl Phone {
    /// Accepts `01012345678`, `010-1234-5678`, `010 1234 5678`, `010.1234.5678`,
    /// `+82 10-1234-5678`, `+82 010 1234 5678`, and the like.
    pub fn parse(text: &str) -> Result<Phone, PhoneError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PhoneError::Empty);
        }
        let (international, rest) = match text.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut digits = String::with_capacity(12);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(PhoneError::BadCharacters),
            }
        }
        let national = if international {
            let Some(after_country) = digits.strip_prefix("82") else {
                return Err(PhoneError::NotMobile);
            };
            // "+82 10-..." drops the trunk 0; "+82 (0)10-..." keeps it.
            if after_country.starts_with('0') {
                after_country.to_string()
            } else {
                format!("0{after_country}")
            }
        } else {
            digits
        };
        Self::from_national_digits(&national)
    }

    fn from_national_digits(digits: &str) -> Result<Phone, PhoneError> {
        let bytes = digits.as_bytes();
        let valid_prefix = bytes.len() >= 3
            && bytes[0] == b'0'
            && bytes[1] == b'1'
            && matches!(bytes[2], b'0' | b'1' | b'6' | b'7' | b'8' | b'9');
        if !valid_prefix || !(digits.len() == 10 || digits.len() == 11) {
            return Err(PhoneError::NotMobile);
        }
        let (prefix, rest) = digits.split_at(3);
        let (middle, last) = rest.split_at(rest.len() - 4);
        Ok(Phone(format!("{prefix}-{middle}-{last}")))
    }

    /// The normalised form, `010-1234-5678`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form for logs and alerts: the middle part hidden, `010-****-5678`.
    pub fn masked(&self) -> String {
        let mut parts = self.0.split('-');
        let (prefix, middle, last) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        format!("{prefix}-{}-{last}", "*".repeat(middle.len()))
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(text in "\\PC{0,40}") {
            if let Ok(phone) = Phone::parse(&text) {
                // What was accepted is normal: parsing it again changes nothing.
                prop_assert_eq!(Phone::parse(phone.as_str()), Ok(phone.clone()));
            }
        }

        #[test]
        fn every_mobile_number_reads_the_same_in_every_accepted_form(
            prefix in prop::sample::select(vec!["010", "011", "016", "017", "018", "019"]),
            middle in "[0-9]{3,4}",
            last in "[0-9]{4}",
        ) {
            let normal = format!("{prefix}-{middle}-{last}");
            for written in [
                format!("{prefix}{middle}{last}"),
                format!("{prefix} {middle} {last}"),
                format!("+82 {}-{middle}-{last}", &prefix[1..]),
                format!("+82 {prefix} {middle} {last}"),
                normal.clone(),
            ] {
                let phone = Phone::parse(&written).unwrap();
                prop_assert_eq!(phone.as_str(), normal.as_str());
                let stars = "*".repeat(middle.len());
                prop_assert_eq!(phone.masked(), format!("{prefix}-{stars}-{last}"));
            }
        }
    }

    #[test]
    fn accepted_forms_normalise_to_dashed_form() {
        let table = [
            ("01012345678", "010-1234-5678"),
            ("010-1234-5678", "010-1234-5678"),
            ("010 1234 5678", "010-1234-5678"),
            ("010.1234.5678", "010-1234-5678"),
            ("+82 10-1234-5678", "010-1234-5678"),
            ("+821012345678", "010-1234-5678"),
            ("+82 (0)10 1234 5678", "010-1234-5678"),
            (" 011-123-4567 ", "011-123-4567"),
            ("0161234567", "016-123-4567"),
            ("019-9999-0000", "019-9999-0000"),
        ];
        for (input, expected) in table {
            assert_eq!(
                Phone::parse(input).map(|p| p.0),
                Ok(expected.to_string()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let table = [
            ("", PhoneError::Empty),
            ("   ", PhoneError::Empty),
            ("010-1234-567a", PhoneError::BadCharacters),
            ("010/1234/5678", PhoneError::BadCharacters),
            ("02-123-4567", PhoneError::NotMobile),
            ("012-1234-5678", PhoneError::NotMobile),
            ("010-1234-56789", PhoneError::NotMobile),
            ("010-12-5678", PhoneError::NotMobile),
            ("+1 10-1234-5678", PhoneError::NotMobile),
            ("+", PhoneError::NotMobile),
        ];
        for (input, expected) in table {
            assert_eq!(Phone::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn masking_hides_the_middle_part() {
        assert_eq!(
            Phone::parse("01012345678").unwrap().masked(),
            "010-****-5678"
        );
        assert_eq!(Phone::parse("0111234567").unwrap().masked(), "011-***-4567");
    }
}
