//! CSV sources: UTF-8 with a header row (a byte-order mark and CRLF line ends are fine). The
//! csv crate is synchronous, so the file is read on a blocking thread that feeds a bounded
//! channel. A row that is not valid UTF-8 or lacks a field is an [`InvalidRow`] like any
//! other bad row; only an unreadable file or a missing column stops the campaign.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::{AgeFilter, OpenSource, READ_AHEAD, SourceError, SourceRow};
use crate::recipient::{InvalidRow, RowShape};

pub(super) async fn open(path: PathBuf, ages: AgeFilter) -> Result<OpenSource, SourceError> {
    let (shape, reader) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || read_header(&path)
    })
    .await
    .expect("the header reader does not panic")?;
    let columns = shape.kept.clone();
    let (sender, rows) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || read_rows(&path, reader, &shape, ages, &sender));
    Ok(OpenSource { columns, rows })
}

fn display(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn read_header(
    path: &std::path::Path,
) -> Result<(RowShape, csv::Reader<std::fs::File>), SourceError> {
    let file = std::fs::File::open(path).map_err(|source| SourceError::Unreadable {
        path: display(path),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let header = reader.byte_headers().map_err(|error| SourceError::Csv {
        path: display(path),
        line: 1,
        message: error.to_string(),
    })?;
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

fn read_rows(
    path: &std::path::Path,
    mut reader: csv::Reader<std::fs::File>,
    shape: &RowShape,
    ages: AgeFilter,
    sender: &mpsc::Sender<Result<SourceRow, SourceError>>,
) {
    let mut record = csv::ByteRecord::new();
    loop {
        let row = match reader.read_byte_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                Ok(classify(shape, line, &record, ages))
            }
            Err(error) => Err(SourceError::Csv {
                path: display(path),
                line: error.position().map_or(0, csv::Position::line),
                message: error.to_string(),
            }),
        };
        let fatal = row.is_err();
        if sender.blocking_send(row).is_err() || fatal {
            return;
        }
    }
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
    match shape.recipient(line, &fields) {
        Ok(recipient) if ages.range.contains(recipient.birth_date, ages.today) => {
            SourceRow::InRange(Box::new(recipient))
        }
        Ok(_) => SourceRow::OutOfRange,
        Err(invalid) => SourceRow::Invalid(invalid),
    }
}
