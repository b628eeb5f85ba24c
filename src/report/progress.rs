//! Live progress of a campaign on stderr: an indicatif bar at a terminal (done/total, rate,
//! ETA, sent/fallback/failed), and where there is no terminal (cron, a pipe) or with
//! `--no-progress`, one log line every 10 s instead. "Done" counts every in-range recipient
//! dealt with, skipped ones (duplicate, suppressed, done in an earlier run) included, so the
//! bar reaches its total. The total comes from a count pass over the source that runs beside
//! the campaign ([`Progress::set_total`]), so the first send does not wait for it; until it is
//! known the bar shows a count without a length and the log line says `?`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::job::RecipientState;

/// How often the progress line is logged when there is no bar (SPEC section 6).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// `Counts::total` before the count pass has answered.
const UNKNOWN: u64 = u64::MAX;

#[derive(Debug, Default)]
struct Counts {
    /// The in-range rows expected, or [`UNKNOWN`].
    total: AtomicU64,
    done: AtomicU64,
    sent: AtomicU64,
    fallback: AtomicU64,
    failed: AtomicU64,
    /// Source rows refused (not among `done`: they are not recipients).
    invalid: AtomicU64,
}

/// The progress display of one run. Cheap to clone; every clone updates the same display.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    counts: Arc<Counts>,
    started: Instant,
}

impl Progress {
    /// `bar`: draw a bar (only sensible at a terminal); without one, a logging task reports
    /// every 10 s until [`finish`](Self::finish).
    pub fn start(bar: bool) -> Progress {
        let bar =
            bar.then(|| {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {rate} ETA {eta} {msg}",
                )
                .expect("the template is valid")
                // indicatif's own `{per_sec}` prints four decimals; one says enough.
                .with_key("rate", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{:.1}/s", state.per_sec());
                }),
            );
                bar.enable_steady_tick(Duration::from_millis(200));
                crate::logging::set_progress_bar(Some(bar.clone()));
                bar
            });
        let progress = Progress {
            bar,
            counts: Arc::default(),
            started: Instant::now(),
        };
        progress.counts.total.store(UNKNOWN, Ordering::Relaxed);
        if progress.bar.is_none() {
            let logger = progress.clone();
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + LOG_EVERY, LOG_EVERY);
                // Stops when the last other clone is gone (the run finished).
                while Arc::strong_count(&logger.counts) > 1 {
                    ticks.tick().await;
                    if Arc::strong_count(&logger.counts) > 1 {
                        logger.log_line();
                    }
                }
            });
        }
        progress
    }

    /// The in-range rows expected, once the count pass has said.
    pub fn set_total(&self, total: u64) {
        self.counts.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            // A source may hold more in-range rows than counted (it changed meanwhile).
            bar.set_length(total.max(bar.position()));
        }
    }

    fn total(&self) -> Option<u64> {
        Some(self.counts.total.load(Ordering::Relaxed)).filter(|&total| total != UNKNOWN)
    }

    fn log_line(&self) {
        let done = self.counts.done.load(Ordering::Relaxed);
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let total = self
            .total()
            .map_or_else(|| "?".to_string(), |t| t.to_string());
        tracing::info!(
            done,
            total = %total,
            sent = self.counts.sent.load(Ordering::Relaxed),
            fallback = self.counts.fallback.load(Ordering::Relaxed),
            failed = self.counts.failed.load(Ordering::Relaxed),
            invalid = self.counts.invalid.load(Ordering::Relaxed),
            "progress: {done}/{total} done, {rate:.1}/s",
        );
    }

    /// A resumed run starts past `rows` in-range rows an earlier run finished with.
    pub fn resumed(&self, rows: u64) {
        if rows == 0 {
            return;
        }
        self.counts.done.fetch_add(rows, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }

    /// A source row refused by validation.
    pub fn invalid(&self) {
        self.counts.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// A recipient skipped without a send (duplicate, suppressed, done earlier).
    pub fn skipped(&self) {
        self.advance();
    }

    /// A recipient whose send ended in `state`.
    pub fn finished(&self, state: RecipientState) {
        let counter = match state {
            RecipientState::Sent => Some(&self.counts.sent),
            RecipientState::Fallback => Some(&self.counts.fallback),
            RecipientState::Failed => Some(&self.counts.failed),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.advance();
    }

    fn advance(&self) {
        self.counts.done.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            // A source may hold more in-range rows than counted (it changed meanwhile).
            if self.total().is_some() && bar.position() + 1 > bar.length().unwrap_or(0) {
                bar.inc_length(1);
            }
            bar.set_message(format!(
                "sent {} · fallback {} · failed {} · invalid rows {}",
                self.counts.sent.load(Ordering::Relaxed),
                self.counts.fallback.load(Ordering::Relaxed),
                self.counts.failed.load(Ordering::Relaxed),
                self.counts.invalid.load(Ordering::Relaxed)
            ));
            bar.inc(1);
        }
    }

    /// Clears the bar (the summary follows on stdout).
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::logging::set_progress_bar(None);
        }
    }
}
