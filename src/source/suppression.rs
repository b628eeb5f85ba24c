//! The suppression (opt-out) list: `[source] suppression = "optout.csv"`, one phone a line, or
//! a CSV with a `phone` column. Phones are normalised like recipients', so `01012345678` in the
//! list suppresses `010-1234-5678` in the source. The list is held in memory: it is as large as
//! the opt-outs, not the campaign. A line that is no phone is reported (by line number, never
//! by content) and skipped: it cannot suppress anyone, and refusing the whole list over it
//! would block the campaign.

use std::collections::HashSet;
use std::path::Path;

use super::SourceError;
use crate::phone::Phone;

pub fn load(path: &Path) -> Result<HashSet<Phone>, SourceError> {
    let path_text = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SourceError::Unreadable {
        path: path_text(),
        source,
    })?;
    let mut reader = super::csv_reader(file, false);
    let mut phones = HashSet::new();
    let mut column = None;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                return Err(SourceError::Csv {
                    path: path_text(),
                    line: error.position().map_or(0, csv::Position::line),
                    message: error.to_string(),
                });
            }
        }
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(|field| field.trim().is_empty()) {
            continue; // a blank line
        }
        // The first record that is not blank says whether the list has a header.
        let first = column.is_none();
        let column = *column.get_or_insert_with(|| {
            record
                .iter()
                .position(|field| field.trim_start_matches('\u{feff}').trim() == "phone")
        });
        if first && column.is_some() {
            continue; // the header
        }
        let text = record.get(column.unwrap_or(0)).unwrap_or("").trim();
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.trim().is_empty() {
            continue;
        }
        match Phone::parse(text) {
            Ok(phone) => {
                phones.insert(phone);
            }
            Err(error) => {
                tracing::warn!(file = %path_text(), line, "suppression list: skipped a line: {error}");
            }
        }
    }
    Ok(phones)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> HashSet<Phone> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        load(file.path()).unwrap()
    }

    fn phones(list: &[&str]) -> HashSet<Phone> {
        list.iter().map(|p| Phone::parse(p).unwrap()).collect()
    }

    #[test]
    fn one_phone_a_line_in_any_accepted_form() {
        assert_eq!(
            load_text("01012345678\r\n+82 10-2222-3333\n\nnot a phone\n011-123-4567\n"),
            phones(&["010-1234-5678", "010-2222-3333", "011-123-4567"])
        );
    }

    #[test]
    fn a_crlf_csv_with_a_header_suppresses_its_first_phone_too() {
        assert_eq!(
            load_text("name,phone\r\nA,010-6000-0000\r\nB,010-6000-0001\r\n"),
            phones(&["010-6000-0000", "010-6000-0001"])
        );
    }

    #[test]
    fn lone_cr_line_ends_and_a_leading_blank_line_are_read_too() {
        assert_eq!(
            load_text("01020000001\r01020000002\r"),
            phones(&["010-2000-0001", "010-2000-0002"])
        );
        assert_eq!(
            load_text("\r\nname,phone\r\nA,010-2000-0001\r\n"),
            phones(&["010-2000-0001"])
        );
    }

    #[test]
    fn a_csv_with_a_phone_column() {
        assert_eq!(
            load_text("\u{feff}name,phone\n홍길동,010 1234 5678\n김철수,01099998888\n"),
            phones(&["010-1234-5678", "010-9999-8888"])
        );
    }
}
