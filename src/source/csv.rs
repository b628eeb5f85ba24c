//! CSV sources: UTF-8 with a header row (a byte-order mark and CRLF line ends are fine). The
//! csv crate is synchronous, so the file is read on a blocking thread that feeds a bounded
//! channel. A row that is not valid UTF-8 or lacks a field is an [`InvalidRow`] like any
//! other bad row; only an unreadable file or a missing column stops the campaign.

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::line_ends::{LineStart, UnixLineEnds};
use super::{AgeFilter, OpenSource, READ_AHEAD, ReadRow, RowStart, SourceError, SourceRow};
use crate::recipient::{InvalidRow, RowShape};

type Reader = csv::Reader<UnixLineEnds<std::fs::File>>;

/// Opens the file and starts reading its rows: from the first, or `from` a row an earlier read
/// of the same file reported (the header is read all the same, for the columns).
pub(super) async fn open(
    path: PathBuf,
    ages: AgeFilter,
    from: Option<RowStart>,
) -> Result<OpenSource, SourceError> {
    let (shape, reader, first_line) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            let (shape, reader) = read_header(&path)?;
            match from {
                None => Ok((shape, reader, 1)),
                Some(start) => Ok((shape, reader_at(&path, start.at)?, start.line)),
            }
        }
    })
    .await
    .expect("the header reader does not panic")?;
    let columns = shape.kept.clone();
    let (sender, rows) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        read_rows(&path, reader, first_line, &shape, ages, &sender);
    });
    Ok(OpenSource { columns, rows })
}

/// A reader of `path` from `at`, a line start of an earlier read.
fn reader_at(path: &std::path::Path, at: LineStart) -> Result<Reader, SourceError> {
    let unreadable = |source| SourceError::Unreadable {
        path: display(path),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    file.seek(SeekFrom::Start(at.byte)).map_err(unreadable)?;
    Ok(super::csv_reader_of(
        UnixLineEnds::tracking_line_starts(file, at),
        false,
    ))
}

fn display(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn read_header(path: &std::path::Path) -> Result<(RowShape, Reader), SourceError> {
    let file = std::fs::File::open(path).map_err(|source| SourceError::Unreadable {
        path: display(path),
        source,
    })?;
    // The header is the first line that is not blank.
    let start = LineStart {
        byte: 0,
        after_cr: false,
    };
    let mut reader = super::csv_reader_of(UnixLineEnds::tracking_line_starts(file, start), false);
    let mut header = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut header) {
            Ok(false) => {
                return Err(SourceError::NoHeader {
                    path: display(path),
                });
            }
            Ok(true) if is_blank(&header) => continue,
            Ok(true) => break,
            Err(error) => {
                return Err(SourceError::Csv {
                    path: display(path),
                    line: error.position().map_or(1, csv::Position::line),
                    message: error.to_string(),
                });
            }
        }
    }
    if header.is_empty() {
        return Err(SourceError::NoHeader {
            path: display(path),
        });
    }
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let name = String::from_utf8_lossy(name);
            // A UTF-8 byte-order mark (Excel writes one) sticks to the first column name.
            let name = if index == 0 {
                name.trim_start_matches('\u{feff}')
            } else {
                &name
            };
            name.trim().to_string()
        })
        .collect();
    let shape = RowShape::new(&names).map_err(|source| SourceError::MissingColumn {
        path: display(path),
        source,
    })?;
    Ok((shape, reader))
}

/// Reads rows to the end of the file; `first_line` is the line the reader starts at.
fn read_rows(
    path: &std::path::Path,
    mut reader: Reader,
    first_line: u64,
    shape: &RowShape,
    ages: AgeFilter,
    sender: &mpsc::Sender<Result<ReadRow, SourceError>>,
) {
    // The csv crate counts lines from 1 where the reader starts.
    let line_of = |position: Option<&csv::Position>| {
        position.map_or(0, |p| p.line().saturating_add(first_line.saturating_sub(1)))
    };
    let mut record = csv::ByteRecord::new();
    loop {
        let row = match reader.read_byte_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                let position = record.position();
                let at = position.and_then(|p| reader.get_mut().line_start(p.byte()));
                // A line of white space only is no row.
                if is_blank(&record) {
                    continue;
                }
                let line = line_of(position);
                Ok(ReadRow {
                    row: classify(shape, line, &record, ages),
                    start: at.map(|at| RowStart { at, line }),
                })
            }
            Err(error) => Err(SourceError::Csv {
                path: display(path),
                line: line_of(error.position()),
                message: error.to_string(),
            }),
        };
        let fatal = row.is_err();
        if sender.blocking_send(row).is_err() || fatal {
            return;
        }
    }
}

/// A line with nothing but white space (no separator either): no row. A line of empty fields
/// (`,,`) is a row, and an invalid one.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.len() <= 1 && record.iter().all(|field| field.trim_ascii().is_empty())
}

fn classify(shape: &RowShape, line: u64, record: &csv::ByteRecord, ages: AgeFilter) -> SourceRow {
    let mut fields = Vec::with_capacity(record.len());
    for field in record {
        match std::str::from_utf8(field) {
            Ok(text) => fields.push(text),
            Err(_) => {
                return SourceRow::Invalid(InvalidRow {
                    line,
                    field: "row",
                    reason: "is not valid UTF-8".into(),
                });
            }
        }
    }
    super::judge(shape, shape.recipient(line, &fields), ages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipient::AgeRange;
    use jiff::civil::date;

    const AGES: AgeFilter = AgeFilter {
        range: AgeRange { min: 20, max: 29 },
        today: date(2026, 11, 24),
    };

    /// Reads `bytes` as a CSV source: the rows, or the error that stopped it.
    async fn read(bytes: &[u8]) -> Result<Vec<SourceRow>, SourceError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let mut source = open(file.path().to_path_buf(), AGES, None).await?;
        let mut rows = Vec::new();
        while let Some(row) = source.rows.recv().await {
            rows.push(row?.row);
        }
        Ok(rows)
    }

    /// Every row of `bytes` with its start, read from the first row or `from` one.
    async fn read_from(path: &std::path::Path, from: Option<RowStart>) -> Vec<ReadRow> {
        let mut source = open(path.to_path_buf(), AGES, from).await.unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.rows.recv().await {
            rows.push(row.unwrap());
        }
        rows
    }

    #[tokio::test]
    async fn a_read_from_any_row_start_reads_the_same_rows_with_the_same_lines() {
        // Every kind of line end, blank and empty lines, a byte-order mark, quoted newlines
        // (plain and CRLF), a bad row, a row out of the age range, a missing final line end.
        let bytes = "\u{feff}name,phone,birth_date\r\n\
             a,010-1111-0001,2000-01-01\r\n\r\n\
             b,010-1111-0002,2000-01-01\r\
             c,010-1111-0003,2000-01-01\n\n\n\
             \"d\r\nd\",010-1111-0004,2000-01-01\r\r\n\
             e,bad,2000-01-01\n   \n\
             \"f\n\nf\",010-1111-0006,1950-01-01\r\n\
             g,010-1111-0007,2000-01-01";
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let all = read_from(file.path(), None).await;
        assert_eq!(all.len(), 7);
        let seen = |rows: &[ReadRow]| -> Vec<String> {
            rows.iter().map(|r| format!("{:?}", r.row)).collect()
        };
        for (k, row) in all.iter().enumerate() {
            let start = row.start.expect("every row has a start");
            let rest = read_from(file.path(), Some(start)).await;
            assert_eq!(seen(&rest), seen(&all[k..]), "from row {k} ({start:?})");
            let starts: Vec<_> = rest.iter().map(|r| r.start).collect();
            let expected: Vec<_> = all[k..].iter().map(|r| r.start).collect();
            assert_eq!(starts, expected, "the starts from row {k}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Any file made of rows, blank and empty lines, quoted line ends and every kind of
        /// line end: a read from any row's start reads the rest as the whole read did.
        #[test]
        fn a_read_from_any_row_start_of_any_file_reads_the_rest_alike(
            pieces in proptest::collection::vec(0usize..8, 1..40),
            ends in proptest::collection::vec(0usize..3, 40),
        ) {
            const ENDS: [&str; 3] = ["\n", "\r\n", "\r"];
            let mut text = String::from("name,phone,birth_date\r\n");
            for (i, piece) in pieces.iter().enumerate() {
                let end = ENDS[ends[i % ends.len()]];
                let row = match piece {
                    0 => format!("a{i},010-1111-{i:04},2000-01-01"),
                    1 => format!("\"q{i}{end}x\",010-2222-{i:04},2000-01-01"),
                    2 => String::new(),
                    3 => "   ".to_string(),
                    4 => format!("b{i},bad,2000-01-01"),
                    5 => format!("o{i},010-3333-{i:04},1950-01-01"),
                    6 => format!("\"\"\"{i}\"\"\",010-4444-{i:04},2000-01-01"),
                    _ => format!("\"m{i}\r\n\r\n{end}\",010-5555-{i:04},2000-01-01"),
                };
                text.push_str(&row);
                text.push_str(end);
            }
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &text).unwrap();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let all = read_from(file.path(), None).await;
                let seen = |rows: &[ReadRow]| -> Vec<String> {
                    rows.iter().map(|r| format!("{:?} {:?}", r.row, r.start)).collect()
                };
                for (k, row) in all.iter().enumerate() {
                    let start = row.start.expect("every row has a start");
                    let rest = read_from(file.path(), Some(start)).await;
                    assert_eq!(seen(&rest), seen(&all[k..]), "from row {k} of {text:?}");
                }
            });
        }
    }

    fn phones(rows: &[SourceRow]) -> Vec<&str> {
        rows.iter()
            .filter_map(|row| match row {
                SourceRow::InRange(r) => Some(r.phone.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_bom_and_crlf_line_ends_are_read_like_plain_utf8() {
        let rows = read(
            "\u{feff}name,phone,birth_date\r\n홍길동,01012345678,2000-01-01\r\n김철수,010 2222 3333,1999-12-31\r\n"
                .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(phones(&rows), ["010-1234-5678", "010-2222-3333"]);
    }

    #[tokio::test]
    async fn crlf_files_report_the_lines_an_editor_shows() {
        let rows = read(
            b"name,phone,birth_date\r\na,010-1111-2222,2000-01-01\r\nb,bad,2000-01-01\r\n\r\nc,010-1111-3333,\"2000-01-01\"\r\nd,010-1111-4444,1900-02-30\r\n",
        )
        .await
        .unwrap();
        let lines: Vec<u64> = rows
            .iter()
            .map(|row| match row {
                SourceRow::InRange(r) => r.line,
                SourceRow::Invalid(bad) => bad.line,
                SourceRow::OutOfRange => 0,
            })
            .collect();
        assert_eq!(lines, [2, 3, 5, 6]);
        assert_eq!(phones(&rows), ["010-1111-2222", "010-1111-3333"]);
    }

    #[tokio::test]
    async fn lone_cr_line_ends_and_a_leading_blank_line_are_read_too() {
        let rows = read(b"name,phone,birth_date\ra,010-1111-2222,2000-01-01\rb,bad,2000-01-01\r")
            .await
            .unwrap();
        assert_eq!(phones(&rows), ["010-1111-2222"]);
        let SourceRow::Invalid(bad) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!(bad.line, 3);
        let rows = read(b"\r\nname,phone,birth_date\r\na,010-1111-2222,2000-01-01\r\n")
            .await
            .unwrap();
        assert_eq!(phones(&rows), ["010-1111-2222"]);
    }

    #[tokio::test]
    async fn a_birth_date_in_the_future_is_invalid_and_no_value_is_quoted() {
        let rows = read(
            b"name,phone,birth_date\na,010-1111-2222,2026-11-25\nb,010-1111-3333,900101-1234567\n",
        )
        .await
        .unwrap();
        let SourceRow::Invalid(future) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!((future.line, future.field), (2, "birth_date"));
        let SourceRow::Invalid(rrn) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert!(!rrn.to_string().contains("1234567"), "{rrn}");
    }

    #[tokio::test]
    async fn bad_rows_are_reported_with_their_line_and_the_rest_is_read() {
        let mut bytes = b"name,phone,birth_date,city\n".to_vec();
        bytes.extend_from_slice("a,010-1111-2222,2000-01-01,서울\n".as_bytes());
        bytes.extend_from_slice(b"b,010-1111-3333,2000-13-01,x\n");
        bytes.extend_from_slice(b"c,010-1111-4444\n");
        bytes.extend_from_slice(b"d,010-1111-5555,2000-01-01,\xff\xfe\n");
        bytes.extend_from_slice(b"e,010-1111-6666,1950-01-01,x\n");
        bytes.extend_from_slice(b"f,010-1111-7777,2001-01-01,x\n");
        let rows = read(&bytes).await.unwrap();
        let invalid: Vec<(u64, &str)> = rows
            .iter()
            .filter_map(|row| match row {
                SourceRow::Invalid(bad) => Some((bad.line, bad.field)),
                _ => None,
            })
            .collect();
        assert_eq!(invalid, [(3, "birth_date"), (4, "birth_date"), (5, "row")]);
        assert_eq!(phones(&rows), ["010-1111-2222", "010-1111-7777"]);
        assert!(matches!(rows[4], SourceRow::OutOfRange));
        let SourceRow::InRange(first) = &rows[0] else {
            panic!()
        };
        assert_eq!(first.field("city"), Some("서울"));
    }

    #[tokio::test]
    async fn quoted_newlines_stay_in_their_field_and_lines_keep_counting() {
        let rows = read(
            "name,phone,birth_date\n\"두 줄\n이름\",010-1111-2222,2000-01-01\nb,bad,2000-01-01\n"
                .as_bytes(),
        )
        .await
        .unwrap();
        let SourceRow::InRange(first) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!((first.line, first.name.as_str()), (2, "두 줄\n이름"));
        let SourceRow::Invalid(bad) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!((bad.line, bad.field), (4, "phone"));
    }

    #[tokio::test]
    async fn a_ten_megabyte_line_is_one_bad_row_and_the_next_row_is_read() {
        let mut bytes = b"name,phone,birth_date\na,".to_vec();
        bytes.extend(std::iter::repeat_n(b'7', 10 * 1024 * 1024));
        bytes.extend_from_slice(b",2000-01-01\nb,010-1111-2222,2000-01-01\n");
        let rows = read(&bytes).await.unwrap();
        assert_eq!(rows.len(), 2);
        let SourceRow::Invalid(bad) = &rows[0] else {
            panic!("the long row was accepted")
        };
        assert_eq!((bad.line, bad.field), (2, "phone"));
        assert!(bad.reason.len() < 200, "the reason does not echo the field");
        assert_eq!(phones(&rows), ["010-1111-2222"]);
    }

    #[tokio::test]
    async fn a_missing_column_or_an_empty_file_stops_before_any_row() {
        let missing = read(b"name,birth_date\na,2000-01-01\n").await;
        assert!(
            matches!(&missing, Err(SourceError::MissingColumn { source, .. }) if source.0 == "phone"),
            "{missing:?}"
        );
        let empty = read(b"").await;
        assert!(
            matches!(empty, Err(SourceError::NoHeader { .. })),
            "{empty:?}"
        );
        assert_eq!(read(b"name,phone,birth_date\n").await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn an_unreadable_file_names_its_path() {
        let error = open("/nonexistent/users.csv".into(), AGES, None)
            .await
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/users.csv: cannot be read")
        );
    }
}
