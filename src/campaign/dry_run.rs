//! `bulk --dry-run`: the campaign's recipients resolved and validated exactly as a run would —
//! the same admission loop ([`crate::pipeline::admit_all`]: source, age filter, suppression,
//! de-duplication through a journal) — then counts and a few rendered samples on stdout. No
//! request of any kind is made and no job is recorded. With `--resume` (or `--retry-failed`)
//! the counts are those of the run it rehearses: who that run would send to.

use std::io::Write;
use std::sync::Arc;

use super::Prepared;
use crate::advert::{AD_NIGHT, MessageKind};
use crate::config::Settings;
use crate::cost::Money;
use crate::delivery::Pricing;
use crate::error::ExitStatus;
use crate::job::Admission;
use crate::journal::{Batch, Candidate, JournalError, RunStart};
use crate::pipeline::{AdmissionSink, ReadStart, Screening, admit_all};
use crate::provider::ProviderKind;
use crate::recipient::Recipient;
use crate::report::invalid_rows::InvalidRows;
use crate::report::printable;
use crate::schedule::Clock;
use crate::sms_length::SmsClass;
use crate::template::MessageTemplate;

/// How many rendered messages the dry run shows.
const SAMPLES: usize = 3;

/// How many recipients are admitted to the in-memory journal at a time.
const CHUNK: usize = 512;

/// Admits into one transaction of the in-memory journal; counts the eligible and keeps the
/// first few rendered messages.
struct DryRun<'j> {
    batch: Batch<'j>,
    /// `--retry-failed`: only the original job's failed recipients are admitted.
    retry_of: Option<&'j str>,
    template: &'j MessageTemplate,
    eligible: u64,
    samples: Vec<(u64, String, String)>,
    error: Option<JournalError>,
    /// What the eligible messages would cost, and their SMS sizes.
    costs: Costs,
}

/// The dry run's economics (SPEC section 10): every eligible message priced on the primary
/// and on the fallback, and counted by its SMS size as if it went by SMS.
struct Costs {
    pricing: Pricing,
    primary: ProviderKind,
    fallback: Option<ProviderKind>,
    all_primary: Money,
    all_fallback: Money,
    sms_short: u64,
    sms_long: u64,
    /// Not representable in EUC-KR: could not go by SMS.
    sms_impossible: u64,
}

impl Costs {
    fn add(&mut self, text: &str) {
        let price = self.pricing.of(text);
        self.all_primary = self.all_primary.saturating_add(price.on(self.primary));
        if let Some(fallback) = self.fallback {
            self.all_fallback = self.all_fallback.saturating_add(price.on(fallback));
        }
        match price.sms_class {
            Some(SmsClass::Short) => self.sms_short += 1,
            Some(SmsClass::Long) => self.sms_long += 1,
            None => self.sms_impossible += 1,
        }
    }
}

impl AdmissionSink for DryRun<'_> {
    async fn admit(&mut self, candidates: Vec<Candidate>) -> Option<Vec<Admission>> {
        match self.batch.admit(&candidates, self.retry_of).await {
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
        let text = self.template.render(|field| recipient.field(field));
        self.costs.add(&text);
        if self.samples.len() < SAMPLES {
            self.samples
                .push((recipient.line, recipient.phone.masked(), text));
        }
    }
}

/// The dry run of a prepared campaign. A new job is admitted into a journal in memory; a
/// resume or a retry into the real journal, inside one transaction that is never committed,
/// so it counts what that run would send and leaves no trace.
pub(super) async fn run(
    prepared: Prepared,
    settings: &Settings,
    clock: Clock,
) -> anyhow::Result<ExitStatus> {
    let Prepared {
        lock: _lock,
        role: _,
        state: _,
        mut journal,
        job,
        spec,
        reading,
        source,
        template,
        suppression,
        consent,
        outputs,
    } = prepared;
    // A dry run is never a joined run (`--join --dry-run` is refused): it reads the source.
    let (Some(reading), Some(mut source)) = (reading, source) else {
        unreachable!("a dry run reads its source")
    };
    let params = &job.params;
    let run = if journal.is_in_memory() {
        journal.create_job(&job.id, params).await?;
        journal
            .begin_run(&job.id, false, RunStart::default())
            .await?
    } else if job.is_new {
        1 // a retry's new job: not created, its first run rehearsed
    } else {
        journal.next_run(&job.id).await?
    };
    let label = spec.to_string();
    // As the run would read the source; nothing recorded.
    reading.begin(&mut journal, &job.id, run, false).await?;
    let mut batch = journal.batch(&job.id, run).await?;
    if !job.is_new {
        // The lock is held: rows in flight are a killed run's, as the resume would find them.
        batch.resolve_in_flight().await?;
    }
    if job.resend_uncertain {
        batch.requeue_uncertain().await?;
    }
    let mut dry_run = DryRun {
        batch,
        retry_of: params.retry_of.as_deref(),
        template: &template,
        eligible: 0,
        samples: Vec::new(),
        error: None,
        costs: Costs {
            pricing: Pricing::new(&settings.providers),
            primary: settings.routing.primary,
            fallback: settings.routing.fallback,
            all_primary: Money::ZERO,
            all_fallback: Money::ZERO,
            sms_short: 0,
            sms_long: 0,
            sms_impossible: 0,
        },
    };
    let screening = Screening {
        suppression: &suppression,
        consent,
        batch_size: CHUNK,
        // Nothing a dry run admits is kept.
        fields: Arc::from([]),
    };
    let mut invalid_rows = InvalidRows::new(&label, outputs.invalid_csv)?;
    let start = ReadStart::at(reading.from.as_ref(), None);
    let counts = admit_all(
        &mut source,
        &screening,
        start,
        &mut invalid_rows,
        &mut dry_run,
    )
    .await?;
    invalid_rows.finish();
    if let Some(error) = dry_run.error {
        return Err(error.into());
    }
    // Dropped without a commit: nothing the dry run admitted stays.
    drop(dry_run.batch);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Dry run, nothing sent: {spec}, ages {} on {}{}",
        params.ages,
        params.date,
        if job.is_new {
            String::new()
        } else {
            format!(", resuming job {}", job.id)
        }
    )?;
    for (label, value) in [
        ("total read", counts.total),
        ("invalid", counts.invalid),
        ("duplicate", counts.duplicate),
        ("suppressed", counts.suppressed),
    ] {
        writeln!(out, "  {label:<12} {value:>10}")?;
    }
    for (reason, n) in counts.suppressed_by_reason() {
        if n > 0 {
            writeln!(out, "    {reason:<16} {n:>6}")?;
        }
    }
    writeln!(out, "  {:<12} {:>10}", "eligible", dry_run.eligible)?;
    let costs = &dry_run.costs;
    writeln!(
        out,
        "  {:<12} {:>10}  (as if every eligible message went by SMS)",
        "sms short", costs.sms_short
    )?;
    writeln!(out, "  {:<12} {:>10}", "sms long", costs.sms_long)?;
    if costs.sms_impossible > 0 {
        writeln!(
            out,
            "  {:<12} {:>10}  (not representable in EUC-KR: cannot go by SMS)",
            "no sms", costs.sms_impossible
        )?;
    }
    let currency = &settings.message.currency;
    let amount = |kind: ProviderKind, amount: Money| {
        if costs.pricing.is_priced(kind) {
            format!("{amount} {currency}")
        } else {
            "unpriced".to_string()
        }
    };
    writeln!(
        out,
        "  {:<12} {:>10}  if all go by {}",
        "cost",
        amount(costs.primary, costs.all_primary),
        costs.primary
    )?;
    if let Some(fallback) = costs.fallback {
        writeln!(
            out,
            "  {:<12} {:>10}  if all fall back to {fallback}",
            "",
            amount(fallback, costs.all_fallback)
        )?;
    }
    if let Some(budget) = params.max_cost {
        writeln!(
            out,
            "  {:<12} {:>10}",
            "max cost",
            format!("{budget} {currency}")
        )?;
        if costs.all_primary > budget {
            writeln!(
                out,
                "Note: this costs more than --max-cost even if all go by {}: a run would stop at the budget.",
                costs.primary
            )?;
        }
    }
    if let Some(deadline) = params.deadline {
        writeln!(out, "  {:<12} {deadline}", "valid until")?;
        if clock.now() >= deadline {
            writeln!(
                out,
                "Note: the deadline has passed; a run would send nothing (EXPIRED)."
            )?;
        }
    }
    if params.kind == MessageKind::Ad && AD_NIGHT.contains(clock.now_in(&settings.timezone).time())
    {
        writeln!(
            out,
            "Note: it is night ({AD_NIGHT} in {}); a real run of this ad would pause until 08:00.",
            settings.timezone_name
        )?;
    }
    for (line, phone, text) in dry_run.samples {
        writeln!(out, "Sample (line {line}, {phone}):")?;
        // Names and columns come from the source: shown with control characters escaped.
        for text_line in printable(&text, true).lines() {
            writeln!(out, "  | {text_line}")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
