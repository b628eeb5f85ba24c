//! Why a campaign stops before its source is done, decided in one place.
//!
//! Every cause — a signal, quiet hours or an ad's night, the failure rate, the budget, the
//! deadline, a spent quota, every provider unusable, an error of the source or the journal —
//! goes through one [`Stopper`]: the first cause wins and is the one recorded, later ones are
//! ignored, and the one cancellation token the pipeline watches is cancelled once. The job's
//! status and the command's exit code are each one function of the cause ([`job_status`],
//! [`exit_status`]), so no later step rebuilds the reason from flags.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::cost::Money;
use crate::error::ExitStatus;
use crate::job::JobStatus;

/// Why a run stopped taking recipients.
#[derive(Debug, Clone, PartialEq)]
pub enum StopCause {
    /// Ctrl-C / SIGTERM: `INTERRUPTED`, exit 130.
    Signal,
    /// Quiet hours began: `PAUSED`, exit 75.
    QuietHours,
    /// More than `--max-failure-rate` (`limit`) of the attempted recipients failed:
    /// `ABORTED`, exit 3.
    FailureRate {
        failed: u64,
        attempted: u64,
        limit: f64,
    },
    /// Every channel stayed unusable (circuits open, credentials refused) for longer than
    /// `all_open_wait`; the reason says which and why. `INTERRUPTED`, exit 1.
    ProvidersUnusable(String),
    /// The source could not be read to its end. `INTERRUPTED`, exit 1 (the error is reported).
    Source,
    /// The journal refused a write: nothing more may be sent. `INTERRUPTED`, exit 1.
    Journal,
    /// Every credential a send could use is spent for longer than `[bulk] max_wait` (a day
    /// window): `PAUSED`, exit 75; the text is when the quota frees (RFC 3339).
    QuotaExhausted(String),
    /// An ad reached the night (21:00–08:00, SPEC section 10): `PAUSED`, exit 75.
    AdNight,
    /// The next send would have made the job's cost pass `--max-cost`: `ABORTED`, exit 3,
    /// resumable with a larger budget.
    Budget { limit: Money, spent: Money },
    /// The job's deadline passed: `EXPIRED`, exit 3; nothing more is ever sent.
    Expired,
}

impl StopCause {
    /// Tells the operator why the run stops: a warning for what the operator or the schedule
    /// asked, an error for what went wrong.
    fn announce(&self) {
        match self {
            StopCause::Signal => {
                tracing::warn!(
                    "stopping: no new recipients; in-flight sends get the shutdown grace"
                );
            }
            StopCause::QuietHours => {
                tracing::warn!(
                    "quiet hours begin: pausing; in-flight sends get the shutdown grace"
                );
            }
            StopCause::FailureRate {
                failed,
                attempted,
                limit,
            } => tracing::error!(
                failed,
                attempted,
                "aborting the campaign: {:.1} % of attempted recipients failed, above --max-failure-rate {limit}",
                *failed as f64 * 100.0 / (*attempted).max(1) as f64
            ),
            StopCause::ProvidersUnusable(reason) => {
                tracing::error!("stopping the campaign: {reason}; `--resume` continues it");
            }
            // The error itself is reported where the command ends.
            StopCause::Source => {
                tracing::warn!("stopping: the source failed; nothing more is sent")
            }
            StopCause::Journal => {
                tracing::warn!("stopping: the journal failed; nothing more is sent");
            }
            StopCause::QuotaExhausted(until) => {
                tracing::warn!(
                    "quota exhausted until {until}: pausing; `--resume` continues the campaign"
                );
            }
            StopCause::AdNight => tracing::warn!(
                "21:00: ads are not sent at night; pausing until `--resume` after 08:00"
            ),
            StopCause::Budget { limit, spent } => tracing::warn!(
                "stopping before the next send would pass --max-cost {limit} (spent {spent}); \
                 `--resume JOB --max-cost AMOUNT` with a larger amount continues it"
            ),
            StopCause::Expired => {
                tracing::warn!("the job's deadline passed: nothing more is sent")
            }
        }
    }

    /// The reason shown in the summary (`reason`), where the status alone does not say it.
    pub fn summary_reason(&self) -> Option<String> {
        match self {
            StopCause::ProvidersUnusable(reason) => Some(reason.clone()),
            StopCause::QuotaExhausted(until) => Some(format!("quota exhausted until {until}")),
            StopCause::Budget { .. } => Some("budget".to_string()),
            StopCause::AdNight => Some("ads are not sent from 21:00 to 08:00".to_string()),
            _ => None,
        }
    }
}

/// The job's status after a run that stopped for `cause` (`None`: it ran to its end).
pub fn job_status(cause: Option<&StopCause>) -> JobStatus {
    match cause {
        None => JobStatus::Done,
        Some(StopCause::QuietHours | StopCause::QuotaExhausted(_) | StopCause::AdNight) => {
            JobStatus::Paused
        }
        Some(StopCause::FailureRate { .. } | StopCause::Budget { .. }) => JobStatus::Aborted,
        Some(StopCause::Expired) => JobStatus::Expired,
        Some(
            StopCause::Signal
            | StopCause::ProvidersUnusable(_)
            | StopCause::Source
            | StopCause::Journal,
        ) => JobStatus::Interrupted,
    }
}

/// The exit code of a run that stopped for `cause`; `undelivered` says whether any recipient
/// of the job ended `failed` or `uncertain` (SPEC section 6).
pub fn exit_status(cause: Option<&StopCause>, undelivered: bool) -> ExitStatus {
    match cause {
        None if undelivered => ExitStatus::NotDelivered,
        None => ExitStatus::Success,
        Some(StopCause::Signal) => ExitStatus::Interrupted,
        Some(StopCause::QuietHours | StopCause::QuotaExhausted(_) | StopCause::AdNight) => {
            ExitStatus::Paused
        }
        Some(StopCause::FailureRate { .. } | StopCause::Budget { .. } | StopCause::Expired) => {
            ExitStatus::NotDelivered
        }
        Some(StopCause::ProvidersUnusable(_) | StopCause::Source | StopCause::Journal) => {
            ExitStatus::Stopped
        }
    }
}

/// The one place a run is stopped: the first cause wins.
#[derive(Clone, Debug, Default)]
pub struct Stopper {
    token: CancellationToken,
    cause: Arc<Mutex<Option<StopCause>>>,
}

impl Stopper {
    pub fn new() -> Stopper {
        Stopper::default()
    }

    /// Stops the run for `cause`, unless it already stopped; says so in the log once.
    pub fn stop(&self, cause: StopCause) {
        let mut first = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            cause.announce();
            *first = Some(cause);
            self.token.cancel();
        }
    }

    /// When `event` happens, stop for `cause` (unless the run stopped already).
    pub fn stop_on(&self, event: impl Future<Output = ()> + Send + 'static, cause: StopCause) {
        let stopper = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = event => stopper.stop(cause),
                () = stopper.token.cancelled() => {}
            }
        });
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the run is stopped.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// The cause that stopped the run, if any.
    pub fn cause(&self) -> Option<StopCause> {
        self.cause.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_cause_wins_and_decides_status_and_exit_code() {
        let stopper = Stopper::new();
        assert!(!stopper.is_stopped());
        assert_eq!(job_status(stopper.cause().as_ref()), JobStatus::Done);
        stopper.stop(StopCause::QuietHours);
        stopper.stop(StopCause::Signal);
        assert!(stopper.is_stopped());
        let cause = stopper.cause();
        assert_eq!(cause, Some(StopCause::QuietHours));
        assert_eq!(job_status(cause.as_ref()), JobStatus::Paused);
        assert_eq!(exit_status(cause.as_ref(), true), ExitStatus::Paused);
    }

    #[test]
    fn every_cause_has_its_status_and_exit_code() {
        let unusable = StopCause::ProvidersUnusable("both down".into());
        let budget = StopCause::FailureRate {
            failed: 60,
            attempted: 100,
            limit: 0.5,
        };
        let table = [
            (None, false, JobStatus::Done, 0),
            (None, true, JobStatus::Done, 3),
            (Some(StopCause::Signal), false, JobStatus::Interrupted, 130),
            (Some(StopCause::QuietHours), false, JobStatus::Paused, 75),
            (Some(budget), false, JobStatus::Aborted, 3),
            (Some(unusable), false, JobStatus::Interrupted, 1),
            (Some(StopCause::Source), false, JobStatus::Interrupted, 1),
            (Some(StopCause::Journal), false, JobStatus::Interrupted, 1),
            (Some(StopCause::AdNight), false, JobStatus::Paused, 75),
            (
                Some(StopCause::Budget {
                    limit: Money::ZERO,
                    spent: Money::ZERO,
                }),
                false,
                JobStatus::Aborted,
                3,
            ),
            (Some(StopCause::Expired), false, JobStatus::Expired, 3),
        ];
        for (cause, undelivered, status, code) in table {
            assert_eq!(job_status(cause.as_ref()), status, "{cause:?}");
            assert_eq!(
                exit_status(cause.as_ref(), undelivered).code(),
                code,
                "{cause:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_event_stops_the_run_unless_it_stopped_already() {
        let stopper = Stopper::new();
        stopper.stop_on(std::future::ready(()), StopCause::Signal);
        stopper.stopped().await;
        assert_eq!(stopper.cause(), Some(StopCause::Signal));

        let stopper = Stopper::new();
        stopper.stop(StopCause::Journal);
        stopper.stop_on(std::future::ready(()), StopCause::Signal);
        tokio::task::yield_now().await;
        assert_eq!(stopper.cause(), Some(StopCause::Journal));
    }
}
