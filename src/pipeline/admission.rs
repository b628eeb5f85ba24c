//! Admission: the one loop that reads a campaign's source to its end, screens every row
//! (counted into `total`, `invalid`, `suppressed`; SPEC section 7), and asks the journal to admit
//! the candidates in batches — where duplicates and what earlier runs did are caught. A run's
//! producer and `--dry-run` both go through it and differ only in their [`AdmissionSink`]: what
//! admitting means (the collector, or a transaction of their own) and what to do with each
//! answer (start a send, or count and sample).

use std::collections::HashSet;

use super::checkpoints::Checkpoints;
use crate::advert::Consent;
use crate::job::{Admission, SourceCounts};
use crate::journal::Candidate;
use crate::phone::Phone;
use crate::recipient::Recipient;
use crate::report::invalid_rows::InvalidRows;
use crate::source::resume::ResumePoint;
use crate::source::{OpenSource, SourceError, SourceRow};

/// What a source row is to a campaign before the journal is asked about it.
pub enum Screened {
    /// Valid, in the age range, not suppressed: to be admitted (or found a duplicate).
    Candidate(Box<Recipient>),
    Suppressed,
    Invalid,
    OutOfRange,
}

/// Counts a source row into `counts` (SPEC section 7's `total`, `invalid`, `suppressed`, and
/// section 10's consent reasons), reports an invalid one to `invalid_rows`, and says what is
/// left to do with it.
fn screen(
    row: SourceRow,
    screening: &Screening<'_>,
    counts: &mut SourceCounts,
    invalid_rows: &mut InvalidRows,
) -> Screened {
    counts.total += 1;
    match row {
        SourceRow::InRange(recipient) if screening.suppression.contains(&recipient.phone) => {
            counts.suppressed += 1;
            Screened::Suppressed
        }
        SourceRow::InRange(recipient) => {
            let Some(consent) = &screening.consent else {
                return Screened::Candidate(recipient);
            };
            let value = recipient.field(&consent.column).unwrap_or_default();
            match Consent::judge(value, consent.campaign_date) {
                Consent::Given => Screened::Candidate(recipient),
                Consent::None => {
                    counts.suppressed += 1;
                    counts.no_consent += 1;
                    Screened::Suppressed
                }
                Consent::Expired => {
                    counts.suppressed += 1;
                    counts.consent_expired += 1;
                    Screened::Suppressed
                }
            }
        }
        SourceRow::OutOfRange => Screened::OutOfRange,
        SourceRow::Invalid(invalid) => {
            counts.invalid += 1;
            invalid_rows.report(&invalid);
            Screened::Invalid
        }
    }
}

/// What admission does with the rows it reads.
// Only this crate implements it, and its futures are awaited in place, never spawned: no
// `Send` bound is needed (the dry run's journal transaction would not satisfy one).
#[allow(async_fn_in_trait)]
pub trait AdmissionSink {
    /// A row left out before admission (suppressed, invalid, out of the age range).
    fn screened_out(&mut self, _screened: &Screened) {}

    /// Admits these candidates to the run; the answers come in order. `None`: admission
    /// cannot go on (the journal failed, which its owner reports); reading stops.
    async fn admit(&mut self, candidates: Vec<Candidate>) -> Option<Vec<Admission>>;

    /// One admitted candidate and the journal's answer (duplicates are already counted).
    async fn admitted(&mut self, recipient: Box<Recipient>, admission: Admission);
}

/// How the rows are screened.
pub struct Screening<'a> {
    pub suppression: &'a HashSet<Phone>,
    /// An ad's consent rule; `None` for an info campaign.
    pub consent: Option<ConsentRule>,
    /// The most candidates admitted at once.
    pub batch_size: usize,
    /// The message's placeholders besides name and phone: their values are stored with each
    /// candidate, for a joined run to render from ([`Candidate::fields`]).
    pub fields: std::sync::Arc<[String]>,
}

/// The values of `fields` in `recipient`'s row, as a JSON object; `None` when the message has no
/// such placeholder.
fn stored_fields(fields: &[String], recipient: &Recipient) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let values: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|field| {
            let value = recipient.field(field).unwrap_or_default();
            (field.clone(), serde_json::Value::from(value))
        })
        .collect();
    Some(serde_json::Value::Object(values).to_string())
}

/// An ad goes only to recipients whose consent, in `column`, is under two years old on the
/// campaign's date (SPEC section 10).
#[derive(Debug, Clone)]
pub struct ConsentRule {
    pub column: String,
    pub campaign_date: jiff::civil::Date,
}

/// Where admission starts: the counts of the rows before the source's first (those an earlier
/// run finished before its resume point; zero from the file's first row), and who keeps this
/// run's resume point (a CSV file's run; `None` for a database or a dry run).
#[derive(Clone, Copy)]
pub struct ReadStart<'a> {
    pub counts: SourceCounts,
    /// Rows in the age range before the source's first.
    pub in_range: u64,
    pub checkpoints: Option<&'a Checkpoints>,
}

impl<'a> ReadStart<'a> {
    /// Reading from `point` (`None`: the first row), this run's points kept by `checkpoints`.
    pub fn at(point: Option<&ResumePoint>, checkpoints: Option<&'a Checkpoints>) -> Self {
        ReadStart {
            counts: point.map(|p| p.counts).unwrap_or_default(),
            in_range: point.map_or(0, |p| p.in_range),
            checkpoints,
        }
    }
}

/// Reads `source` to its end (or until the sink cannot admit any more), screening every row
/// and admitting candidates in batches: a batch is what has arrived, up to `batch_size`, so a
/// slow source is never waited on to fill one. Returns the source's counts.
pub async fn admit_all(
    source: &mut OpenSource,
    screening: &Screening<'_>,
    start: ReadStart<'_>,
    invalid_rows: &mut InvalidRows,
    sink: &mut impl AdmissionSink,
) -> Result<SourceCounts, SourceError> {
    let mut counts = start.counts;
    let mut in_range = start.in_range;
    while let Some(first) = source.rows.recv().await {
        let first = first?;
        let key = start
            .checkpoints
            .map(|points| points.open(first.start, counts, in_range));
        let mut batch = Vec::new();
        let mut next = Some(Ok(first));
        while let Some(row) = next.take() {
            match screen(row?.row, screening, &mut counts, invalid_rows) {
                Screened::Candidate(recipient) => {
                    in_range += 1;
                    batch.push(recipient);
                }
                other => {
                    in_range += u64::from(matches!(other, Screened::Suppressed));
                    sink.screened_out(&other);
                }
            }
            if batch.len() < screening.batch_size {
                next = source.rows.try_recv().ok();
            }
        }
        let admitted = |to_send: usize| {
            if let (Some(points), Some(key)) = (start.checkpoints, key) {
                points.admitted(key, to_send);
            }
        };
        if batch.is_empty() {
            admitted(0);
            continue;
        }
        let candidates = batch
            .iter()
            .map(|r| Candidate {
                phone: r.phone.clone(),
                line: r.line,
                name: r.name.clone(),
                fields: stored_fields(&screening.fields, r),
            })
            .collect();
        let Some(admissions) = sink.admit(candidates).await else {
            break;
        };
        // Before any of them is started: their outcomes close the batch.
        admitted(admissions.iter().filter(|a| **a == Admission::Send).count());
        for (recipient, admission) in batch.into_iter().zip(admissions) {
            if admission == Admission::Duplicate {
                counts.duplicate += 1;
            }
            sink.admitted(recipient, admission).await;
        }
    }
    Ok(counts)
}
