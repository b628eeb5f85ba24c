//! Recipient sources (SPEC section 2): a CSV file or a database, read as a stream of rows in
//! source order, each already validated ([`Recipient`] or [`InvalidRow`]) and checked against
//! the campaign's age range. A source is read by a task of its own into a bounded channel, so
//! memory does not grow with the number of rows, whatever the source.
//!
//! - [`csv`]: a CSV file with a header row, read on a blocking thread.
//! - [`sql`]: SQLite (the embedded default) and PostgreSQL through sqlx, the age filter pushed
//!   into the query.
//! - [`suppression`]: the opt-out list.

pub mod csv;
mod line_ends;
pub mod resume;
pub mod sql;
pub mod suppression;

pub use line_ends::LineStart;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use jiff::civil::Date;
use tokio::sync::mpsc;

use crate::config::DatabaseUrl;
use crate::recipient::{AgeRange, InvalidRow, MissingColumn, Recipient, RowShape};

/// Where a campaign's recipients come from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Csv(PathBuf),
    Database { url: DatabaseUrl, query: String },
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Csv(path) => write!(f, "{}", path.display()),
            // The URL's Display redacts a password.
            SourceSpec::Database { url, .. } => write!(f, "{url}"),
        }
    }
}

/// Who is in the campaign by age, on the campaign's date.
#[derive(Debug, Clone, Copy)]
pub struct AgeFilter {
    pub range: AgeRange,
    pub today: Date,
}

/// One row of a source, in source order.
#[derive(Debug)]
pub enum SourceRow {
    /// A valid row whose age is in the range.
    InRange(Box<Recipient>),
    /// A valid row outside the age range: counted in `total`, nothing else.
    OutOfRange,
    /// A row refused by validation, whatever its age.
    Invalid(InvalidRow),
}

/// A row as a source reads it: what it is, and for a CSV file where it starts.
#[derive(Debug)]
pub struct ReadRow {
    pub row: SourceRow,
    /// Where a later run may start reading again to read this row first (a CSV file only).
    pub start: Option<RowStart>,
}

/// Where a row of a CSV file starts: a later run of an unchanged file may open it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowStart {
    pub at: LineStart,
    /// The row's line, as its errors and the journal report it.
    pub line: u64,
}

/// A source that could not be read at all: the campaign stops (exit 1), nothing is sent.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    // The cause is the error's source: `{:#}` prints it once, after this text.
    #[error("{path}: cannot be read")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: has no header row")]
    NoHeader { path: String },
    #[error("{path}")]
    MissingColumn { path: String, source: MissingColumn },
    #[error("{path}: line {line}: {message}")]
    Csv {
        path: String,
        line: u64,
        message: String,
    },
    #[error("database {url}: {message}")]
    Database { url: String, message: String },
}

/// An open source: its template columns, known before any row is read, and its rows.
pub struct OpenSource {
    /// The column names templates may use: every column but `rrn`.
    pub columns: Arc<[String]>,
    pub rows: mpsc::Receiver<Result<ReadRow, SourceError>>,
}

/// A CSV file as every file of a campaign is read (sources, the suppression list): its line
/// ends made `\n` ([`line_ends`]), so records end there and line numbers are an editor's.
fn csv_reader(
    file: std::fs::File,
    has_headers: bool,
) -> ::csv::Reader<line_ends::UnixLineEnds<std::fs::File>> {
    csv_reader_of(line_ends::UnixLineEnds::new(file), has_headers)
}

fn csv_reader_of(
    lines: line_ends::UnixLineEnds<std::fs::File>,
    has_headers: bool,
) -> ::csv::Reader<line_ends::UnixLineEnds<std::fs::File>> {
    ::csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(has_headers)
        .from_reader(lines)
}

/// A validated row judged against the campaign's ages: a birth date after the campaign's date
/// is invalid (no one is born in the future), otherwise in or out of the range.
fn judge(shape: &RowShape, row: Result<Recipient, InvalidRow>, ages: AgeFilter) -> SourceRow {
    match row {
        Ok(recipient) if recipient.birth_date > ages.today => SourceRow::Invalid(InvalidRow {
            line: recipient.line,
            field: shape.birth_field(),
            reason: "is in the future".into(),
        }),
        Ok(recipient) if ages.range.contains(recipient.birth_date, ages.today) => {
            SourceRow::InRange(Box::new(recipient))
        }
        Ok(_) => SourceRow::OutOfRange,
        Err(invalid) => SourceRow::Invalid(invalid),
    }
}

/// How many rows a source task reads ahead of the campaign.
const READ_AHEAD: usize = 256;

/// Opens `spec` and starts reading it; fails before reading a row when the source cannot be
/// opened or lacks a required column.
pub async fn open(spec: &SourceSpec, ages: AgeFilter) -> Result<OpenSource, SourceError> {
    open_from(spec, ages, None).await
}

/// Opens `spec` like [`open`], a CSV file `from` a row an earlier read of it reported
/// ([`resume`]); a database has no such rows.
pub async fn open_from(
    spec: &SourceSpec,
    ages: AgeFilter,
    from: Option<RowStart>,
) -> Result<OpenSource, SourceError> {
    match spec {
        SourceSpec::Csv(path) => csv::open(path.clone(), ages, from).await,
        SourceSpec::Database { url, query } => sql::open(url, query, ages).await,
    }
}

/// The number of valid rows in the age range, for the progress bar's total: the CSV is read
/// once more, a database answers a `COUNT(*)` of the filtered query.
pub async fn count_in_range(spec: &SourceSpec, ages: AgeFilter) -> Result<u64, SourceError> {
    match spec {
        SourceSpec::Csv(_) => {
            let mut source = open(spec, ages).await?;
            let mut count = 0;
            while let Some(row) = source.rows.recv().await {
                if let SourceRow::InRange(_) = row?.row {
                    count += 1;
                }
            }
            Ok(count)
        }
        SourceSpec::Database { url, query } => sql::count(url, query, ages).await,
    }
}
