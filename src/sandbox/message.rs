//! A message request (`POST /kakaotalk-messages`, `POST /sms`), from its body to its answer.
//!
//! Once the request is authenticated and its body read, it is processed in a task of its own,
//! detached from the connection: a provider that has received a request processes it whether
//! or not the client still waits. That is what `--stall-rate` simulates (a request that reaches
//! the provider late, after the client gave up) and why "recorded" means "delivered" even for a
//! client that saw only a timeout.
//!
//! Processing, in order: the stall (`--stall-rate`, `--stall-for`); the gate (the rate window
//! counts the request only now, when the provider takes it up, so a replay counts too); the
//! idempotency key (400 if malformed; an accepted key is answered again as it was first; a key
//! another request is processing waits for that request's answer); injected failures (500);
//! validation (400); rejected phones (400); then the message is recorded and accepted (200) and
//! its key remembered (`idempotency.rs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::contract::{self, IDEMPOTENT_REPLAYED};
use super::idempotency::{self, Begin, Claim, KeyStore};
use super::record::RecordedMessage;
use super::server::{SimState, authenticate, bad_request, chance, gate};
use crate::provider::ProviderKind;

/// The most of a message request's body the sandbox reads: a message of 1,000 characters,
/// form-encoded, is under 10 KiB.
const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send a body once its credentials were accepted.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request waits for another request with the same key to be answered, before it
/// is answered 409 instead. A key is held only from the idempotency check to the record, which
/// never waits, so this bound only guards against a request that got stuck.
const WAIT_FOR_SAME_KEY: Duration = Duration::from_secs(5);

/// The answer remembered for an accepted key: the status and the message id, from which the
/// body is made again exactly as the first time ([`contract::accepted_body`]). Kept this small
/// because up to [`idempotency::MAX_KEYS`] of them live at once.
#[derive(Debug, Clone)]
pub(super) struct Remembered {
    status: StatusCode,
    id: Box<str>,
}

/// What the processing task needs of the request.
struct MessageRequest {
    username: String,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
}

pub(super) async fn handle(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Body,
) -> Response {
    // Credentials first: a client without them never gets its body read.
    let username = match authenticate(&state, &headers).await {
        Ok(username) => username,
        Err(response) => return response,
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "body too slow").into_response(),
    };
    let request = MessageRequest {
        username,
        headers,
        query,
        body,
    };
    // Awaited, not owned: when the client goes away hyper drops this future, and dropping a
    // JoinHandle leaves its task running to the end.
    let task = state.requests.spawn(process(state.clone(), request));
    task.await
        .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response())
}

async fn process(state: Arc<SimState>, request: MessageRequest) -> Response {
    if !state.faults.stall_for.is_zero() && chance(state.faults.stall_rate) {
        state.stats.stalled.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            () = tokio::time::sleep(state.faults.stall_for) => {}
            // A provider that stops loses what it had not taken up yet.
            () = state.stop.cancelled() => return stopping(),
        }
    }
    if let Err(response) = gate(&state, &request.username).await {
        return response;
    }
    let claim = match contract::idempotency_key(&request.headers) {
        Err(reason) => return bad_request(&state, reason),
        Ok(None) => None,
        Ok(Some(key)) => match claim_key(&state, &request.username, key).await {
            Ok(claim) => Some(claim),
            Err(answer) => return answer,
        },
    };
    match deliver(&state, &request) {
        Ok(id) => {
            if let Some(claim) = claim {
                remember(&state, claim, &id);
            }
            accepted_answer(&state, &id)
        }
        Err(refused) => {
            // Only accepted answers are remembered: the next request with the key is new.
            if let Some(claim) = claim {
                keys(&state).abandon(claim);
            }
            match refused {
                Refused::Injected => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response()
                }
                Refused::Invalid(reason) => bad_request(&state, reason),
            }
        }
    }
}

/// The right to process `key`, or the answer to give instead: the remembered one, 409 after
/// waiting [`WAIT_FOR_SAME_KEY`] for another request with the key, 503 if the sandbox stops.
async fn claim_key(state: &SimState, username: &str, key: &str) -> Result<Claim, Response> {
    let deadline = Instant::now() + WAIT_FOR_SAME_KEY;
    loop {
        let begin = keys(state).begin(username, key, Instant::now());
        let done = match begin {
            Begin::Fresh(claim) => return Ok(claim),
            Begin::Replay(remembered) => {
                state.stats.replayed.fetch_add(1, Ordering::SeqCst);
                return Err(replayed_answer(state.kind, &remembered));
            }
            Begin::Wait(done) => done,
        };
        // Woken when the other request's claim ends; then the key is looked up again, since
        // that request may have been refused and left the key free.
        tokio::select! {
            () = done.cancelled() => {}
            () = tokio::time::sleep_until(deadline) => {
                return Err((
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is still being processed",
                )
                    .into_response());
            }
            () = state.stop.cancelled() => return Err(stopping()),
        }
    }
}

/// Why a message taken up was not accepted.
enum Refused {
    /// An injected failure: 500.
    Injected,
    /// A malformed request or a rejected phone: 400 for this reason.
    Invalid(&'static str),
}

/// Injected failures, validation, then the record: the message id, or why it was refused.
fn deliver(state: &SimState, request: &MessageRequest) -> Result<String, Refused> {
    let number = state.message_requests.fetch_add(1, Ordering::SeqCst);
    if number < state.faults.fail_first || chance(state.faults.fail_rate) {
        state.stats.server_errors.fetch_add(1, Ordering::SeqCst);
        return Err(Refused::Injected);
    }
    let (phone, text) = contract::parse_message(
        state.kind,
        &request.headers,
        request.query.as_deref(),
        &request.body,
    )
    .map_err(Refused::Invalid)?;
    if state.kind == ProviderKind::KakaoTalk && state.faults.reject_phones.contains(&phone) {
        return Err(Refused::Invalid("recipient rejected"));
    }
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    let id = match state.kind {
        ProviderKind::KakaoTalk => format!("kt-{id}"),
        ProviderKind::Sms => format!("sms-{id}"),
    };
    if let Some(recorder) = &state.recorder {
        recorder.write(&RecordedMessage {
            provider: state.kind.name().to_string(),
            credential: request.username.clone(),
            phone,
            message: text,
            id: id.clone(),
            at: jiff::Timestamp::now().to_string(),
        });
    }
    state.stats.accepted.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

/// Remembers the answer to an accepted key. What is remembered is the answer the provider
/// meant, 200 with the message id, even when `--reset-rate` or `--garbage-rate` spoil the one
/// sent now: a client that lost that answer asks again with the key to learn the id.
fn remember(state: &SimState, claim: Claim, id: &str) {
    let remembered = Remembered {
        status: StatusCode::OK,
        id: id.into(),
    };
    let forgot = keys(state).accept(claim, remembered, Instant::now());
    if forgot && !state.keys_full_warned.swap(true, Ordering::SeqCst) {
        tracing::warn!(
            provider = %state.kind,
            "{} idempotency keys remembered: the oldest are now forgotten before 24 hours",
            idempotency::MAX_KEYS
        );
    }
}

/// The answer to a message accepted now, spoiled as the faults say.
fn accepted_answer(state: &SimState, id: &str) -> Response {
    if chance(state.faults.reset_rate) {
        // The status line goes out, then the body fails: hyper breaks the connection.
        let broken = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("injected reset"))
        });
        return (StatusCode::OK, axum::body::Body::from_stream(broken)).into_response();
    }
    if chance(state.faults.garbage_rate) {
        return (StatusCode::OK, "<html>accepted</html>").into_response();
    }
    (
        StatusCode::OK,
        axum::Json(contract::accepted_body(state.kind, id)),
    )
        .into_response()
}

/// The first answer to an accepted key, again, marked as a replay.
fn replayed_answer(kind: ProviderKind, remembered: &Remembered) -> Response {
    (
        remembered.status,
        [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))],
        axum::Json(contract::accepted_body(kind, &remembered.id)),
    )
        .into_response()
}

fn stopping() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the sandbox is stopping").into_response()
}

/// The key store. Its methods do not panic halfway, so a poisoned lock is taken all the same
/// rather than turning one panic into a panic in every later request.
fn keys(state: &SimState) -> MutexGuard<'_, KeyStore<Remembered>> {
    state.keys.lock().unwrap_or_else(PoisonError::into_inner)
}
