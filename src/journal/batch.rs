//! One transaction of journal writes: admitting recipients (de-duplication and what earlier
//! runs did), recording them in flight, back in the queue, or with their outcome.

use sqlx::{Row as _, Sqlite, Transaction};

use super::{Admission, JournalError, OutcomeRecord, RecipientState, database_error, to_i64};
use crate::phone::Phone;

/// One transaction of journal writes; nothing is durable before [`commit`](Self::commit).
pub struct Batch<'j> {
    pub(super) tx: Transaction<'j, Sqlite>,
    pub(super) job: &'j str,
    pub(super) run: u32,
    pub(super) path: String,
    /// The group's `updated_at`.
    pub(super) at: String,
}

impl Batch<'_> {
    fn fail(&self) -> impl Fn(sqlx::Error) -> JournalError + use<> {
        database_error(&self.path)
    }

    /// Admits a recipient to this run (see [`Admission`]).
    pub async fn admit(
        &mut self,
        phone: &Phone,
        line: u64,
        name: &str,
        retry_of: Option<&str>,
    ) -> Result<Admission, JournalError> {
        let fail = self.fail();
        if let Some(original) = retry_of {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM recipients WHERE job_id = $1 AND phone = $2")
                    .bind(original)
                    .bind(phone.as_str())
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(&fail)?;
            if state.as_deref() != Some(RecipientState::Failed.name()) {
                return Ok(Admission::NotToRetry);
            }
        }
        let existing =
            sqlx::query("SELECT state, seen_run FROM recipients WHERE job_id = $1 AND phone = $2")
                .bind(self.job)
                .bind(phone.as_str())
                .fetch_optional(&mut *self.tx)
                .await
                .map_err(&fail)?;
        let Some(existing) = existing else {
            sqlx::query(
                "INSERT INTO recipients (job_id, phone, line, name, state, seen_run, updated_at) \
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6)",
            )
            .bind(self.job)
            .bind(phone.as_str())
            .bind(to_i64(line))
            .bind(name)
            .bind(i64::from(self.run))
            .bind(&self.at)
            .execute(&mut *self.tx)
            .await
            .map_err(&fail)?;
            return Ok(Admission::Send);
        };
        let seen_run: i64 = existing.get("seen_run");
        if seen_run == i64::from(self.run) {
            return Ok(Admission::Duplicate);
        }
        sqlx::query("UPDATE recipients SET seen_run = $3 WHERE job_id = $1 AND phone = $2")
            .bind(self.job)
            .bind(phone.as_str())
            .bind(i64::from(self.run))
            .execute(&mut *self.tx)
            .await
            .map_err(fail)?;
        Ok(
            match RecipientState::parse(&existing.get::<String, _>("state")) {
                RecipientState::Queued => Admission::Send,
                _ => Admission::AlreadyDone,
            },
        )
    }

    /// Records that a request for `phone` is about to go.
    pub async fn start(&mut self, phone: &Phone) -> Result<(), JournalError> {
        self.set_state(phone, RecipientState::InFlight).await
    }

    /// Records that every request for `phone` so far failed for certain: it waits to be sent.
    pub async fn requeue(&mut self, phone: &Phone) -> Result<(), JournalError> {
        self.set_state(phone, RecipientState::Queued).await
    }

    async fn set_state(
        &mut self,
        phone: &Phone,
        state: RecipientState,
    ) -> Result<(), JournalError> {
        let fail = self.fail();
        sqlx::query(
            "UPDATE recipients SET state = $3, updated_at = $4 WHERE job_id = $1 AND phone = $2",
        )
        .bind(self.job)
        .bind(phone.as_str())
        .bind(state.name())
        .bind(&self.at)
        .execute(&mut *self.tx)
        .await
        .map_err(fail)?;
        Ok(())
    }

    pub async fn finish(&mut self, outcome: &OutcomeRecord<'_>) -> Result<(), JournalError> {
        let fail = self.fail();
        sqlx::query(
            "UPDATE recipients SET state = $3, channel = $4, reason = $5, message_id = $6, \
             attempts = attempts + $7, updated_at = $8 WHERE job_id = $1 AND phone = $2",
        )
        .bind(self.job)
        .bind(outcome.phone.as_str())
        .bind(outcome.state.name())
        .bind(outcome.channel)
        .bind(&outcome.reason)
        .bind(outcome.message_id)
        .bind(i64::from(outcome.attempts))
        .bind(&self.at)
        .execute(&mut *self.tx)
        .await
        .map_err(fail)?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), JournalError> {
        let path = self.path;
        self.tx
            .commit()
            .await
            .map_err(|source| JournalError::Database { path, source })
    }
}
