//! The files a campaign writes at its end (`--summary-json`, `--failed-csv`) and as it reads
//! its source (`--invalid-csv`), each made at the start so that a path that cannot be written
//! stops the campaign before its first request.

use super::CampaignPlan;
use crate::error::UsageError;
use crate::report::output::{OutputFile, SummaryJson};

/// The files the run writes at its end, their places checked before anything is sent.
#[derive(Debug, Default)]
pub(super) struct Outputs {
    pub(super) summary_json: Option<SummaryJson>,
    pub(super) failed_csv: Option<OutputFile>,
    /// Written as the source is read, by a dry run too.
    pub(super) invalid_csv: Option<OutputFile>,
}

impl Outputs {
    pub(super) fn create(plan: &CampaignPlan) -> Result<Outputs, UsageError> {
        // Two outputs in one file would overwrite each other.
        let named = [
            ("--summary-json", plan.summary_json.as_deref()),
            ("--failed-csv", plan.failed_csv.as_deref()),
            ("--invalid-csv", plan.invalid_csv.as_deref()),
        ];
        let files: Vec<(&str, std::path::PathBuf)> = named
            .iter()
            .filter_map(|(flag, path)| {
                let path = path.filter(|p| *p != std::path::Path::new("-"))?;
                Some((
                    *flag,
                    std::path::absolute(path).unwrap_or_else(|_| path.into()),
                ))
            })
            .collect();
        for (index, (flag, path)) in files.iter().enumerate() {
            if let Some((other, _)) = files[..index].iter().find(|(_, p)| p == path) {
                return Err(UsageError(format!(
                    "{other} and {flag} name the same file {}: give each its own",
                    path.display()
                )));
            }
        }
        let file = |flag, path: Option<&std::path::Path>| {
            path.map(|path| OutputFile::create(flag, path))
                .transpose()
                .map_err(UsageError)
        };
        let invalid_csv = file("--invalid-csv", plan.invalid_csv.as_deref())?;
        if plan.dry_run {
            return Ok(Outputs {
                invalid_csv,
                ..Outputs::default()
            });
        }
        let summary_json = match plan.summary_json.as_deref() {
            Some(path) if path == std::path::Path::new("-") => Some(SummaryJson::Stdout),
            path => file("--summary-json", path)?.map(SummaryJson::File),
        };
        let failed_csv = file("--failed-csv", plan.failed_csv.as_deref())?;
        Ok(Outputs {
            summary_json,
            failed_csv,
            invalid_csv,
        })
    }
}
