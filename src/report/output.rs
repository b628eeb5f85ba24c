//! What a campaign leaves behind when it ends: the summary on stdout (the table, or the JSON
//! with `--summary-json -`) and in `--summary-json FILE`, and `--failed-csv`.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use super::summary::Summary;
use crate::job::Undelivered;

/// The table on stdout; with `--summary-json -` the JSON instead, with `--summary-json FILE`
/// the JSON in the file as well.
pub fn write_summary(summary: &Summary, json: Option<&Path>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match json {
        Some(path) if path == Path::new("-") => summary.write_json(&mut stdout)?,
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("--summary-json {}", path.display()))?;
            summary.write_json(&mut file)?;
            summary.write_text(&mut stdout)?;
        }
        None => summary.write_text(&mut stdout)?,
    }
    stdout.flush()?;
    Ok(())
}

/// `--failed-csv`: `phone`, `name`, `reason`, `line` for every recipient not delivered.
pub fn write_failed_csv(path: &Path, rows: &[Undelivered]) -> anyhow::Result<()> {
    let mut writer =
        csv::Writer::from_path(path).with_context(|| format!("--failed-csv {}", path.display()))?;
    writer.write_record(["phone", "name", "reason", "line"])?;
    for row in rows {
        writer.write_record([
            row.phone.as_str(),
            &spreadsheet_safe(&row.name),
            &spreadsheet_safe(&row.reason),
            &row.line.to_string(),
        ])?;
    }
    writer
        .flush()
        .with_context(|| format!("--failed-csv {}", path.display()))?;
    Ok(())
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
