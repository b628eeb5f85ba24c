//! The vocabulary of a campaign (a job): where a job and each of its recipients stand, what a
//! job was started with, and the counts a summary shows. The journal stores these words, the
//! pipeline and the reports speak them; none of them needs to know how they are stored.
//!
//! The stored words are derived (strum), not written by hand, and a word the binary does not
//! know is an error, never silently read as some other state.

use std::path::PathBuf;

use jiff::civil::Date;

use jiff::Timestamp;

use crate::advert::MessageKind;
use crate::cost::Money;
use crate::policy::strategy::Strategy;
use crate::recipient::AgeRange;
use crate::template::Frame;

/// Where a recipient of a job stands. Stored as its snake_case name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::EnumString, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum RecipientState {
    /// Admitted, no request made yet.
    Queued,
    /// A request may be on its way (recorded before it went).
    InFlight,
    /// Delivered by the primary channel.
    Sent,
    /// Delivered by the fallback channel.
    Fallback,
    /// Neither channel could deliver it.
    Failed,
    /// A request was in flight when the run stopped: not known whether it arrived.
    Uncertain,
    /// Not reached before the job's deadline; never sent.
    Expired,
}

impl RecipientState {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Where a job stands. Stored as its uppercase name (SPEC section 6 says `PAUSED`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// A run is going on, or was killed (a later run turns its in-flight rows `uncertain`).
    Running,
    /// Every admitted recipient has an outcome.
    Done,
    /// Stopped by Ctrl-C / SIGTERM, or by a runtime condition (every provider unusable, an
    /// error of the source or the journal); `--resume` continues it.
    Interrupted,
    /// Stopped at quiet hours; `--resume` continues it.
    Paused,
    /// Stopped by `--max-failure-rate`, or before a send would pass `--max-cost`; `--resume`
    /// continues it once the cause is fixed (a larger budget).
    Aborted,
    /// Its deadline (`--valid-until`, `--valid-for`) passed: nothing more is ever sent.
    Expired,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Everything `--resume` needs to run a job again without other flags (SPEC section 7).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CampaignParams {
    pub source: StoredSource,
    pub ages: AgeRange,
    /// The campaign's date: ages are judged on it in every run, so a resume on another day
    /// neither drops nor adds anyone.
    pub date: Date,
    /// The message body template.
    pub message: String,
    /// The `[message] header` template when the job started.
    pub header: Option<String>,
    pub strategy: Strategy,
    pub concurrency: usize,
    pub max_failure_rate: Option<f64>,
    /// `--retry-failed`: only the recipients this job recorded `failed`.
    pub retry_of: Option<String>,
    /// Info or ad (SPEC section 10); jobs stored before kinds existed are info.
    #[serde(default)]
    pub kind: MessageKind,
    /// An ad's first and last lines when the job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Frame>,
    /// `--valid-until` / `--valid-for`: nothing is sent after it (the job is `EXPIRED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// `--max-cost`: the most the job may spend, over all its runs (a resume may raise it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<Money>,
}

/// A job's source as stored. A database URL is stored with any password redacted: the
/// journal is not a place for secrets; a resume takes the password from the config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredSource {
    Csv { path: PathBuf },
    Database { url: String, query: String },
}

/// Counts of a job's recipients by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub queued: u64,
    pub sent: u64,
    pub fallback: u64,
    pub failed: u64,
    /// `uncertain`, and `in_flight` left by a run that was killed.
    pub uncertain: u64,
    /// Not reached before the job's deadline.
    pub expired: u64,
}

impl StateCounts {
    pub fn eligible(&self) -> u64 {
        self.queued + self.sent + self.fallback + self.failed + self.uncertain + self.expired
    }

    /// Adds `n` recipients in `state`.
    pub fn add(&mut self, state: RecipientState, n: u64) {
        match state {
            RecipientState::Queued => self.queued += n,
            RecipientState::Sent => self.sent += n,
            RecipientState::Fallback => self.fallback += n,
            RecipientState::Failed => self.failed += n,
            RecipientState::InFlight | RecipientState::Uncertain => self.uncertain += n,
            RecipientState::Expired => self.expired += n,
        }
    }
}

/// What the source side of the latest run counted (SPEC section 7's summary counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceCounts {
    pub total: u64,
    pub invalid: u64,
    pub duplicate: u64,
    /// Every suppressed row: the suppression list's, and an ad's without consent.
    pub suppressed: u64,
    /// Of `suppressed`: an ad's recipients without a usable consent date (SPEC section 10).
    pub no_consent: u64,
    /// Of `suppressed`: an ad's recipients whose consent is two years old or more.
    pub consent_expired: u64,
}

impl SourceCounts {
    /// `suppressed` by reason: `suppression_list`, `no_consent`, `consent_expired`.
    pub fn suppressed_by_reason(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let listed = self
            .suppressed
            .saturating_sub(self.no_consent)
            .saturating_sub(self.consent_expired);
        [
            ("suppression_list", listed),
            ("no_consent", self.no_consent),
            ("consent_expired", self.consent_expired),
        ]
        .into_iter()
        .collect()
    }
}

/// What a job spent (SPEC section 10): per channel, over every run; and how many messages went
/// by SMS as short and as long ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spending {
    pub kakaotalk: Money,
    pub sms: Money,
    pub sms_short: u64,
    pub sms_long: u64,
}

impl Spending {
    pub fn total(&self) -> Money {
        self.kakaotalk.saturating_add(self.sms)
    }
}

/// One job as the journal holds it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    pub created_at: String,
    pub updated_at: String,
    pub params: CampaignParams,
    pub runs: u32,
    pub source: SourceCounts,
    pub retries: u64,
    pub duration_s: f64,
    pub states: StateCounts,
    pub spending: Spending,
}

/// What admitting a recipient to a run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// To be sent in this run.
    Send,
    /// The phone was already seen in this run.
    Duplicate,
    /// Recorded by an earlier run and not to be sent again (sent, fallback, failed,
    /// uncertain without `--resend-uncertain`).
    AlreadyDone,
    /// `--retry-failed`: the original job did not record this phone `failed`.
    NotToRetry,
}

/// A recipient not delivered (failed or uncertain), for `--failed-csv`.
#[derive(Debug, Clone)]
pub struct Undelivered {
    pub phone: String,
    pub name: String,
    pub reason: String,
    pub line: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_words_round_trip_and_an_unknown_word_is_an_error() {
        for state in [
            RecipientState::Queued,
            RecipientState::InFlight,
            RecipientState::Sent,
            RecipientState::Fallback,
            RecipientState::Failed,
            RecipientState::Uncertain,
            RecipientState::Expired,
        ] {
            assert_eq!(state.name().parse::<RecipientState>(), Ok(state));
        }
        assert_eq!(RecipientState::InFlight.name(), "in_flight");
        assert!("delivered".parse::<RecipientState>().is_err());
        for status in [
            JobStatus::Running,
            JobStatus::Done,
            JobStatus::Interrupted,
            JobStatus::Paused,
            JobStatus::Aborted,
            JobStatus::Expired,
        ] {
            assert_eq!(status.name().parse::<JobStatus>(), Ok(status));
        }
        assert_eq!(JobStatus::Paused.to_string(), "PAUSED");
        assert!("FINISHED".parse::<JobStatus>().is_err());
    }
}
