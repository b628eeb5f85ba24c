//! One person a campaign may message: a source row validated into a [`Recipient`] (SPEC
//! section 2 and 7), and the age rules that decide who is in the campaign: international age
//! (만 나이) on the campaign's date, age groups (`20s`) and ranges (`20-29`), and the birth-date
//! bounds that push the age filter into SQL.
//!
//! A resident registration number (`rrn`) only ever yields a birth date: it is read, turned
//! into a date and dropped, never kept in a [`Recipient`], never quoted in an error.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::civil::Date;

use crate::phone::Phone;

/// A valid row of a source: everything a message needs, and where the row came from.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The source line (CSV) or row number (SQL), for reports.
    pub line: u64,
    pub name: String,
    pub phone: Phone,
    pub birth_date: Date,
    /// The source's column names, shared by every row; `rrn` is never among them.
    pub columns: Arc<[String]>,
    /// This row's values, in the order of `columns`.
    pub values: Vec<String>,
}

/// Whom one message goes to, and the values its placeholders take: a [`Recipient`] read from
/// the source, or one a joined run claimed from the journal (SPEC section 9), which reads no
/// source and renders from the values admission stored.
#[derive(Debug, Clone)]
pub struct Addressee {
    /// The source line (CSV) or row number (SQL), for reports.
    pub line: u64,
    pub name: String,
    pub phone: Phone,
    /// The names of `values`, shared by every addressee of the run.
    pub columns: Arc<[String]>,
    pub values: Vec<String>,
}

impl Addressee {
    /// The value of a template placeholder: `phone` renders the normalised phone, `name` the
    /// name, anything else the column of that name.
    pub fn field(&self, field: &str) -> Option<&str> {
        placeholder(field, &self.phone, &self.name, &self.columns, &self.values)
    }
}

/// A placeholder's value: the phone, the name, or the column of that name.
fn placeholder<'a>(
    field: &str,
    phone: &'a Phone,
    name: &'a str,
    columns: &[String],
    values: &'a [String],
) -> Option<&'a str> {
    match field {
        "phone" => Some(phone.as_str()),
        "name" => Some(name),
        _ => columns
            .iter()
            .position(|column| column == field)
            .and_then(|index| values.get(index))
            .map(String::as_str),
    }
}

impl From<Recipient> for Addressee {
    fn from(recipient: Recipient) -> Addressee {
        Addressee {
            line: recipient.line,
            name: recipient.name,
            phone: recipient.phone,
            columns: recipient.columns,
            values: recipient.values,
        }
    }
}

impl Recipient {
    /// The value of a template placeholder: `phone` renders the normalised phone, `name` the
    /// name, anything else the source column of that name.
    pub fn field(&self, field: &str) -> Option<&str> {
        placeholder(field, &self.phone, &self.name, &self.columns, &self.values)
    }
}

/// A row refused by validation: counted `invalid`, reported, skipped. The reason names the
/// field and never repeats a resident registration number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub line: u64,
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for InvalidRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
    }
}

/// The columns a source row is made of, by name; `rrn` is read for the birth date only.
#[derive(Debug, Clone)]
pub struct RowShape {
    /// The columns kept for templates (every column but `rrn`).
    pub kept: Arc<[String]>,
    /// For each kept column, its index in the raw row.
    kept_at: Vec<usize>,
    name: usize,
    phone: usize,
    birth: BirthColumn,
}

#[derive(Debug, Clone, Copy)]
enum BirthColumn {
    Date(usize),
    Rrn(usize),
}

/// A required column is missing: the whole source is unusable (exit 1, nothing sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("has no `{0}` column (needs name, phone, and birth_date or rrn)")]
pub struct MissingColumn(pub &'static str);

impl RowShape {
    pub fn new(header: &[String]) -> Result<RowShape, MissingColumn> {
        let find = |wanted: &str| header.iter().position(|column| column.trim() == wanted);
        let name = find("name").ok_or(MissingColumn("name"))?;
        let phone = find("phone").ok_or(MissingColumn("phone"))?;
        let birth = match (find("birth_date"), find("rrn")) {
            (Some(index), _) => BirthColumn::Date(index),
            (None, Some(index)) => BirthColumn::Rrn(index),
            (None, None) => return Err(MissingColumn("birth_date")),
        };
        let rrn = find("rrn");
        let kept_at: Vec<usize> = (0..header.len()).filter(|&i| Some(i) != rrn).collect();
        let kept: Arc<[String]> = kept_at
            .iter()
            .map(|&i| header[i].trim().to_string())
            .collect();
        Ok(RowShape {
            kept,
            kept_at,
            name,
            phone,
            birth,
        })
    }

    /// Validates one raw row (a missing trailing field reads as empty).
    /// The column the birth date comes from: `birth_date`, or `rrn`.
    pub fn birth_field(&self) -> &'static str {
        match self.birth {
            BirthColumn::Date(_) => "birth_date",
            BirthColumn::Rrn(_) => "rrn",
        }
    }

    pub fn recipient(&self, line: u64, raw: &[&str]) -> Result<Recipient, InvalidRow> {
        let get = |index: usize| raw.get(index).map_or("", |value| value.trim());
        let invalid = |field: &'static str, reason: String| InvalidRow {
            line,
            field,
            reason,
        };
        let name = get(self.name);
        if name.is_empty() {
            return Err(invalid("name", "is empty".into()));
        }
        let phone = Phone::parse(get(self.phone)).map_err(|e| invalid("phone", e.to_string()))?;
        let birth_date = match self.birth {
            BirthColumn::Date(index) => {
                parse_birth_date(get(index)).map_err(|e| invalid("birth_date", e))?
            }
            BirthColumn::Rrn(index) => {
                birth_date_from_rrn(get(index)).map_err(|e| invalid("rrn", e.to_string()))?
            }
        };
        Ok(Recipient {
            line,
            name: name.to_string(),
            phone,
            birth_date,
            columns: self.kept.clone(),
            values: self
                .kept_at
                .iter()
                .map(|&index| get(index).to_string())
                .collect(),
        })
    }
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn parse_birth_date(text: &str) -> Result<Date, String> {
    if text.is_empty() {
        return Err("is empty".into());
    }
    let shape_ok = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        // The value is not quoted: a misplaced column may hold personal data (an rrn).
        return Err("is not a date in YYYY-MM-DD form".into());
    }
    Date::from_str(text).map_err(|_| "is not a real date".to_string())
}

/// Why an `rrn` gave no birth date. Deliberately carries no part of the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RrnError {
    #[error("is empty")]
    Empty,
    #[error("is not a resident registration number (YYMMDD-GNNNNNN)")]
    Shape,
    #[error("does not hold a real birth date")]
    Date,
}

/// The birth date in a resident registration number `YYMMDD-GNNNNNN` (the hyphen optional):
/// the 7th digit gives the century, 1/2/5/6 → 1900s, 3/4/7/8 → 2000s, 9/0 → 1800s. The check
/// digit is not verified: numbers issued since 2020 no longer carry one.
pub fn birth_date_from_rrn(text: &str) -> Result<Date, RrnError> {
    if text.is_empty() {
        return Err(RrnError::Empty);
    }
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&b| b != b'-')
        .map(|b| b.wrapping_sub(b'0'))
        .collect();
    let hyphen_ok = match text.find('-') {
        None => true,
        Some(at) => at == 6 && text.matches('-').count() == 1,
    };
    if digits.len() != 13 || !hyphen_ok || digits.iter().any(|&d| d > 9) {
        return Err(RrnError::Shape);
    }
    let two = |i: usize| i16::from(digits[i]) * 10 + i16::from(digits[i + 1]);
    let century = match digits[6] {
        1 | 2 | 5 | 6 => 1900,
        3 | 4 | 7 | 8 => 2000,
        _ => 1800,
    };
    let (month, day) = (two(2), two(4));
    Date::new(
        century + two(0),
        i8::try_from(month).map_err(|_| RrnError::Date)?,
        i8::try_from(day).map_err(|_| RrnError::Date)?,
    )
    .map_err(|_| RrnError::Date)
}

/// International age (만 나이) on `today`: whole years since birth, a year added on each
/// birthday. Someone born on 29 February becomes a year older on 1 March in common years.
/// Written out rather than taken from `jiff`'s span arithmetic, which clamps 29 February to
/// the 28th and would add the year a day early.
pub fn international_age(birth: Date, today: Date) -> i32 {
    let had_birthday = (today.month(), today.day()) >= (birth.month(), birth.day());
    i32::from(today.year()) - i32::from(birth.year()) - i32::from(!had_birthday)
}

/// An inclusive range of ages: `--age-group 20s` (20..=29) or `--age-range 20-29`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgeRange {
    pub min: u16,
    pub max: u16,
}

/// The oldest age a range may name.
const MAX_AGE: u16 = 150;

impl AgeRange {
    /// `10s` … `90s`.
    pub fn group(text: &str) -> Result<AgeRange, String> {
        let decade = text
            .strip_suffix('s')
            .filter(|d| d.len() == 2 && d.ends_with('0'))
            .and_then(|d| d.parse::<u16>().ok())
            .filter(|d| (10..=90).contains(d));
        match decade {
            Some(min) => Ok(AgeRange { min, max: min + 9 }),
            None => Err(format!(
                "unknown age group {text:?}: use 10s, 20s, … 90s (or --age-range A-B)"
            )),
        }
    }

    /// `A-B`, inclusive, `A <= B`.
    pub fn range(text: &str) -> Result<AgeRange, String> {
        let bad = || format!("bad age range {text:?}: use A-B with whole ages, e.g. 20-29");
        let (min, max) = text.split_once('-').ok_or_else(bad)?;
        let min: u16 = min.trim().parse().map_err(|_| bad())?;
        let max: u16 = max.trim().parse().map_err(|_| bad())?;
        if min > max || max > MAX_AGE {
            return Err(bad());
        }
        Ok(AgeRange { min, max })
    }

    pub fn contains(&self, birth: Date, today: Date) -> bool {
        let age = international_age(birth, today);
        age >= i32::from(self.min) && age <= i32::from(self.max)
    }

    /// The inclusive birth-date bounds `(earliest, latest)` of this range on `today`: a birth
    /// date is in the range exactly when it lies between them. This is what SQL filters on.
    pub fn birth_dates(&self, today: Date) -> (Date, Date) {
        let latest = latest_birth_for_age(self.min, today);
        let earliest = latest_birth_for_age(self.max + 1, today)
            .tomorrow()
            .expect("ages are bounded far from the end of the calendar");
        (earliest, latest)
    }
}

/// The latest birth date of someone at least `age` on `today`: the same day `age` years back,
/// 29 February becoming the 28th in a common year (someone born on 1 March that year is not yet
/// `age`; someone born on the 28th is).
fn latest_birth_for_age(age: u16, today: Date) -> Date {
    let year = today.year() - i16::try_from(age).expect("ages fit in i16");
    let last_day = Date::new(year, today.month(), 1)
        .expect("the first of a month is a date")
        .last_of_month()
        .day();
    Date::new(year, today.month(), today.day().min(last_day)).expect("clamped to the month")
}

impl fmt::Display for AgeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    #[test]
    fn age_counts_whole_years_and_grows_on_the_birthday() {
        let birth = date(2000, 5, 15);
        assert_eq!(international_age(birth, date(2026, 5, 14)), 25);
        assert_eq!(international_age(birth, date(2026, 5, 15)), 26);
        assert_eq!(international_age(birth, date(2026, 5, 16)), 26);
        assert_eq!(international_age(birth, date(2000, 5, 15)), 0);
    }

    #[test]
    fn someone_born_on_29_february_ages_on_1_march_in_common_years() {
        let birth = date(2004, 2, 29);
        assert_eq!(international_age(birth, date(2025, 2, 28)), 20);
        assert_eq!(international_age(birth, date(2025, 3, 1)), 21);
        assert_eq!(international_age(birth, date(2028, 2, 28)), 23);
        assert_eq!(international_age(birth, date(2028, 2, 29)), 24);
    }

    #[test]
    fn age_groups_are_decades_and_nothing_else() {
        assert_eq!(AgeRange::group("20s"), Ok(AgeRange { min: 20, max: 29 }));
        assert_eq!(AgeRange::group("10s"), Ok(AgeRange { min: 10, max: 19 }));
        assert_eq!(AgeRange::group("90s"), Ok(AgeRange { min: 90, max: 99 }));
        for bad in [
            "2Os", "25s", "abc", "", "s", "00s", "100s", "20", "20S", "0s", "-20s",
        ] {
            assert!(AgeRange::group(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn age_ranges_are_inclusive_and_ordered() {
        assert_eq!(AgeRange::range("20-29"), Ok(AgeRange { min: 20, max: 29 }));
        assert_eq!(AgeRange::range("35-35"), Ok(AgeRange { min: 35, max: 35 }));
        for bad in ["29-20", "20", "a-b", "20-", "-5-3", "20-200"] {
            assert!(AgeRange::range(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_edges_of_the_20s_on_a_given_day() {
        let today = date(2026, 11, 24);
        let twenties = AgeRange::group("20s").unwrap();
        // Turned 20 today: in. Turns 20 tomorrow: out.
        assert!(twenties.contains(date(2006, 11, 24), today));
        assert!(!twenties.contains(date(2006, 11, 25), today));
        // Last day of 29: in. Turned 30 today: out.
        assert!(twenties.contains(date(1996, 11, 25), today));
        assert!(!twenties.contains(date(1996, 11, 24), today));
        assert_eq!(
            twenties.birth_dates(today),
            (date(1996, 11, 25), date(2006, 11, 24))
        );
    }

    #[test]
    fn birth_date_bounds_on_29_february() {
        let today = date(2028, 2, 29);
        let range = AgeRange::range("21-21").unwrap();
        // Born 2007-02-28: 21 since yesterday. Born 2007-03-01: still 20.
        assert_eq!(range.birth_dates(today).1, date(2007, 2, 28));
        assert!(range.contains(date(2007, 2, 28), today));
        assert!(!range.contains(date(2007, 3, 1), today));
    }

    proptest! {
        #[test]
        fn any_row_is_a_recipient_or_an_invalid_row_without_panic(
            fields in proptest::collection::vec("\\PC{0,30}", 0..6),
            line in 1u64..1_000_000,
        ) {
            let shape = shape(&["name", "phone", "birth_date", "city", "rrn"]);
            let raw: Vec<&str> = fields.iter().map(String::as_str).collect();
            match shape.recipient(line, &raw) {
                Ok(recipient) => {
                    prop_assert!(!recipient.name.is_empty());
                    prop_assert_eq!(recipient.line, line);
                }
                Err(invalid) => prop_assert_eq!(invalid.line, line),
            }
            let _ = birth_date_from_rrn(raw.first().copied().unwrap_or(""));
        }

        #[test]
        fn sql_bounds_agree_with_the_age_rule(
            birth_days in 0i32..50_000,
            today_days in 0i32..50_000,
            min in 0u16..100,
            width in 0u16..20,
        ) {
            let epoch = date(1900, 1, 1);
            let birth = epoch.checked_add(jiff::Span::new().days(birth_days)).unwrap();
            let today = epoch.checked_add(jiff::Span::new().days(today_days)).unwrap();
            let range = AgeRange { min, max: min + width };
            let (earliest, latest) = range.birth_dates(today);
            prop_assert_eq!(range.contains(birth, today), earliest <= birth && birth <= latest);
        }
    }

    #[test]
    fn rrn_gives_the_birth_date_by_its_century_digit() {
        assert_eq!(birth_date_from_rrn("990101-1234567"), Ok(date(1999, 1, 1)));
        assert_eq!(birth_date_from_rrn("0402294234567"), Ok(date(2004, 2, 29)));
        assert_eq!(birth_date_from_rrn("050315-3000000"), Ok(date(2005, 3, 15)));
        assert_eq!(birth_date_from_rrn("850720-6000000"), Ok(date(1985, 7, 20)));
        assert_eq!(
            birth_date_from_rrn("991231-9000000"),
            Ok(date(1899, 12, 31))
        );
        assert_eq!(
            birth_date_from_rrn("991231-0000000"),
            Ok(date(1899, 12, 31))
        );
        assert_eq!(birth_date_from_rrn("010229-3000000"), Err(RrnError::Date));
        assert_eq!(birth_date_from_rrn("991301-1000000"), Err(RrnError::Date));
        assert_eq!(birth_date_from_rrn("99010-11234567"), Err(RrnError::Shape));
        assert_eq!(birth_date_from_rrn("990101-123456"), Err(RrnError::Shape));
        assert_eq!(birth_date_from_rrn(""), Err(RrnError::Empty));
    }

    fn shape(columns: &[&str]) -> RowShape {
        RowShape::new(&columns.iter().map(|c| c.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn rows_validate_into_recipients_and_keep_extra_columns() {
        let shape = shape(&["name", "phone", "birth_date", "city"]);
        let r = shape
            .recipient(7, &["홍길동", "+82 10 1234 5678", "1999-01-02", "서울"])
            .unwrap();
        assert_eq!(r.phone.as_str(), "010-1234-5678");
        assert_eq!(r.field("city"), Some("서울"));
        assert_eq!(r.field("phone"), Some("010-1234-5678"));
        assert_eq!(r.field("nope"), None);
    }

    #[test]
    fn bad_rows_name_their_line_and_field() {
        let shape = shape(&["name", "phone", "birth_date"]);
        let cases: [(&[&str], &str); 6] = [
            (&["", "010-1234-5678", "1999-01-02"], "name"),
            (&["a", "02-123-4567", "1999-01-02"], "phone"),
            (&["a", "010-1234-5678", "1999-02-30"], "birth_date"),
            (&["a", "010-1234-5678", "99-01-02"], "birth_date"),
            (&["a", "010-1234-5678"], "birth_date"),
            (&["a"], "phone"),
        ];
        for (row, field) in cases {
            let error = shape.recipient(12, row).unwrap_err();
            assert_eq!((error.line, error.field), (12, field), "{row:?}");
        }
    }

    #[test]
    fn an_rrn_column_gives_the_birth_date_and_is_never_kept() {
        let shape = shape(&["name", "phone", "rrn"]);
        assert!(!shape.kept.iter().any(|c| c == "rrn"));
        let r = shape
            .recipient(2, &["김철수", "01098765432", "970315-1234567"])
            .unwrap();
        assert_eq!(r.birth_date, date(1997, 3, 15));
        assert!(!r.values.iter().any(|v| v.contains("970315")));
        let error = shape
            .recipient(3, &["김철수", "01098765432", "971315-1234567"])
            .unwrap_err();
        assert!(!error.to_string().contains("971315"));
    }

    #[test]
    fn a_source_without_a_required_column_is_refused() {
        let header = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            RowShape::new(&header(&["name", "birth_date"])).unwrap_err(),
            MissingColumn("phone")
        );
        assert_eq!(
            RowShape::new(&header(&["name", "phone"])).unwrap_err(),
            MissingColumn("birth_date")
        );
    }
}
