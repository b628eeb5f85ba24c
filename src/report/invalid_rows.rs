//! Rows a source refused, told to the operator without flooding them: the first few as WARN
//! lines, then one line saying the rest are only counted (1 % bad rows of 30 M would otherwise
//! be 300 k log lines in a cron mail); the count is in the progress line and the summary. With
//! `--invalid-csv FILE` every one is written there as `line`, `field`, `reason` — never the
//! value itself, which may be personal data (a resident registration number in the wrong
//! column).

use std::io::Write;

use super::output::OutputFile;
use crate::recipient::InvalidRow;

/// How many invalid rows are logged one by one.
pub const LOGGED_ROWS: u64 = 10;

/// Where a run's invalid rows go.
pub struct InvalidRows {
    source_label: String,
    seen: u64,
    file: Option<(csv::Writer<std::io::BufWriter<std::fs::File>>, OutputFile)>,
}

impl InvalidRows {
    /// `file`: `--invalid-csv`, its place already checked.
    pub fn new(source_label: &str, file: Option<OutputFile>) -> anyhow::Result<InvalidRows> {
        let file = match file {
            Some(file) => {
                let handle = file.file()?;
                let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(handle));
                writer.write_record(["line", "field", "reason"])?;
                Some((writer, file))
            }
            None => None,
        };
        Ok(InvalidRows {
            source_label: source_label.to_string(),
            seen: 0,
            file,
        })
    }

    pub fn report(&mut self, row: &InvalidRow) {
        self.seen += 1;
        if self.seen <= LOGGED_ROWS {
            tracing::warn!(
                source = %self.source_label,
                line = row.line,
                field = row.field,
                "skipped an invalid row: {row}"
            );
        }
        if self.seen == LOGGED_ROWS + 1 {
            let whither = if self.file.is_some() {
                "each is in --invalid-csv"
            } else {
                "--invalid-csv FILE lists each"
            };
            tracing::warn!(
                source = %self.source_label,
                "more invalid rows: counted, not logged one by one ({whither})"
            );
        }
        if let Some((writer, _)) = &mut self.file
            && let Err(error) = writer.write_record([&row.line.to_string(), row.field, &row.reason])
        {
            tracing::error!(
                "--invalid-csv: {error}; the rest of the invalid rows are only counted"
            );
            self.file = None;
        }
    }

    /// Puts `--invalid-csv` in place. A failure is reported, never the run's error.
    pub fn finish(self) {
        if let Some((writer, file)) = self.file {
            let result = writer
                .into_inner()
                .map_err(|error| anyhow::anyhow!("{}", error.error()))
                .and_then(|mut buffered| Ok(buffered.flush()?));
            super::output::report_failure(result.and_then(|()| file.finish(|_| Ok(()))));
        }
    }
}
