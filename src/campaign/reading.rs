//! Where a run starts reading its source: at the job's resume point when the file and the
//! screening are what they were when the point was taken, at the first row otherwise
//! (`source::resume`).

use std::collections::HashSet;

use super::plan::Job;
use crate::journal::{Journal, JournalError, ResumedAt};
use crate::phone::Phone;
use crate::pipeline::{Basis, Checkpoints};
use crate::source::resume::{FileIdentity, ResumePoint, screening_fingerprint};
use crate::source::{self, AgeFilter, OpenSource, SourceError, SourceSpec};

/// How a run reads its source.
pub(super) struct Reading {
    /// The resume point the source is opened at; `None`: the first row.
    pub from: Option<ResumePoint>,
    /// What this run's own points are taken on (a CSV file): the file and the screening.
    basis: Option<(FileIdentity, String)>,
}

impl Reading {
    /// From the first row, keeping no point (a database, an unreadable file).
    const FIRST_ROW: Reading = Reading {
        from: None,
        basis: None,
    };

    /// Decides for `job`: its resume point if one fits, else the first row — saying why when
    /// the job has a point that does not fit.
    pub(super) async fn decide(
        journal: &mut Journal,
        job: &Job,
        spec: &SourceSpec,
        suppression: &HashSet<Phone>,
        consent_column: Option<&str>,
    ) -> Result<Reading, JournalError> {
        // A database has no points; a file that cannot be read fails when it is opened, with
        // the error that says so.
        let SourceSpec::Csv(path) = spec else {
            return Ok(Reading::FIRST_ROW);
        };
        let Ok(file) = FileIdentity::of(path) else {
            return Ok(Reading::FIRST_ROW);
        };
        let screening = screening_fingerprint(suppression, consent_column);
        let point = if job.is_new {
            None
        } else {
            journal.resume_point(&job.id).await?
        };
        let from = match point {
            // Uncertain recipients before the point go back in the queue: all rows are read.
            Some(_) if job.resend_uncertain => {
                tracing::info!(job_id = %job.id, source = %spec, "--resend-uncertain: reading the source from its first row");
                None
            }
            Some(point) => match point.fits(path, &file, &screening) {
                Ok(()) => {
                    tracing::info!(job_id = %job.id, source = %spec, line = point.start.line, "resuming the source at the first row not finished");
                    Some(point)
                }
                Err(misfit) => {
                    tracing::info!(job_id = %job.id, source = %spec, "reading the source from its first row: {misfit}");
                    None
                }
            },
            None => None,
        };
        Ok(Reading {
            from,
            basis: Some((file, screening)),
        })
    }

    /// Opens the source where the run starts reading it.
    pub(super) async fn open(
        &self,
        spec: &SourceSpec,
        ages: AgeFilter,
    ) -> Result<OpenSource, SourceError> {
        source::open_from(spec, ages, self.from.as_ref().map(|p| p.start)).await
    }

    /// Readies the journal for run `run`: admission knows the rows before the point are read,
    /// or a run from the first row forgets the job's old point (`record`: not for a dry run,
    /// which writes nothing). Returns the keeper of this run's points.
    pub(super) async fn begin(
        &self,
        journal: &mut Journal,
        job_id: &str,
        run: u32,
        record: bool,
    ) -> Result<Option<Checkpoints>, JournalError> {
        match &self.from {
            Some(point) => journal.admit_from(ResumedAt {
                line: point.start.line,
                base_run: point.base_run,
            }),
            None if record => journal.forget_resume_point(job_id).await?,
            None => {}
        }
        Ok(self.basis.clone().map(|(file, screening)| {
            Checkpoints::new(Basis {
                file,
                screening,
                base_run: self.from.as_ref().map_or(run, |point| point.base_run),
            })
        }))
    }
}
