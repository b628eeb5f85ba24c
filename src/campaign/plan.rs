//! What a campaign run is asked to do, as typed values: a [`CampaignPlan`] is built once, from
//! the command line (`commands::bulk`) or directly (`demo`, tests), and holds no clap type. Its
//! [`JobPlan`] is resolved against the journal into the [`Job`] to run: a new job's parameters,
//! or those a job stored when it started (`--resume`, `--retry-failed`).

use std::path::{Path, PathBuf};

use std::time::Duration;

use jiff::Timestamp;

use crate::advert::{self, MessageKind};
use crate::config::{DatabaseUrl, Settings};
use crate::cost::Money;
use crate::error::UsageError;
use crate::job::{CampaignParams, StoredSource};
use crate::journal::{Journal, JournalError};
use crate::policy::strategy::Strategy;
use crate::recipient::AgeRange;
use crate::schedule::Clock;
use crate::source::SourceSpec;
use crate::template::{MessageTemplate, Template};

/// A campaign run, fully decided before anything is opened.
#[derive(Debug, Clone)]
pub struct CampaignPlan {
    pub job: JobPlan,
    /// Resolve and count, send nothing, record nothing.
    pub dry_run: bool,
    /// Start (and go on) inside `[schedule] quiet_hours`.
    pub ignore_quiet_hours: bool,
    /// `--no-preflight`: send without probing the providers first.
    pub no_preflight: bool,
    /// `--summary-json`: `-` for stdout instead of the table.
    pub summary_json: Option<PathBuf>,
    /// `--failed-csv`: every recipient not delivered, with the reason.
    pub failed_csv: Option<PathBuf>,
    /// `--invalid-csv`: every source row refused, with its line, field and reason.
    pub invalid_csv: Option<PathBuf>,
    /// Draw a progress bar (a terminal); otherwise a log line every 10 s.
    pub show_bar: bool,
}

impl CampaignPlan {
    /// `--join`: work the job beside its running run (SPEC section 9).
    pub fn joins(&self) -> bool {
        matches!(self.job, JobPlan::Resume { join: true, .. })
    }
}

/// Which job the run works on.
#[derive(Debug, Clone)]
pub enum JobPlan {
    /// A new job with these parameters.
    New {
        /// `None`: generated from the start time.
        job_id: Option<String>,
        source: SourceChoice,
        ages: AgeRange,
        message: String,
        kind: MessageKind,
        options: JobOptions,
    },
    /// `--resume`: a job's stored parameters. `None` (or empty): the newest job not done.
    Resume {
        job_id: Option<String>,
        /// `--resend-uncertain`: uncertain recipients go back in the queue.
        resend_uncertain: bool,
        /// `--join`: work the job beside its running run (SPEC section 9).
        join: bool,
        /// `--max-cost`: a new budget for the job (a larger one lets a job stopped by its
        /// budget go on).
        max_cost: Option<Money>,
    },
    /// `--retry-failed`: a new job for the recipients `original` recorded `failed`, with its
    /// source and message.
    RetryFailed {
        original: String,
        job_id: Option<String>,
        options: JobOptions,
    },
}

/// Where a new job's recipients come from.
#[derive(Debug, Clone)]
pub enum SourceChoice {
    Csv(PathBuf),
    Database { url: DatabaseUrl, query: String },
}

/// A job's own choices; `None` takes the config's (or, for a retry, the original job's).
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    pub strategy: Option<Strategy>,
    pub concurrency: Option<usize>,
    pub max_failure_rate: Option<f64>,
    pub max_cost: Option<Money>,
    pub deadline: Option<Deadline>,
}

/// `--valid-until` or `--valid-for`, as given.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    At(Timestamp),
    /// After this long from the job's creation.
    After(Duration),
}

impl Deadline {
    fn from(self, created: Timestamp) -> Timestamp {
        match self {
            Deadline::At(at) => at,
            Deadline::After(valid_for) => crate::schedule::deadline_after(created, valid_for),
        }
    }
}

/// The job a run works on, resolved against the journal.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub params: CampaignParams,
    /// The database URL as given, password included (the journal stores it redacted).
    pub db_url: Option<DatabaseUrl>,
    /// Not in the journal yet: the run creates it.
    pub is_new: bool,
    /// A resume gave a new `--max-cost`: stored with the job when the run starts.
    pub budget_changed: bool,
    pub resend_uncertain: bool,
}

impl JobPlan {
    /// The job to run, or `None` for a `--resume` with nothing left to resume.
    pub async fn resolve(
        self,
        settings: &Settings,
        journal: &mut Journal,
        clock: Clock,
    ) -> anyhow::Result<Option<Job>> {
        let job_id = |given: Option<String>| -> Result<String, UsageError> {
            let id = given.unwrap_or_else(|| new_job_id(settings, clock));
            if id.is_empty() {
                return Err(UsageError("--job-id must not be empty".into()));
            }
            Ok(id)
        };
        Ok(Some(match self {
            JobPlan::Resume {
                job_id,
                resend_uncertain,
                max_cost,
                join: _,
            } => {
                let id = match job_id.filter(|id| !id.is_empty()) {
                    Some(id) => id,
                    // `--resume` alone: the newest job not done, for cron lines that continue.
                    None => match journal.latest_unfinished().await? {
                        Some(id) => id,
                        None => return Ok(None),
                    },
                };
                let mut params = journal.params(&id).await?;
                let budget_changed = max_cost.is_some_and(|new| params.max_cost != Some(new));
                params.max_cost = max_cost.or(params.max_cost);
                Job {
                    id,
                    params,
                    db_url: None,
                    is_new: false,
                    budget_changed,
                    resend_uncertain,
                }
            }
            JobPlan::RetryFailed {
                original,
                job_id: id,
                options,
            } => {
                let id = job_id(id)?;
                let mut params = journal.params(&original).await?;
                params.retry_of = Some(original);
                params.strategy = options.strategy.unwrap_or(params.strategy);
                params.concurrency = options.concurrency.unwrap_or(params.concurrency);
                params.max_failure_rate = options.max_failure_rate.or(params.max_failure_rate);
                params.max_cost = options.max_cost.or(settings.bulk.max_cost);
                if let Some(deadline) = options.deadline {
                    params.deadline = Some(deadline.from(clock.now()));
                }
                Job {
                    id,
                    params,
                    db_url: None,
                    is_new: true,
                    budget_changed: false,
                    resend_uncertain: false,
                }
            }
            JobPlan::New {
                job_id: id,
                source,
                ages,
                message,
                kind,
                options,
            } => {
                let id = job_id(id)?;
                let (source, db_url) = match source {
                    SourceChoice::Csv(path) => (stored_csv(&path), None),
                    SourceChoice::Database { url, query } => (
                        StoredSource::Database {
                            url: url.to_string(),
                            query,
                        },
                        Some(url),
                    ),
                };
                let params = CampaignParams {
                    source,
                    ages,
                    date: clock.now_in(&settings.timezone).date(),
                    message,
                    header: settings.message.header.as_ref().map(Template::to_string),
                    strategy: options.strategy.unwrap_or(settings.routing.strategy),
                    concurrency: options.concurrency.unwrap_or(settings.bulk.concurrency),
                    max_failure_rate: options.max_failure_rate,
                    retry_of: None,
                    kind,
                    frame: match kind {
                        MessageKind::Ad => {
                            Some(settings.message.ad_frame().map_err(UsageError)?.clone())
                        }
                        MessageKind::Info => None,
                    },
                    deadline: options.deadline.map(|deadline| deadline.from(clock.now())),
                    max_cost: options.max_cost.or(settings.bulk.max_cost),
                };
                Job {
                    id,
                    params,
                    db_url,
                    is_new: true,
                    budget_changed: false,
                    resend_uncertain: false,
                }
            }
        }))
    }
}

impl Job {
    /// The job's message: its header and body templates, and an ad's frame. A header or body
    /// that starts with an ad marker is refused, for any kind (SPEC section 10).
    pub fn template(&self) -> Result<MessageTemplate, UsageError> {
        let body = Template::parse(&self.params.message)
            .map_err(|e| UsageError(format!("the message: {e}")))?;
        advert::check_unmarked("the message", &self.params.message).map_err(UsageError)?;
        let header = self
            .params
            .header
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| UsageError(format!("[message] header: {e}")))?;
        if let Some(header) = &self.params.header {
            advert::check_unmarked("[message] header", header).map_err(UsageError)?;
        }
        let frame = match (self.params.kind, &self.params.frame) {
            (MessageKind::Ad, None) => {
                return Err(UsageError(format!(
                    "job {} is an ad stored without its sender and opt-out line",
                    self.id
                )));
            }
            (_, frame) => frame.clone(),
        };
        Ok(MessageTemplate {
            header,
            body,
            frame,
        })
    }

    /// The source to read. A stored database URL had its password redacted; the URL given
    /// for a new job, or the config's `[source] database` when it names the same database,
    /// supplies it.
    pub fn source_spec(&self, settings: &Settings) -> Result<SourceSpec, JournalError> {
        Ok(match &self.params.source {
            StoredSource::Csv { path } => SourceSpec::Csv(path.clone()),
            StoredSource::Database { url, query } => {
                let url = match &self.db_url {
                    Some(given) => given.clone(),
                    None => match &settings.source.database {
                        Some(configured) if configured.to_string() == *url => configured.clone(),
                        _ => DatabaseUrl::parse(url.clone()).map_err(|message| {
                            JournalError::BadParams {
                                job: self.id.clone(),
                                message,
                            }
                        })?,
                    },
                };
                SourceSpec::Database {
                    url,
                    query: query.clone(),
                }
            }
        })
    }
}

/// A CSV path as stored: absolute, so a resume from another directory reads the same file.
fn stored_csv(path: &Path) -> StoredSource {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    StoredSource::Csv { path }
}

/// `20261124-201500-3fa2`: sortable by start time, unique enough for one state_dir.
fn new_job_id(settings: &Settings, clock: Clock) -> String {
    let now = clock.now_in(&settings.timezone);
    format!(
        "{}-{:04x}",
        now.strftime("%Y%m%d-%H%M%S"),
        rand::random::<u16>()
    )
}
