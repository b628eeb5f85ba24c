//! `bulk --dry-run`: the campaign's recipients resolved and validated exactly as a run would
//! (same source, age filter, suppression, de-duplication through a journal, here one in
//! memory), then counts and a few rendered samples on stdout. No request of any kind is made
//! and no job is recorded.

use std::collections::HashSet;
use std::io::Write;

use crate::error::ExitStatus;
use crate::job::{Admission, CampaignParams, SourceCounts};
use crate::journal::{Candidate, Journal};
use crate::phone::Phone;
use crate::pipeline::{Screened, screen};
use crate::source::{OpenSource, SourceSpec};
use crate::template::MessageTemplate;

/// How many rendered messages the dry run shows.
const SAMPLES: usize = 3;

/// How many recipients are admitted to the in-memory journal at a time.
const CHUNK: usize = 512;

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
    let mut counts = SourceCounts::default();
    let mut eligible = 0;
    let mut samples = Vec::new();
    let label = spec.to_string();
    // One transaction for the whole dry run: the journal is in memory and thrown away.
    let mut batch = journal.batch(JOB, run).await?;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut more = true;
    while more {
        match source.rows.recv().await {
            Some(row) => {
                if let Screened::Candidate(recipient) =
                    screen(row?, suppression, &mut counts, &label)
                {
                    chunk.push(*recipient);
                }
                if chunk.len() < CHUNK {
                    continue;
                }
            }
            None => more = false,
        }
        let candidates: Vec<Candidate> = chunk
            .iter()
            .map(|r| Candidate {
                phone: r.phone.clone(),
                line: r.line,
                name: r.name.clone(),
            })
            .collect();
        let admissions = batch.admit(&candidates, None).await?;
        for (recipient, admission) in chunk.drain(..).zip(admissions) {
            match admission {
                Admission::Send => {
                    eligible += 1;
                    if samples.len() < SAMPLES {
                        samples.push((
                            recipient.line,
                            recipient.phone.masked(),
                            template.render(|field| recipient.field(field)),
                        ));
                    }
                }
                Admission::Duplicate => counts.duplicate += 1,
                Admission::AlreadyDone | Admission::NotToRetry => {}
            }
        }
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
        ("eligible", eligible),
    ] {
        writeln!(out, "  {label:<12} {value:>10}")?;
    }
    for (line, phone, text) in samples {
        writeln!(out, "Sample (line {line}, {phone}):")?;
        for text_line in text.lines() {
            writeln!(out, "  | {text_line}")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
