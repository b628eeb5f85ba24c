//! What a campaign leaves behind when it ends: the summary on stdout (the table, or the JSON
//! with `--summary-json -`) and in `--summary-json FILE`, and `--failed-csv`.
//!
//! An output file is made when the run starts, as a temporary file in the target's folder
//! ([`OutputFile::create`]): a path that cannot be written is refused before the first request
//! (a campaign must not be sent and then fail on its report, and a rerun send everyone again).
//! At the end the content goes into the temporary file, which is renamed over the target: a
//! reader never sees half a file, a symlink at the target is replaced rather than followed, and
//! the file is readable by its owner only (it holds phones and names).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::summary::Summary;
use crate::job::Undelivered;

/// A file a run writes at its end, its place checked at the start.
#[derive(Debug)]
pub struct OutputFile {
    /// The flag that named it, for messages.
    flag: &'static str,
    path: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl OutputFile {
    /// Makes sure `path` can be written, by creating the temporary file it will be written
    /// through; the error says why not.
    pub fn create(flag: &'static str, path: &Path) -> Result<OutputFile, String> {
        let fail = |reason: String| format!("{flag} {}: {reason}", path.display());
        let text = path.as_os_str().to_string_lossy();
        if text == "-" {
            return Err(fail(
                "stdout is not supported for this file; name a file".into(),
            ));
        }
        if path.is_dir() || text.ends_with('/') {
            return Err(fail("names a folder; name a file".into()));
        }
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".msgsend-")
            .tempfile_in(folder)
            .map_err(|error| fail(format!("cannot be written there ({error})")))?;
        Ok(OutputFile {
            flag,
            path: path.to_path_buf(),
            temp,
        })
    }

    /// A handle on the temporary file, for content written as the run goes.
    pub fn file(&self) -> anyhow::Result<std::fs::File> {
        self.temp
            .as_file()
            .try_clone()
            .with_context(|| format!("{} {}", self.flag, self.path.display()))
    }

    /// Writes the content and puts the file in place.
    pub fn finish(
        mut self,
        write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let context = || format!("{} {}", self.flag, self.path.display());
        write(self.temp.as_file_mut()).with_context(context)?;
        self.temp.as_file().sync_all().with_context(context)?;
        self.temp
            .persist(&self.path)
            .map_err(|error| error.error)
            .with_context(context)?;
        Ok(())
    }
}

/// Where `--summary-json` goes.
#[derive(Debug)]
pub enum SummaryJson {
    /// `-`: stdout, instead of the table.
    Stdout,
    /// A file, besides the table on stdout.
    File(OutputFile),
}

/// The table on stdout, or the JSON instead (`--summary-json -`); the JSON file besides
/// (`--summary-json FILE`). A file that fails is reported and the table still printed.
pub fn write_summary(summary: &Summary, json: Option<SummaryJson>) -> anyhow::Result<()> {
    write_summary_or(summary, json, |out| summary.write_text(out))
}

/// A run that did not start: `line` instead of the table, the JSON as [`write_summary`] writes
/// it (its keys are always there).
pub fn write_summary_or_line(
    summary: &Summary,
    json: Option<SummaryJson>,
    line: &str,
) -> anyhow::Result<()> {
    write_summary_or(summary, json, |out| writeln!(out, "{line}"))
}

/// The JSON on stdout (`--summary-json -`), or `text` on stdout and the JSON in the file
/// (`--summary-json FILE`), or `text` alone.
fn write_summary_or(
    summary: &Summary,
    json: Option<SummaryJson>,
    text: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match json {
        Some(SummaryJson::Stdout) => summary.write_json(&mut stdout)?,
        Some(SummaryJson::File(file)) => {
            report_failure(file.finish(|out| Ok(summary.write_json(out)?)));
            text(&mut stdout)?;
        }
        None => text(&mut stdout)?,
    }
    stdout.flush()?;
    Ok(())
}

/// `--failed-csv`: `phone`, `name`, `reason`, `line` for every recipient not delivered. A
/// failure is reported, never turned into the run's error: the campaign was sent.
pub fn write_failed_csv(file: OutputFile, rows: &[Undelivered]) {
    report_failure(file.finish(|out| {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(["phone", "name", "reason", "line"])?;
        for row in rows {
            writer.write_record([
                row.phone.as_str(),
                &spreadsheet_safe(&row.name),
                &spreadsheet_safe(&row.reason),
                &row.line.to_string(),
            ])?;
        }
        writer.flush()?;
        Ok(())
    }));
}

pub(super) fn report_failure(result: anyhow::Result<()>) {
    if let Err(error) = result {
        tracing::error!("{error:#}; the campaign itself is recorded in the journal");
    }
}

/// A cell a spreadsheet will not evaluate: source text starting with `=`, `+`, `-`, `@`, a tab
/// or a carriage return (a formula, e.g. `=cmd|' /C calc'!A0`) gets a leading `'`, which
/// spreadsheets show as text. The CSV quoting itself is the csv crate's.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}
