//! `bulk --dry-run`: the campaign's recipients resolved and validated exactly as a run would —
//! the same admission loop ([`crate::pipeline::admit_all`]: source, age filter, suppression,
//! de-duplication through a journal, here one in memory) — then counts and a few rendered
//! samples on stdout. No request of any kind is made and no job is recorded.

use std::collections::HashSet;
use std::io::Write;

use crate::error::ExitStatus;
use crate::job::{Admission, CampaignParams};
use crate::journal::{Batch, Candidate, Journal, JournalError};
use crate::phone::Phone;
use crate::pipeline::{AdmissionSink, Screening, admit_all};
use crate::recipient::Recipient;
use crate::source::{OpenSource, SourceSpec};
use crate::template::MessageTemplate;

/// How many rendered messages the dry run shows.
const SAMPLES: usize = 3;

/// How many recipients are admitted to the in-memory journal at a time.
const CHUNK: usize = 512;

/// Admits into one transaction of the in-memory journal; counts the eligible and keeps the
/// first few rendered messages.
struct DryRun<'j> {
    batch: Batch<'j>,
    template: &'j MessageTemplate,
    eligible: u64,
    samples: Vec<(u64, String, String)>,
    error: Option<JournalError>,
}

impl AdmissionSink for DryRun<'_> {
    async fn admit(&mut self, candidates: Vec<Candidate>) -> Option<Vec<Admission>> {
        match self.batch.admit(&candidates, None).await {
            Ok(answers) => Some(answers),
            Err(error) => {
                self.error = Some(error);
                None
            }
        }
    }

    async fn admitted(&mut self, recipient: Box<Recipient>, admission: Admission) {
        if admission != Admission::Send {
            return;
        }
        self.eligible += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push((
                recipient.line,
                recipient.phone.masked(),
                self.template.render(|field| recipient.field(field)),
            ));
        }
    }
}

pub(super) async fn run(
    params: &CampaignParams,
    template: &MessageTemplate,
    mut source: OpenSource,
    suppression: &HashSet<Phone>,
    mut journal: Journal,
    spec: &SourceSpec,
) -> anyhow::Result<ExitStatus> {
    const JOB: &str = "dry-run";
    journal.create_job(JOB, params).await?;
    let run = journal.begin_run(JOB, false).await?;
    let label = spec.to_string();
    // One transaction for the whole dry run: the journal is in memory and thrown away.
    let mut dry_run = DryRun {
        batch: journal.batch(JOB, run).await?,
        template,
        eligible: 0,
        samples: Vec::new(),
        error: None,
    };
    let screening = Screening {
        suppression,
        source_label: &label,
        batch_size: CHUNK,
    };
    let counts = admit_all(&mut source, &screening, &mut dry_run).await?;
    if let Some(error) = dry_run.error {
        return Err(error.into());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Dry run, nothing sent: {spec}, ages {} on {}",
        params.ages, params.date
    )?;
    for (label, value) in [
        ("total read", counts.total),
        ("invalid", counts.invalid),
        ("duplicate", counts.duplicate),
        ("suppressed", counts.suppressed),
        ("eligible", dry_run.eligible),
    ] {
        writeln!(out, "  {label:<12} {value:>10}")?;
    }
    for (line, phone, text) in dry_run.samples {
        writeln!(out, "Sample (line {line}, {phone}):")?;
        for text_line in text.lines() {
            writeln!(out, "  | {text_line}")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
