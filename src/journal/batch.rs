//! One transaction of journal writes: admitting recipients (de-duplication and what earlier
//! runs did), recording them in flight, back in the queue, or with their outcome.
//!
//! Every method takes a whole group of recipients and costs a fixed number of statements,
//! however many recipients the group holds: the rows travel as one JSON array parameter that
//! SQLite's `json_each` (PostgreSQL's `json_array_elements`) unrolls. On PostgreSQL every
//! statement also names the group's phones as `phone = ANY(ARRAY(…))`, so that the primary key
//! finds exactly the group's rows whatever plan the server picks: a generic plan for
//! `job_id = $1` would otherwise scan all of a job's rows for every group. Per-recipient
//! statements were what bounded a campaign's speed (each one a round trip to sqlx's SQLite
//! worker thread, two thread wake-ups; measured at ~50 µs), not the disk.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Sqlite, Transaction};

use super::queries::live_run_sql;
use super::{Backend, JournalError, OutcomeRecord, ResumedAt, database_error, parse_word, to_i64};
use crate::job::{Admission, RecipientState};
use crate::phone::Phone;
use crate::sms_length::SmsClass;
use crate::source::resume::ResumePoint;
use crate::state_db::{LEADER_SPACE, job_lock_key, lock_key_as_oid};

/// One transaction of journal writes; nothing is durable before [`commit`](Self::commit).
pub struct Batch<'j> {
    pub(super) tx: Backend<Transaction<'j, Sqlite>, Transaction<'j, Postgres>>,
    pub(super) job: &'j str,
    pub(super) run: u32,
    pub(super) path: String,
    /// The group's `updated_at`.
    pub(super) at: String,
    pub(super) resumed_at: Option<ResumedAt>,
}

/// What a joined run's claim found.
#[derive(Debug, Default)]
pub struct Claimed {
    pub rows: Vec<ClaimedRow>,
    /// The job's leader still reads the source: an empty claim is not the end.
    pub leader_live: bool,
}

/// A recipient a joined run claimed: what its message needs.
#[derive(Debug)]
pub struct ClaimedRow {
    pub phone: String,
    pub line: u64,
    pub name: String,
    /// The placeholders' values beyond name and phone (a JSON object), as admitted.
    pub fields: Option<String>,
}

/// A recipient to admit to a run.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub phone: Phone,
    /// Its line in the source (the row number for a database).
    pub line: u64,
    pub name: String,
    /// The values of the message's other placeholders, as a JSON object, when it has any: a
    /// joined run renders the message from them (it reads no source).
    pub fields: Option<String>,
}

impl Batch<'_> {
    fn fail(&self) -> impl Fn(sqlx::Error) -> JournalError + use<> {
        database_error(&self.path)
    }

    /// Admits recipients to this run (see [`Admission`]); the answers come in order. A phone
    /// seen twice, in this call or earlier in the run, is a duplicate the second time; so is
    /// one whose first row lies before the resume point the run's source was opened at
    /// ([`ResumedAt`]).
    ///
    /// Three statements at most, whatever the group's size: one read of what the journal
    /// holds for these phones, one update marking those from an earlier run seen by this one
    /// (at the line it has now), one insert of the new. The read returns a single row (a JSON
    /// array): sqlx hands every result row over from its SQLite worker thread separately, a
    /// thread wake-up each.
    pub async fn admit(
        &mut self,
        candidates: &[Candidate],
        retry_of: Option<&str>,
    ) -> Result<Vec<Admission>, JournalError> {
        let fail = self.fail();
        let phones = json_array(candidates.iter().map(|c| c.phone.as_str()));
        let retryable: Option<HashSet<String>> = match retry_of {
            Some(original) => Some(self.retryable(original, &phones).await?),
            None => None,
        };
        let known: HashMap<String, (RecipientState, i64, i64)> = self
            .json_rows::<(String, String, i64, i64)>(
                "SELECT json_group_array(json_array(phone, state, seen_run, line)) FROM recipients \
                 WHERE job_id = $1 AND phone IN (SELECT value FROM json_each($2))",
                "SELECT COALESCE(json_agg(json_build_array(phone, state, seen_run, line)), '[]')::text \
                 FROM recipients \
                 WHERE job_id = $1 AND phone = ANY(ARRAY(SELECT json_array_elements_text($2::json)))",
                self.job,
                &phones,
            )
            .await?
            .into_iter()
            .map(|(phone, state, seen_run, line)| {
                let state = parse_word(&self.path, "recipient state", &state)?;
                Ok((phone, (state, seen_run, line)))
            })
            .collect::<Result<_, JournalError>>()?;

        let run = i64::from(self.run);
        // Seen before the resume point: recorded since the point's base run at a line before it.
        let before_point = |seen_run: i64, line: i64| {
            self.resumed_at
                .is_some_and(|at| seen_run >= i64::from(at.base_run) && line < to_i64(at.line))
        };
        let mut seen_here = HashSet::with_capacity(candidates.len());
        let mut new = Vec::new();
        let mut seen_again = Vec::new();
        let answers = candidates
            .iter()
            .map(
                |Candidate {
                     phone,
                     line,
                     name,
                     fields,
                 }| {
                    let phone = phone.as_str();
                    if retryable.as_ref().is_some_and(|r| !r.contains(phone)) {
                        return Admission::NotToRetry;
                    }
                    if !seen_here.insert(phone) {
                        return Admission::Duplicate;
                    }
                    match known.get(phone) {
                        None => {
                            new.push((phone, to_i64(*line), name, fields));
                            Admission::Send
                        }
                        Some((_, seen_run, _)) if *seen_run == run => Admission::Duplicate,
                        Some((_, seen_run, known_line)) if before_point(*seen_run, *known_line) => {
                            Admission::Duplicate
                        }
                        Some((state, _, _)) => {
                            seen_again.push((phone, to_i64(*line)));
                            match state {
                                RecipientState::Queued => Admission::Send,
                                _ => Admission::AlreadyDone,
                            }
                        }
                    }
                },
            )
            .collect();

        if !new.is_empty() {
            let rows = serde_json::to_string(&new).expect("strings and numbers serialize");
            either!(&mut self.tx,
                sqlite: "INSERT INTO recipients (job_id, phone, line, name, fields, state, seen_run, updated_at) \
                         SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, 'queued', $2, $3 \
                         FROM json_each($4)",
                postgres: "INSERT INTO recipients (job_id, phone, line, name, fields, state, seen_run, updated_at) \
                           SELECT $1, value ->> 0, (value ->> 1)::bigint, value ->> 2, value ->> 3, 'queued', $2, $3 \
                           FROM json_array_elements($4::json)",
                |tx, sql| sqlx::query(sql)
                    .bind(self.job)
                    .bind(run)
                    .bind(&self.at)
                    .bind(&rows)
                    .execute(&mut **tx)
                    .await
                    .map(drop))
            .map_err(&fail)?;
        }
        if !seen_again.is_empty() {
            let rows = serde_json::to_string(&seen_again).expect("strings and numbers serialize");
            either!(&mut self.tx,
                // Materialized first, as in `finish`.
                sqlite: "WITH s AS MATERIALIZED ( \
                             SELECT value ->> 0 AS phone, value ->> 1 AS line FROM json_each($3)) \
                         UPDATE recipients SET seen_run = $2, line = s.line \
                         FROM s WHERE recipients.job_id = $1 AND recipients.phone = s.phone",
                postgres: "WITH s AS MATERIALIZED ( \
                               SELECT value ->> 0 AS phone, (value ->> 1)::bigint AS line \
                               FROM json_array_elements($3::json)) \
                           UPDATE recipients SET seen_run = $2, line = s.line \
                           FROM s WHERE recipients.job_id = $1 AND recipients.phone = s.phone \
                             AND recipients.phone = ANY(ARRAY(SELECT value ->> 0 FROM json_array_elements($3::json)))",
                |tx, sql| sqlx::query(sql)
                    .bind(self.job)
                    .bind(run)
                    .bind(&rows)
                    .execute(&mut **tx)
                    .await
                    .map(drop))
            .map_err(&fail)?;
        }
        Ok(answers)
    }

    /// Records where a later run may start reading the job's source (`source::resume`).
    pub async fn set_resume_point(&mut self, point: &ResumePoint) -> Result<(), JournalError> {
        let point = serde_json::to_string(point).expect("a point serializes");
        either!(&mut self.tx, |tx| sqlx::query(
            "UPDATE jobs SET resume_point = $2 WHERE id = $1"
        )
        .bind(self.job)
        .bind(&point)
        .execute(&mut **tx)
        .await
        .map(drop))
        .map_err(self.fail())
    }

    /// `--retry-failed original`: which of `phones` (a JSON array) the original job recorded
    /// `failed` and no other job of its family holds in any other state — the family being the
    /// original campaign and every retry of it or of its retries. So a recipient that an earlier
    /// retry delivered, or still has queued, in flight or uncertain, is never sent again by a
    /// second retry: running `--retry-failed` twice sends nobody twice.
    async fn retryable(
        &mut self,
        original: &str,
        phones: &str,
    ) -> Result<HashSet<String>, JournalError> {
        // On PostgreSQL other jobs run at once, a retry of the same family among them: the
        // family's admissions take turns (the lock is held to this group's commit), so this
        // read sees every row another retry admitted. On SQLite one `bulk` runs at a time.
        if let Backend::Postgres(tx) = &mut self.tx {
            let root: Option<String> = sqlx::query_scalar(
                "WITH RECURSIVE up(id, parent, depth) AS ( \
                   SELECT id, params::json ->> 'retry_of', 0 FROM jobs WHERE id = $1 \
                   UNION ALL SELECT j.id, j.params::json ->> 'retry_of', up.depth + 1 \
                   FROM jobs j JOIN up ON j.id = up.parent WHERE up.depth < 1000) \
                 SELECT id FROM up ORDER BY depth DESC LIMIT 1",
            )
            .bind(original)
            .fetch_optional(&mut **tx)
            .await
            .map_err(database_error(&self.path))?;
            let root = root.unwrap_or_else(|| original.to_string());
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(crate::state_db::LOCK_SPACE)
                .bind(crate::state_db::retry_family_lock_key(&root))
                .execute(&mut **tx)
                .await
                .map_err(database_error(&self.path))?;
        }
        let json: String = either!(&mut self.tx,
            sqlite: "WITH RECURSIVE \
               up(id, parent) AS ( \
                 SELECT id, params ->> '$.retry_of' FROM jobs WHERE id = $1 \
                 UNION SELECT j.id, j.params ->> '$.retry_of' FROM jobs j JOIN up ON j.id = up.parent), \
               family(id) AS ( \
                 SELECT id FROM up WHERE parent IS NULL \
                 UNION SELECT j.id FROM jobs j JOIN family f ON j.params ->> '$.retry_of' = f.id), \
               wanted(phone) AS (SELECT value FROM json_each($2)) \
             SELECT json_group_array(phone) FROM recipients \
             WHERE job_id = $1 AND state = 'failed' AND phone IN (SELECT phone FROM wanted) \
               AND phone NOT IN ( \
                 SELECT r.phone FROM recipients r JOIN family f ON r.job_id = f.id \
                 WHERE r.job_id != $3 AND r.state != 'failed' \
                   AND r.phone IN (SELECT phone FROM wanted))",
            postgres: "WITH RECURSIVE \
               up(id, parent) AS ( \
                 SELECT id, params::json ->> 'retry_of' FROM jobs WHERE id = $1 \
                 UNION SELECT j.id, j.params::json ->> 'retry_of' FROM jobs j JOIN up ON j.id = up.parent), \
               family(id) AS ( \
                 SELECT id FROM up WHERE parent IS NULL \
                 UNION SELECT j.id FROM jobs j JOIN family f ON j.params::json ->> 'retry_of' = f.id) \
             SELECT COALESCE(json_agg(phone), '[]')::text FROM recipients \
             WHERE job_id = $1 AND state = 'failed' AND phone = ANY(ARRAY(SELECT json_array_elements_text($2::json))) \
               AND phone NOT IN ( \
                 SELECT r.phone FROM recipients r JOIN family f ON r.job_id = f.id \
                 WHERE r.job_id != $3 AND r.state != 'failed' \
                   AND r.phone = ANY(ARRAY(SELECT json_array_elements_text($2::json))))",
            |tx, sql| sqlx::query_scalar(sql)
                .bind(original)
                .bind(phones)
                .bind(self.job)
                .fetch_one(&mut **tx)
                .await)
        .map_err(self.fail())?;
        serde_json::from_str(&json).map_err(|e| (self.fail())(sqlx::Error::Decode(Box::new(e))))
    }

    /// Runs a query whose one row is a JSON array (`json_group_array`), decoded.
    async fn json_rows<T: serde::de::DeserializeOwned>(
        &mut self,
        sqlite: &'static str,
        postgres: &'static str,
        job: &str,
        phones: &str,
    ) -> Result<Vec<T>, JournalError> {
        let json: String = either!(&mut self.tx, sqlite: sqlite, postgres: postgres,
            |tx, sql| sqlx::query_scalar(sql)
                .bind(job)
                .bind(phones)
                .fetch_one(&mut **tx)
                .await)
        .map_err(self.fail())?;
        serde_json::from_str(&json).map_err(|e| (self.fail())(sqlx::Error::Decode(Box::new(e))))
    }

    /// Rows a killed run left `in_flight` become `uncertain`, as the next run's start does
    /// (a dry run rehearses that start).
    pub async fn resolve_in_flight(&mut self) -> Result<(), JournalError> {
        let live = live_run_sql(matches!(self.tx, Backend::Postgres(_)), self.job);
        either!(&mut self.tx, |tx| super::queries::reap(
            &mut **tx, self.job, &live
        )
        .await)
        .map_err(self.fail())
    }

    /// `--resend-uncertain`: every uncertain recipient of the job goes back in the queue.
    pub async fn requeue_uncertain(&mut self) -> Result<(), JournalError> {
        either!(&mut self.tx, |tx| sqlx::query(
            "UPDATE recipients SET state = 'queued' WHERE job_id = $1 AND state = 'uncertain'",
        )
        .bind(self.job)
        .execute(&mut **tx)
        .await
        .map(drop))
        .map_err(self.fail())
    }

    /// Records that requests for these phones are about to go, and returns those it recorded:
    /// a phone whose row another live run has claimed (`--join`) is not this run's to send.
    /// Only while this run is still `RUNNING` ([`Self::fence`]).
    pub async fn start(&mut self, phones: &[Phone]) -> Result<HashSet<String>, JournalError> {
        if phones.is_empty() {
            return Ok(HashSet::new());
        }
        let asked = phones.len();
        let phones = json_array(phones.iter().map(Phone::as_str));
        // Queued, and claimed by nobody, by this run, or by a run that is over.
        if let Backend::Sqlite(tx) = &mut self.tx {
            // SQLite has no UPDATE in a WITH, and hands each RETURNING row over separately: the
            // count tells whether all were started (always, but for a bug: no run joins here).
            let fail = database_error(&self.path);
            let updated = sqlx::query(concat!(
                "UPDATE recipients SET state = 'in_flight', updated_at = $2, run = $3 \
                 WHERE job_id = $1 AND phone IN (SELECT value FROM json_each($4)) \
                   AND state = 'queued' AND (run = $3 OR ",
                held_by_no_running_run!(),
                ")"
            ))
            .bind(self.job)
            .bind(&self.at)
            .bind(i64::from(self.run))
            .bind(&phones)
            .execute(&mut **tx)
            .await
            .map_err(&fail)?
            .rows_affected();
            if updated == asked as u64 {
                return Ok(serde_json::from_str(&phones).expect("a JSON array of strings"));
            }
            let started: String = sqlx::query_scalar(
                "SELECT json_group_array(phone) FROM recipients WHERE job_id = $1 \
                 AND phone IN (SELECT value FROM json_each($2)) AND state = 'in_flight' AND run = $3",
            )
            .bind(self.job)
            .bind(&phones)
            .bind(i64::from(self.run))
            .fetch_one(&mut **tx)
            .await
            .map_err(&fail)?;
            return serde_json::from_str(&started)
                .map_err(|e| fail(sqlx::Error::Decode(Box::new(e))));
        }
        let Backend::Postgres(tx) = &mut self.tx else {
            unreachable!("SQLite returned above")
        };
        let started: String = sqlx::query_scalar(concat!(
            "WITH s AS (UPDATE recipients SET state = 'in_flight', updated_at = $2, run = $3 \
               WHERE job_id = $1 AND phone = ANY(ARRAY(SELECT json_array_elements_text($4::json))) \
                 AND state = 'queued' AND (run = $3 OR ",
            held_by_no_running_run!(),
            ") RETURNING phone) \
             SELECT COALESCE(json_agg(phone), '[]')::text FROM s"
        ))
        .bind(self.job)
        .bind(&self.at)
        .bind(i64::from(self.run))
        .bind(&phones)
        .fetch_one(&mut **tx)
        .await
        .map_err(database_error(&self.path))?;
        serde_json::from_str(&started).map_err(|e| (self.fail())(sqlx::Error::Decode(Box::new(e))))
    }

    /// On PostgreSQL, fails when this run is no longer `RUNNING`: another run marked it
    /// `KILLED` because its lock session was gone (a broken connection), and two runs must
    /// never both send. The run's row is read `FOR SHARE`, so a run marking it waits for this
    /// group's commit and then finds its rows in flight (and makes them `uncertain`), or this
    /// group waits for that mark and records nothing. On SQLite the state directory's file lock
    /// cannot be lost. Every group of the collector passes it first: a run that lost the job
    /// writes nothing over the run that took it.
    pub async fn fence(&mut self) -> Result<(), JournalError> {
        let Backend::Postgres(tx) = &mut self.tx else {
            return Ok(());
        };
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM runs WHERE job_id = $1 AND run = $2 FOR SHARE")
                .bind(self.job)
                .bind(i64::from(self.run))
                .fetch_optional(&mut **tx)
                .await
                .map_err(database_error(&self.path))?;
        if status.as_deref() == Some("RUNNING") {
            Ok(())
        } else {
            Err(JournalError::Superseded {
                job: self.job.to_string(),
                run: self.run,
            })
        }
    }

    /// `--join`: claims up to `limit` queued recipients no live run holds, skipping rows another
    /// run is claiming at this moment (`FOR UPDATE SKIP LOCKED`). When none is left, the dead
    /// runs' leftovers are freed first and tried again; the answer also says whether the
    /// job's leader still reads the source (more may come).
    pub async fn claim(&mut self, limit: usize) -> Result<Claimed, JournalError> {
        let Backend::Postgres(_) = &self.tx else {
            return Ok(Claimed::default());
        };
        let mut rows = self.claim_rows(limit).await?;
        if rows.is_empty() {
            self.resolve_in_flight().await?;
            rows = self.claim_rows(limit).await?;
        }
        let Backend::Postgres(tx) = &mut self.tx else {
            unreachable!()
        };
        let leader_live: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2)",
        )
        .bind(lock_key_as_oid(LEADER_SPACE))
        .bind(lock_key_as_oid(job_lock_key(self.job)))
        .fetch_one(&mut **tx)
        .await
        .map_err(database_error(&self.path))?;
        Ok(Claimed { rows, leader_live })
    }

    async fn claim_rows(&mut self, limit: usize) -> Result<Vec<ClaimedRow>, JournalError> {
        let Backend::Postgres(tx) = &mut self.tx else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(concat!(
            "UPDATE recipients SET run = $2, updated_at = $3 WHERE job_id = $1 AND phone IN ( \
                 SELECT phone FROM recipients WHERE job_id = $1 AND state = 'queued' AND ",
            held_by_no_running_run!(),
            " LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING phone, line, name, fields"
        ))
        .bind(self.job)
        .bind(i64::from(self.run))
        .bind(&self.at)
        .bind(to_i64(limit as u64))
        .fetch_all(&mut **tx)
        .await
        .map_err(database_error(&self.path))?;
        Ok(rows
            .into_iter()
            .map(|(phone, line, name, fields)| ClaimedRow {
                phone,
                line: u64::try_from(line).unwrap_or(0),
                name,
                fields,
            })
            .collect())
    }

    /// Records that every request for these phones so far failed for certain: they wait to
    /// be sent (still this run's).
    pub async fn requeue(&mut self, phones: &[Phone]) -> Result<(), JournalError> {
        if phones.is_empty() {
            return Ok(());
        }
        let phones = json_array(phones.iter().map(Phone::as_str));
        either!(&mut self.tx,
            sqlite: "UPDATE recipients SET state = 'queued', updated_at = $2 WHERE job_id = $1 \
                     AND phone IN (SELECT value FROM json_each($3))",
            postgres: "UPDATE recipients SET state = 'queued', updated_at = $2 WHERE job_id = $1 \
                       AND phone = ANY(ARRAY(SELECT json_array_elements_text($3::json)))",
            |tx, sql| sqlx::query(sql)
                .bind(self.job)
                .bind(&self.at)
                .bind(&phones)
                .execute(&mut **tx)
                .await
                .map(drop))
        .map_err(self.fail())
    }

    /// Records these recipients' outcomes.
    pub async fn finish(&mut self, outcomes: &[OutcomeRecord<'_>]) -> Result<(), JournalError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let fail = self.fail();
        let rows = serde_json::to_string(
            &outcomes
                .iter()
                .map(|o| {
                    (
                        o.phone.as_str(),
                        o.state.name(),
                        o.channel,
                        &o.reason,
                        o.message_id,
                        o.attempts,
                        o.cost.units(),
                        o.sms_class.map(SmsClass::name),
                    )
                })
                .collect::<Vec<_>>(),
        )
        .expect("strings and numbers serialize");
        either!(&mut self.tx,
            // Materialized first: otherwise SQLite scans the job's rows and looks each up in
            // the JSON, O(job × group) instead of O(group).
            sqlite: "WITH o AS MATERIALIZED ( \
                 SELECT value ->> 0 AS phone, value ->> 1 AS state, value ->> 2 AS channel, \
                        value ->> 3 AS reason, value ->> 4 AS message_id, \
                        value ->> 5 AS attempts, value ->> 6 AS cost, \
                        value ->> 7 AS sms_class \
                 FROM json_each($3)) \
             UPDATE recipients SET state = o.state, channel = o.channel, reason = o.reason, \
             message_id = o.message_id, attempts = recipients.attempts + o.attempts, \
             cost = o.cost, sms_class = o.sms_class, updated_at = $2 \
             FROM o WHERE recipients.job_id = $1 AND recipients.phone = o.phone",
            postgres: "WITH o AS MATERIALIZED ( \
                 SELECT value ->> 0 AS phone, value ->> 1 AS state, value ->> 2 AS channel, \
                        value ->> 3 AS reason, value ->> 4 AS message_id, \
                        (value ->> 5)::bigint AS attempts, (value ->> 6)::bigint AS cost, \
                        value ->> 7 AS sms_class \
                 FROM json_array_elements($3::json)) \
             UPDATE recipients SET state = o.state, channel = o.channel, reason = o.reason, \
             message_id = o.message_id, attempts = recipients.attempts + o.attempts, \
             cost = o.cost, sms_class = o.sms_class, updated_at = $2 \
             FROM o WHERE recipients.job_id = $1 AND recipients.phone = o.phone \
               AND recipients.phone = ANY(ARRAY(SELECT value ->> 0 FROM json_array_elements($3::json)))",
            |tx, sql| sqlx::query(sql)
                .bind(self.job)
                .bind(&self.at)
                .bind(&rows)
                .execute(&mut **tx)
                .await
                .map(drop))
        .map_err(fail)
    }

    pub async fn commit(self) -> Result<(), JournalError> {
        let path = self.path;
        either!(self.tx, |tx| tx.commit().await)
            .map_err(|source| JournalError::Database { path, source })
    }
}

/// A JSON array of strings, the one parameter a set-at-a-time statement takes.
fn json_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&items.into_iter().collect::<Vec<_>>()).expect("strings serialize")
}
