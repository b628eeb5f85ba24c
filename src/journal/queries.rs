//! The journal's job-level reads and writes: creating a job, beginning and ending its runs,
//! its status, its parameters, and the counts and lists the reports need. Per-recipient writes
//! go in groups through [`Batch`](super::Batch).

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Connection as _;

use super::schema::now;
use super::{Backend, Journal, JournalError, RunInfo, RunRecord, RunStart, parse_word, to_i64};
use crate::cost::Money;
use crate::job::{
    CampaignParams, JobRecord, JobStatus, RecipientState, SourceCounts, Spending, StateCounts,
    Undelivered,
};
use crate::phone::Phone;
use crate::source::resume::ResumePoint;
use crate::state_db::{LOCK_SPACE, job_lock_key, lock_key_as_oid};

impl Journal {
    /// Whether the journal lives in PostgreSQL, for the few statements whose texts differ.
    fn on_postgres(&self) -> bool {
        matches!(self.connection, Backend::Postgres(_))
    }

    /// Records a new job; fails when the id is taken.
    pub async fn create_job(
        &mut self,
        id: &str,
        params: &CampaignParams,
    ) -> Result<(), JournalError> {
        let params = serde_json::to_string(params).expect("params serialize");
        let at = now();
        let result = either!(&mut self.connection, |c| {
            sqlx::query(
            "INSERT INTO jobs (id, status, created_at, updated_at, params) VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(id)
        .bind(JobStatus::Running.name())
        .bind(&at)
        .bind(&params)
        .execute(c)
        .await
        .map(drop)
        });
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(JournalError::JobExists(id.to_string()))
            }
            other => other.map_err(self.fail()),
        }
    }

    /// Starts a run of a job on this host and process: counts the run, records it (`runs`),
    /// marks the job running, and ends what dead runs left (see [`reap`]) — rows left
    /// `in_flight` by a killed run become `uncertain` — and with `resend_uncertain`, every
    /// uncertain row goes back to `queued`. Returns the run's number.
    pub async fn begin_run(
        &mut self,
        id: &str,
        resend_uncertain: bool,
        start: RunStart,
    ) -> Result<u32, JournalError> {
        let fail = self.fail();
        let at = now();
        let me = RunInfo::this_process();
        let live = self.live_run_sql(id);
        let run: i64 = either!(&mut self.connection, |c| async {
            let mut tx = c.begin().await?;
            // Dead runs first: on PostgreSQL marking one `KILLED` waits for a run that lost its
            // lock to finish recording a group in flight, and fences off its later ones
            // (`Batch::start`), so the rows resolved here are all there will be.
            reap(&mut *tx, id, &live).await?;
            if resend_uncertain {
                sqlx::query(
                    "UPDATE recipients SET state = 'queued' WHERE job_id = $1 AND state = 'uncertain'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            let run: i64 = sqlx::query_scalar(
                "UPDATE jobs SET runs = runs + 1, status = 'RUNNING', updated_at = $2 WHERE id = $1 RETURNING runs",
            )
            .bind(id)
            .bind(&at)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO runs (job_id, run, host, pid, started, status, joined, backend_pid) \
                 VALUES ($1, $2, $3, $4, $5, 'RUNNING', $6, $7)",
            )
            .bind(id)
            .bind(run)
            .bind(&me.host)
            .bind(i64::from(me.pid))
            .bind(&at)
            .bind(start.joined)
            .bind(start.backend_pid.map(i64::from))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(run)
        }
        .await)
        .map_err(&fail)?;
        Ok(u32::try_from(run).unwrap_or(u32::MAX))
    }

    /// A transaction for the end of run `run` of the job, which fails on PostgreSQL when the run
    /// is no longer `RUNNING` ([`Batch::fence`](super::Batch::fence)): a run that lost the job
    /// writes nothing over the run that took it.
    async fn fenced<'j>(
        &'j mut self,
        id: &'j str,
        run: u32,
    ) -> Result<super::Batch<'j>, JournalError> {
        let mut batch = self.batch(id, run).await?;
        batch.fence().await?;
        Ok(batch)
    }

    fn live_run_sql(&self, job: &str) -> String {
        live_run_sql(self.on_postgres(), job)
    }

    /// The number the job's next run would get, without starting it (a dry run).
    pub async fn next_run(&mut self, id: &str) -> Result<u32, JournalError> {
        let runs: i64 = either!(&mut self.connection, |c| sqlx::query_scalar(
            "SELECT runs FROM jobs WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(c)
        .await)
        .map_err(self.fail())?
        .ok_or_else(|| JournalError::UnknownJob(id.to_string()))?;
        Ok(u32::try_from(runs.saturating_add(1)).unwrap_or(u32::MAX))
    }

    /// Ends a run: its own record, its retries and duration, and — when no other run of the
    /// job is live — the job's status: the run's own, except that `DONE` becomes `INTERRUPTED`
    /// when recipients remain queued or in flight, or when the job's leader (the last run that
    /// reads the source) did not read it to the end (killed, or its source failed).
    /// While another run is live the job stays `RUNNING`: the last run to end decides. A run
    /// that read the source (`source` given) records its counts; a joined run reads none.
    pub async fn end_run(
        &mut self,
        id: &str,
        run: u32,
        status: JobStatus,
        source: Option<SourceCounts>,
        retries: u64,
        duration: Duration,
    ) -> Result<JobStatus, JournalError> {
        let at = now();
        let live = self.live_run_sql(id);
        let others_live = format!(
            "SELECT COUNT(*) FROM runs WHERE job_id = $1 AND run != $2 AND ended IS NULL \
             AND status = 'RUNNING' AND {live}"
        );
        let postgres = self.on_postgres();
        let fail = self.fail();
        let mut batch = self.fenced(id, run).await?;
        let job_status = either!(&mut batch.tx, |tx| async {
            sqlx::query(
                "UPDATE runs SET status = $3, ended = $4, read_all = $5 WHERE job_id = $1 AND run = $2",
            )
            .bind(id)
            .bind(i64::from(run))
            .bind(status.name())
            .bind(&at)
            .bind(source.is_some())
            .execute(&mut **tx)
            .await?;
            if let Some(source) = source {
                sqlx::query(
                    "UPDATE jobs SET total = $2, invalid = $3, duplicate = $4, suppressed = $5, \
                     no_consent = $6, consent_expired = $7 WHERE id = $1",
                )
                .bind(id)
                .bind(to_i64(source.total))
                .bind(to_i64(source.invalid))
                .bind(to_i64(source.duplicate))
                .bind(to_i64(source.suppressed))
                .bind(to_i64(source.no_consent))
                .bind(to_i64(source.consent_expired))
                .execute(&mut **tx)
                .await?;
            }
            let others: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(others_live.clone()))
                .bind(id)
                .bind(i64::from(run))
                .fetch_one(&mut **tx)
                .await?;
            let job_status = if others > 0 {
                JobStatus::Running
            } else if status != JobStatus::Done || !postgres {
                // On SQLite one run works a job, and its close (`close_run`) leaves nothing
                // queued under a run that ends `DONE`.
                status
            } else {
                // Whether the job's leader (this run, or the one it joined) read its source to
                // the end: one killed or stopped by a source error left rows never admitted,
                // so nothing queued does not mean nobody is left. And whether a run that
                // shared the job left claims unsent.
                let leader_read_all: Option<bool> = sqlx::query_scalar(
                    "SELECT read_all FROM runs WHERE job_id = $1 AND NOT joined ORDER BY run DESC LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM recipients WHERE job_id = $1 AND state IN ('queued', 'in_flight')",
                )
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
                if waiting > 0 || leader_read_all == Some(false) {
                    JobStatus::Interrupted
                } else {
                    JobStatus::Done
                }
            };
            sqlx::query(
                "UPDATE jobs SET status = $2, updated_at = $3, retries = retries + $4, \
                 duration_s = duration_s + $5 WHERE id = $1",
            )
            .bind(id)
            .bind(job_status.name())
            .bind(&at)
            .bind(to_i64(retries))
            .bind(duration.as_secs_f64())
            .execute(&mut **tx)
            .await?;
            Ok(job_status)
        }
        .await)
        .map_err(&fail)?;
        batch.commit().await?;
        Ok(job_status)
    }

    /// Every run of a job, the first first (`status --json` lists them).
    pub async fn runs(&mut self, id: &str) -> Result<Vec<RunRecord>, JournalError> {
        let rows: Vec<(i64, String, i64, String, Option<String>, String)> =
            either!(&mut self.connection, |c| sqlx::query_as(
                "SELECT run, host, pid, started, ended, status FROM runs WHERE job_id = $1 ORDER BY run"
            )
            .bind(id)
            .fetch_all(c)
            .await)
            .map_err(self.fail())?;
        Ok(rows
            .into_iter()
            .map(|(run, host, pid, started, ended, status)| RunRecord {
                run: u32::try_from(run).unwrap_or(u32::MAX),
                host,
                pid: u32::try_from(pid).unwrap_or(0),
                started,
                ended,
                status,
            })
            .collect())
    }

    /// Stores a job's parameters again: a resume may give a new `--max-cost`, which later
    /// resumes and `status` must see.
    pub async fn update_params(
        &mut self,
        id: &str,
        params: &CampaignParams,
    ) -> Result<(), JournalError> {
        let params = serde_json::to_string(params).expect("params serialize");
        either!(&mut self.connection, |c| sqlx::query(
            "UPDATE jobs SET params = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(&params)
        .execute(c)
        .await
        .map(drop))
        .map_err(self.fail())
    }

    /// The resume point the job's last run recorded (`source::resume`), if any. One that no
    /// longer parses (a journal written by another version) is no point: the source is read
    /// from its first row.
    pub async fn resume_point(&mut self, id: &str) -> Result<Option<ResumePoint>, JournalError> {
        let text: Option<String> = either!(&mut self.connection, |c| sqlx::query_scalar(
            "SELECT resume_point FROM jobs WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(c)
        .await)
        .map_err(self.fail())?
        .flatten();
        Ok(text.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Forgets the job's resume point: a run reading its source from the first row, so that
    /// no point of an earlier reading outlives this run (see `source::resume`).
    pub async fn forget_resume_point(&mut self, id: &str) -> Result<(), JournalError> {
        either!(&mut self.connection, |c| sqlx::query(
            "UPDATE jobs SET resume_point = NULL WHERE id = $1"
        )
        .bind(id)
        .execute(c)
        .await
        .map(drop))
        .map_err(self.fail())
    }

    /// Ends a job at its deadline: `EXPIRED`, and its recipients never reached `expired`.
    pub async fn expire(&mut self, id: &str) -> Result<(), JournalError> {
        let at = now();
        either!(&mut self.connection, |c| async {
            let mut tx = c.begin().await?;
            sqlx::query(
                "UPDATE recipients SET state = 'expired', reason = 'not reached before the deadline', \
                 updated_at = $2 WHERE job_id = $1 AND state = 'queued'",
            )
            .bind(id)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE jobs SET status = 'EXPIRED', updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await)
        .map_err(self.fail())
    }

    /// Sets a job's status alone (a start refused in quiet hours, a run broken by an error).
    pub async fn set_status(&mut self, id: &str, status: JobStatus) -> Result<(), JournalError> {
        either!(&mut self.connection, |c| sqlx::query(
            "UPDATE jobs SET status = $2, updated_at = $3 WHERE id = $1"
        )
        .bind(id)
        .bind(status.name())
        .bind(now())
        .execute(c)
        .await
        .map(drop))
        .map_err(self.fail())
    }

    /// The newest job that is not done (interrupted, paused, aborted, or killed while running).
    /// On PostgreSQL, the newest of those that no run holds (another host's running job is
    /// not the one a `--resume` alone should take, and be refused), else the newest.
    pub async fn latest_unfinished(&mut self) -> Result<Option<String>, JournalError> {
        let on_postgres = self.on_postgres();
        either!(&mut self.connection,
            sqlite: "SELECT id FROM jobs WHERE status NOT IN ('DONE', 'EXPIRED') \
                     ORDER BY created_at DESC, id DESC LIMIT 1",
            // The job's lock key as `state_db::job_lock_key` computes it.
            postgres: "SELECT id FROM jobs j WHERE status NOT IN ('DONE', 'EXPIRED') \
                       ORDER BY EXISTS ( \
                         SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                           AND l.objsubid = 2 AND l.classid = $1::bigint::oid \
                           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                           AND l.objid = ('x' || encode(substring(sha256(convert_to( \
                               'job' || chr(10) || j.id, 'UTF8')) FROM 1 FOR 4), 'hex'))::bit(32)::int4::oid \
                       ), created_at DESC, id DESC LIMIT 1",
            |c, sql| {
                let query = sqlx::query_scalar(sql);
                let query = if on_postgres {
                    query.bind(i64::from(crate::state_db::LOCK_SPACE))
                } else {
                    query
                };
                query.fetch_optional(c).await
            })
        .map_err(self.fail())
    }

    pub async fn job(&mut self, id: &str) -> Result<JobRecord, JournalError> {
        let row: JobRow = either!(&mut self.connection, |c| sqlx::query_as(JOB_BY_ID)
            .bind(id)
            .fetch_optional(c)
            .await)
        .map_err(self.fail())?
        .ok_or_else(|| JournalError::UnknownJob(id.to_string()))?;
        self.job_record(row).await
    }

    /// After a run that failed (journal or source error): its rows left in flight become
    /// `uncertain`, so the job can be recorded as stopped (see [`begin_run`](Self::begin_run)).
    pub async fn resolve_in_flight(&mut self, id: &str, run: u32) -> Result<(), JournalError> {
        let fail = self.fail();
        let mut batch = self.fenced(id, run).await?;
        either!(&mut batch.tx, |tx| sqlx::query(
            "UPDATE recipients SET state = 'uncertain', \
             reason = 'a request was in flight when its run ended' \
             WHERE job_id = $1 AND state = 'in_flight' AND run = $2",
        )
        .bind(id)
        .bind(i64::from(run))
        .execute(&mut **tx)
        .await
        .map(drop))
        .map_err(fail)?;
        batch.commit().await
    }

    /// Closes a run whose source was read to its end: a recipient still `queued` that this run
    /// did not see is not in the source any more (the file shrank or changed, the row is no
    /// longer eligible): it is recorded `failed` with that reason, never left `queued` under a
    /// finished job — unless its phone is now in the suppression list (`suppressed`, a phone
    /// that opted out since): then it is no recipient of the job any more, and its row goes. A
    /// row still `in_flight` (a send that never reported) becomes `uncertain`.
    pub async fn close_run(
        &mut self,
        id: &str,
        run: u32,
        suppressed: &HashSet<Phone>,
    ) -> Result<u64, JournalError> {
        let phones: Vec<&str> = suppressed.iter().map(Phone::as_str).collect();
        let phones = serde_json::to_string(&phones).expect("strings serialize");
        let delete_suppressed = if self.on_postgres() {
            "DELETE FROM recipients WHERE job_id = $1 AND state = 'queued' \
             AND seen_run != $2 AND phone = ANY(ARRAY(SELECT json_array_elements_text($3::json)))"
        } else {
            "DELETE FROM recipients WHERE job_id = $1 AND state = 'queued' \
             AND seen_run != $2 AND phone IN (SELECT value FROM json_each($3))"
        };
        let at = now();
        let fail = self.fail();
        let mut batch = self.fenced(id, run).await?;
        let closed = either!(&mut batch.tx, |tx| async {
            if !suppressed.is_empty() {
                sqlx::query(delete_suppressed)
                    .bind(id)
                    .bind(i64::from(run))
                    .bind(&phones)
                    .execute(&mut **tx)
                    .await?;
            }
            let result = sqlx::query(
                "UPDATE recipients SET \
                   state = CASE state WHEN 'in_flight' THEN 'uncertain' ELSE 'failed' END, \
                   reason = CASE state WHEN 'in_flight' \
                     THEN 'a request was in flight when its run ended' \
                     ELSE 'not in the source any more' END, \
                   updated_at = $3 \
                 WHERE job_id = $1 AND ((state = 'in_flight' AND run = $2) \
                   OR (state = 'queued' AND seen_run != $2))",
            )
            .bind(id)
            .bind(i64::from(run))
            .bind(&at)
            .execute(&mut **tx)
            .await?;
            Ok(result.rows_affected())
        }
        .await)
        .map_err(fail)?;
        batch.commit().await?;
        Ok(closed)
    }

    /// A job's campaign parameters only: what `--resume` and `--retry-failed` need, without
    /// counting the job's recipients by state (seconds on a job of ten million).
    pub async fn params(&mut self, id: &str) -> Result<CampaignParams, JournalError> {
        let params: String = either!(&mut self.connection, |c| sqlx::query_scalar(
            "SELECT params FROM jobs WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(c)
        .await)
        .map_err(self.fail())?
        .ok_or_else(|| JournalError::UnknownJob(id.to_string()))?;
        parse_params(id, &params)
    }

    /// Every job, the newest first.
    pub async fn jobs(&mut self) -> Result<Vec<JobRecord>, JournalError> {
        let rows: Vec<JobRow> = either!(&mut self.connection, |c| sqlx::query_as(ALL_JOBS)
            .fetch_all(c)
            .await)
        .map_err(self.fail())?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.push(self.job_record(row).await?);
        }
        Ok(jobs)
    }

    async fn job_record(&mut self, row: JobRow) -> Result<JobRecord, JournalError> {
        let (id, status, created_at, updated_at, params, runs, counts, duration_s) = (
            row.0,
            row.1,
            row.2,
            row.3,
            row.4,
            row.5,
            [row.6, row.7, row.8, row.9, row.10, row.12, row.13],
            row.11,
        );
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let [
            total,
            invalid,
            duplicate,
            suppressed,
            retries,
            no_consent,
            consent_expired,
        ] = counts.map(count);
        let params = parse_params(&id, &params)?;
        let (states, spending) = self.state_counts(&id).await?;
        Ok(JobRecord {
            status: parse_word(&self.path, "job status", &status)?,
            created_at,
            updated_at,
            params,
            runs: u32::try_from(runs).unwrap_or(u32::MAX),
            source: SourceCounts {
                total,
                invalid,
                duplicate,
                suppressed,
                no_consent,
                consent_expired,
            },
            retries,
            duration_s,
            states,
            spending,
            id,
        })
    }

    /// The job's recipients by state, and what the delivered ones cost (one scan).
    pub async fn state_counts(
        &mut self,
        id: &str,
    ) -> Result<(StateCounts, Spending), JournalError> {
        self.counts_of(id, None).await
    }

    /// The recipients one run of the job sent (or claimed), by state, and what they cost: a
    /// run that shared the job with others reports its own (SPEC section 9).
    pub async fn run_state_counts(
        &mut self,
        id: &str,
        run: u32,
    ) -> Result<(StateCounts, Spending), JournalError> {
        self.counts_of(id, Some(run)).await
    }

    async fn counts_of(
        &mut self,
        id: &str,
        run: Option<u32>,
    ) -> Result<(StateCounts, Spending), JournalError> {
        // state, channel, sms_class, count, cost
        type Group = (String, Option<String>, Option<String>, i64, Option<i64>);
        let rows: Vec<Group> = either!(&mut self.connection, |c| {
            sqlx::query_as(
                "SELECT state, channel, sms_class, COUNT(*) AS n, CAST(SUM(cost) AS BIGINT) AS cost \
                 FROM recipients WHERE job_id = $1 AND ($2 IS NULL OR run = $2) \
                 GROUP BY state, channel, sms_class",
            )
            .bind(id)
            .bind(run.map(i64::from))
            .fetch_all(c)
            .await
        })
        .map_err(self.fail())?;
        let mut counts = StateCounts::default();
        let mut spending = Spending::default();
        for (state, channel, sms_class, n, cost) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            let state = parse_word(&self.path, "recipient state", &state)?;
            counts.add(state, n);
            let cost = Money::from_units(cost.unwrap_or(0));
            match channel.as_deref() {
                Some("kakaotalk") => spending.kakaotalk = spending.kakaotalk.saturating_add(cost),
                Some("sms") => spending.sms = spending.sms.saturating_add(cost),
                _ => {}
            }
            if matches!(state, RecipientState::Sent | RecipientState::Fallback) {
                match sms_class.as_deref() {
                    Some("short") => spending.sms_short += n,
                    Some("long") => spending.sms_long += n,
                    _ => {}
                }
            }
        }
        Ok((counts, spending))
    }

    /// The job's recipients that were not delivered (failed or uncertain), in source order.
    pub async fn undelivered(&mut self, id: &str) -> Result<Vec<Undelivered>, JournalError> {
        let rows: Vec<(String, String, String, String, i64)> =
            either!(&mut self.connection, |c| sqlx::query_as(
                "SELECT phone, name, state, reason, line FROM recipients \
                 WHERE job_id = $1 AND state IN ('failed', 'uncertain', 'in_flight') ORDER BY line",
            )
            .bind(id)
            .fetch_all(c)
            .await)
            .map_err(self.fail())?;
        Ok(rows
            .into_iter()
            .map(|(phone, name, state, reason, line)| {
                // The query chose failed and uncertain rows only (in_flight counts as uncertain).
                let failed = state == RecipientState::Failed.name();
                Undelivered {
                    phone,
                    name,
                    reason: if failed {
                        reason
                    } else {
                        format!("uncertain: {reason}")
                    },
                    line: u64::try_from(line).unwrap_or(0),
                }
            })
            .collect())
    }
}

/// A job's row as [`ALL_JOBS`] and [`JOB_BY_ID`] read it: id, status, created_at, updated_at,
/// params, runs, total, invalid, duplicate, suppressed, retries, duration_s, no_consent,
/// consent_expired.
type JobRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    f64,
    i64,
    i64,
);

const ALL_JOBS: &str = "SELECT id, status, created_at, updated_at, params, runs, total, \
     invalid, duplicate, suppressed, retries, duration_s, no_consent, consent_expired \
     FROM jobs ORDER BY created_at DESC, id DESC";
const JOB_BY_ID: &str = "SELECT id, status, created_at, updated_at, params, runs, total, \
     invalid, duplicate, suppressed, retries, duration_s, no_consent, consent_expired \
     FROM jobs WHERE id = $1";

/// Ends what dead runs of the job left: a run with no recorded end that is not live (see
/// [`live_run_sql`]) is marked `KILLED`, and the rows it (or a run of an older msgsend, which
/// recorded no run) left `in_flight` become `uncertain`. Its queued claims need nothing: a row
/// claimed by a run that is not `RUNNING` is free to claim again.
pub(super) async fn reap<DB, C>(connection: &mut C, id: &str, live: &str) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    C: Send + ?Sized,
    for<'e> &'e mut C: sqlx::Executor<'e, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE runs SET status = 'KILLED' WHERE job_id = $1 AND ended IS NULL \
         AND status = 'RUNNING' AND NOT ({live})"
    )))
    .bind(id)
    .execute(&mut *connection)
    .await?;
    sqlx::query(concat!(
        "UPDATE recipients SET state = 'uncertain', \
         reason = 'a request was in flight when the process died' \
         WHERE job_id = $1 AND state = 'in_flight' AND ",
        held_by_no_running_run!()
    ))
    .bind(id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The SQL condition "the run of the `runs` row in scope is live". On PostgreSQL: the session
/// that holds its lock (`backend_pid`) still holds the job's lock. On SQLite no other run can be
/// live: this one holds the state directory's lock.
pub(super) fn live_run_sql(postgres: bool, job: &str) -> String {
    if postgres {
        format!(
            "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
             AND l.pid = runs.backend_pid AND l.classid::bigint = {} \
             AND l.objid::bigint = {} AND l.objsubid = 2)",
            lock_key_as_oid(LOCK_SPACE),
            lock_key_as_oid(job_lock_key(job))
        )
    } else {
        "0 = 1".to_string()
    }
}

fn parse_params(job: &str, text: &str) -> Result<CampaignParams, JournalError> {
    serde_json::from_str(text).map_err(|e| JournalError::BadParams {
        job: job.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Admission, StoredSource};
    use crate::journal::{Candidate, OutcomeRecord};
    use crate::phone::Phone;
    use crate::policy::strategy::Strategy;
    use crate::recipient::AgeRange;

    fn params() -> CampaignParams {
        CampaignParams {
            source: StoredSource::Csv {
                path: "users.csv".into(),
            },
            ages: AgeRange { min: 20, max: 29 },
            date: jiff::civil::date(2026, 11, 24),
            message: "hi {name}".into(),
            header: None,
            strategy: Strategy::Failover,
            concurrency: 4,
            max_failure_rate: None,
            retry_of: None,
            kind: Default::default(),
            frame: None,
            deadline: None,
            max_cost: None,
        }
    }

    fn phone(text: &str) -> Phone {
        Phone::parse(text).unwrap()
    }

    async fn admit(journal: &mut Journal, run: u32, p: &Phone) -> Admission {
        let mut batch = journal.batch("job", run).await.unwrap();
        let admission = batch
            .admit(
                &[Candidate {
                    phone: p.clone(),
                    line: 2,
                    name: "a".into(),
                    fields: None,
                }],
                None,
            )
            .await
            .unwrap();
        batch.commit().await.unwrap();
        admission[0]
    }

    /// A journal as msgsend wrote it before the schema had versions: the first schema, a job
    /// with a sent recipient.
    async fn first_version_journal(dir: &std::path::Path) {
        use sqlx::ConnectOptions as _;
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(super::super::journal_path(dir))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(super::super::schema::SCHEMA)
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::raw_sql(
            "INSERT INTO jobs (id, status, created_at, updated_at, params) VALUES \
             ('old', 'DONE', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', \
              '{\"source\":{\"csv\":{\"path\":\"u.csv\"}},\"ages\":{\"min\":20,\"max\":29},\
              \"date\":\"2026-11-01\",\"message\":\"hi\",\"header\":null,\"strategy\":\"failover\",\
              \"concurrency\":4,\"max_failure_rate\":null,\"retry_of\":null}'); \
             INSERT INTO recipients (job_id, phone, line, name, state, seen_run, channel, updated_at) \
             VALUES ('old', '010-1111-1111', 2, 'a', 'sent', 1, 'kakaotalk', '2026-11-01T00:00:00Z');",
        )
        .execute(&mut connection)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_journal_of_the_first_schema_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        first_version_journal(dir.path()).await;
        let mut journal = Journal::open(dir.path()).await.unwrap();
        let job = journal.job("old").await.unwrap();
        assert_eq!(job.states.sent, 1);
        assert_eq!(job.spending, Spending::default());
        assert_eq!(job.params.kind, crate::advert::MessageKind::Info);
        assert_eq!(job.params.deadline, None);
        drop(journal);
        // Opened again: already migrated, nothing applied twice.
        let mut journal = Journal::open(dir.path()).await.unwrap();
        let Backend::Sqlite(connection) = &mut journal.connection else {
            unreachable!()
        };
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        assert_eq!(version, 3);
        // Version 2's column is there, and empty: no resume point, the first row.
        assert_eq!(journal.resume_point("old").await.unwrap(), None);
        let Backend::Sqlite(connection) = &mut journal.connection else {
            unreachable!()
        };
        sqlx::raw_sql("PRAGMA user_version = 99")
            .execute(&mut *connection)
            .await
            .unwrap();
        drop(journal);
        let newer = Journal::open(dir.path()).await.err().unwrap();
        assert!(
            matches!(newer, JournalError::TooNew { version: 99, .. }),
            "{newer}"
        );
        assert!(newer.to_string().contains("newer"), "{newer}");
    }

    #[tokio::test]
    async fn admission_catches_duplicates_and_what_earlier_runs_did() {
        let mut journal = Journal::in_memory().await.unwrap();
        journal.create_job("job", &params()).await.unwrap();
        assert!(matches!(
            journal.create_job("job", &params()).await,
            Err(JournalError::JobExists(_))
        ));
        let (a, b, c) = (
            phone("010-1111-1111"),
            phone("010-2222-2222"),
            phone("010-3333-3333"),
        );
        let run = journal
            .begin_run("job", false, RunStart::default())
            .await
            .unwrap();
        assert_eq!(admit(&mut journal, run, &a).await, Admission::Send);
        assert_eq!(admit(&mut journal, run, &a).await, Admission::Duplicate);
        assert_eq!(admit(&mut journal, run, &b).await, Admission::Send);
        assert_eq!(admit(&mut journal, run, &c).await, Admission::Send);
        let mut batch = journal.batch("job", run).await.unwrap();
        batch
            .finish(&[OutcomeRecord {
                phone: &a,
                state: RecipientState::Sent,
                channel: Some("kakaotalk"),
                reason: String::new(),
                message_id: None,
                attempts: 1,
                cost: Money::ZERO,
                sms_class: None,
            }])
            .await
            .unwrap();
        batch.start(std::slice::from_ref(&b)).await.unwrap(); // then the process dies
        batch.commit().await.unwrap();

        let run = journal
            .begin_run("job", false, RunStart::default())
            .await
            .unwrap();
        assert_eq!(run, 2);
        assert_eq!(admit(&mut journal, run, &a).await, Admission::AlreadyDone);
        assert_eq!(admit(&mut journal, run, &b).await, Admission::AlreadyDone);
        assert_eq!(admit(&mut journal, run, &c).await, Admission::Send);
        assert_eq!(admit(&mut journal, run, &c).await, Admission::Duplicate);
        let counts = journal.state_counts("job").await.unwrap().0;
        assert_eq!((counts.sent, counts.uncertain, counts.queued), (1, 1, 1));
        let undelivered = journal.undelivered("job").await.unwrap();
        assert_eq!(undelivered.len(), 1);
        assert!(undelivered[0].reason.starts_with("uncertain: "));

        // A row left in flight under a job not marked running is reached too.
        let mut batch = journal.batch("job", run).await.unwrap();
        batch.start(std::slice::from_ref(&c)).await.unwrap();
        batch.commit().await.unwrap();
        journal
            .set_status("job", JobStatus::Interrupted)
            .await
            .unwrap();
        journal
            .begin_run("job", false, RunStart::default())
            .await
            .unwrap();
        assert_eq!(journal.state_counts("job").await.unwrap().0.uncertain, 2);

        // --resend-uncertain puts the uncertain one back in the queue.
        let run = journal
            .begin_run("job", true, RunStart::default())
            .await
            .unwrap();
        assert_eq!(admit(&mut journal, run, &b).await, Admission::Send);
    }

    #[tokio::test]
    async fn a_group_is_admitted_and_recorded_in_a_few_statements_with_the_same_answers() {
        let mut journal = Journal::in_memory().await.unwrap();
        journal.create_job("job", &params()).await.unwrap();
        let phones: Vec<Phone> = (0..600)
            .map(|i| phone(&format!("010-1000-{i:04}")))
            .collect();
        let run = journal
            .begin_run("job", false, RunStart::default())
            .await
            .unwrap();
        // Each phone twice in one group: the second is the duplicate.
        let candidates: Vec<Candidate> = phones
            .iter()
            .chain(&phones)
            .enumerate()
            .map(|(line, p)| Candidate {
                phone: p.clone(),
                line: line as u64 + 2,
                name: format!("n{line}"),
                fields: None,
            })
            .collect();
        let mut batch = journal.batch("job", run).await.unwrap();
        let answers = batch.admit(&candidates, None).await.unwrap();
        assert!(answers[..600].iter().all(|a| *a == Admission::Send));
        assert!(answers[600..].iter().all(|a| *a == Admission::Duplicate));
        batch.start(&phones[..400]).await.unwrap();
        batch.requeue(&phones[300..400]).await.unwrap();
        let outcomes: Vec<OutcomeRecord> = phones[..300]
            .iter()
            .enumerate()
            .map(|(i, p)| OutcomeRecord {
                phone: p,
                state: if i % 3 == 0 {
                    RecipientState::Failed
                } else {
                    RecipientState::Sent
                },
                channel: Some("sms"),
                reason: if i % 3 == 0 {
                    "rejected".into()
                } else {
                    String::new()
                },
                message_id: None,
                attempts: 2,
                cost: Money::ZERO,
                sms_class: None,
            })
            .collect();
        batch.finish(&outcomes).await.unwrap();
        batch.commit().await.unwrap();
        let counts = journal.state_counts("job").await.unwrap().0;
        assert_eq!(
            (counts.sent, counts.failed, counts.queued, counts.uncertain),
            (200, 100, 300, 0)
        );
        let undelivered = journal.undelivered("job").await.unwrap();
        assert_eq!(undelivered.len(), 100);
        assert!(undelivered.iter().all(|u| u.reason.contains("rejected")));

        // A retry of the failed ones admits exactly those.
        journal.create_job("retry", &params()).await.unwrap();
        let run = journal
            .begin_run("retry", false, RunStart::default())
            .await
            .unwrap();
        let mut batch = journal.batch("retry", run).await.unwrap();
        let answers = batch.admit(&candidates[..600], Some("job")).await.unwrap();
        let to_send = answers.iter().filter(|a| **a == Admission::Send).count();
        assert_eq!(to_send, 100);
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Admission::Send | Admission::NotToRetry))
        );
    }
}
