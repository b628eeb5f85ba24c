//! The sandbox's HTTP side: one axum router per simulated provider. Each request passes, in
//! order: latency, credentials (401), the rate limit (429), outage (503), injected failures
//! (500), validation of the body and phone (400), rejected phones (400), then it is recorded
//! and accepted (200).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::record::{RecordedMessage, Recorder};
use super::window::{ArrivalWindow, Verdict};
use super::{Faults, ProviderSimConfig, SimControl, SimStats};
use crate::phone::Phone;
use crate::provider::ProviderKind;

pub(super) struct SimState {
    kind: ProviderKind,
    /// `Authorization` header value → username.
    accepted_auth: HashMap<String, String>,
    windows: Mutex<HashMap<String, ArrivalWindow>>,
    rate: crate::units::Rate,
    faults: Faults,
    started: Instant,
    next_id: AtomicU64,
    message_requests: AtomicU64,
    recorder: Option<Arc<Recorder>>,
    pub(super) stats: Arc<SimStats>,
    pub(super) control: Arc<SimControl>,
}

impl SimState {
    pub(super) fn new(
        kind: ProviderKind,
        config: &ProviderSimConfig,
        recorder: Option<Arc<Recorder>>,
    ) -> Arc<Self> {
        let accepted_auth = config
            .credentials
            .iter()
            .map(|(user, password)| {
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                (format!("Basic {token}"), user.clone())
            })
            .collect();
        Arc::new(SimState {
            kind,
            accepted_auth,
            windows: Mutex::new(HashMap::new()),
            rate: config.rate,
            faults: config.faults.clone(),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            message_requests: AtomicU64::new(0),
            recorder,
            stats: Arc::new(SimStats::default()),
            control: Arc::new(SimControl::default()),
        })
    }
}

pub(super) fn router(state: Arc<SimState>) -> Router {
    let send_path = match state.kind {
        ProviderKind::KakaoTalk => "/kakaotalk-messages",
        ProviderKind::Sms => "/sms",
    };
    Router::new()
        .route("/health", get(health))
        .route(send_path, post(message))
        .with_state(state)
}

/// The gate every request passes before its own handling: latency, credentials, rate limit,
/// outage. `Ok` carries the caller's username.
async fn admit(state: &SimState, headers: &HeaderMap) -> Result<String, Response> {
    state.stats.requests.fetch_add(1, Ordering::SeqCst);
    if !state.faults.latency.is_zero() {
        tokio::time::sleep(state.faults.latency).await;
    }
    let username = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| state.accepted_auth.get(value))
        .cloned();
    let Some(username) = username else {
        state.stats.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"sandbox\"")],
            "bad credentials",
        )
            .into_response());
    };
    let verdict = {
        let mut windows = state.windows.lock().await;
        windows
            .entry(username.clone())
            .or_insert_with(|| ArrivalWindow::new(state.rate))
            .arrive(Instant::now())
    };
    let in_window = match verdict {
        Verdict::Allowed { in_window } | Verdict::Exceeded { in_window, .. } => in_window as u64,
    };
    state
        .stats
        .peak_window
        .fetch_max(in_window, Ordering::SeqCst);
    if let Verdict::Exceeded { retry_after, .. } = verdict {
        state.stats.rate_limited.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(provider = %state.kind, credential = %username, "429: over {} for this credential", state.rate);
        let seconds = HeaderValue::from(retry_after.as_secs());
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds)],
            "rate limited",
        )
            .into_response());
    }
    if state.started.elapsed() < state.faults.storm_for {
        state.stats.rate_limited.fetch_add(1, Ordering::SeqCst);
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "rate limited (storm)").into_response();
        if !state.faults.storm_without_retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        return Err(response);
    }
    if state.control.down.load(Ordering::SeqCst)
        || state.started.elapsed() < state.faults.outage_for
    {
        state.stats.server_errors.fetch_add(1, Ordering::SeqCst);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "outage").into_response());
    }
    Ok(username)
}

async fn health(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    state.stats.health_checks.fetch_add(1, Ordering::SeqCst);
    match admit(&state, &headers).await {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response(),
        Err(response) => response,
    }
}

/// The most of a message request's body the sandbox reads: a message of 1,000 characters,
/// form-encoded, is under 10 KiB.
const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send a body once its credentials were accepted.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn message(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Body,
) -> Response {
    // Credentials first: a client without them never gets its body read.
    let username = match admit(&state, &headers).await {
        Ok(username) => username,
        Err(response) => return response,
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "body too slow").into_response(),
    };
    let number = state.message_requests.fetch_add(1, Ordering::SeqCst);
    if number < state.faults.fail_first
        || (state.faults.fail_rate > 0.0 && rand::random::<f64>() < state.faults.fail_rate)
    {
        state.stats.server_errors.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    let parsed = match state.kind {
        ProviderKind::KakaoTalk => parse_kakaotalk(&headers, &body),
        ProviderKind::Sms => parse_sms(&headers, query.as_deref(), &body),
    };
    let (phone, text) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => return bad_request(&state, reason),
    };
    // As strict as the real providers: a message over their length limit is refused.
    let limit = crate::provider::DEFAULT_MAX_MESSAGE_LENGTH as usize;
    if text.chars().count() > limit {
        return bad_request(&state, "message too long");
    }
    if state.kind == ProviderKind::KakaoTalk && state.faults.reject_phones.contains(&phone) {
        return bad_request(&state, "recipient rejected");
    }
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    let id = match state.kind {
        ProviderKind::KakaoTalk => format!("kt-{id}"),
        ProviderKind::Sms => format!("sms-{id}"),
    };
    if let Some(recorder) = &state.recorder {
        recorder.write(&RecordedMessage {
            provider: state.kind.name().to_string(),
            credential: username,
            phone,
            message: text,
            id: id.clone(),
            at: jiff::Timestamp::now().to_string(),
        });
    }
    state.stats.accepted.fetch_add(1, Ordering::SeqCst);
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
    let answer = match state.kind {
        ProviderKind::KakaoTalk => serde_json::json!({ "messageId": id }),
        ProviderKind::Sms => serde_json::json!({ "result": "OK", "smsId": id }),
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

fn bad_request(state: &SimState, reason: &'static str) -> Response {
    state.stats.rejected.fetch_add(1, Ordering::SeqCst);
    (StatusCode::BAD_REQUEST, reason).into_response()
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(expected))
}

/// A phone as the contract sends it: already normalised.
fn strict_phone(text: &str) -> Result<String, &'static str> {
    match Phone::parse(text) {
        Ok(phone) if phone.as_str() == text => Ok(text.to_string()),
        _ => Err("phone is not a normalised Korean mobile number (010-1234-5678)"),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KakaoTalkBody {
    phone: String,
    message: String,
}

fn parse_kakaotalk(headers: &HeaderMap, body: &[u8]) -> Result<(String, String), &'static str> {
    if !content_type_is(headers, "application/json") {
        return Err("Content-Type must be application/json");
    }
    let body: KakaoTalkBody = serde_json::from_slice(body)
        .map_err(|_| "body must be {\"phone\": ..., \"message\": ...}")?;
    if body.message.is_empty() {
        return Err("message is empty");
    }
    Ok((strict_phone(&body.phone)?, body.message))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsQuery {
    phone: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsBody {
    message: String,
}

fn parse_sms(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(String, String), &'static str> {
    let query: SmsQuery = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| "query must be ?phone=...")?;
    if !content_type_is(headers, "application/x-www-form-urlencoded") {
        return Err("Content-Type must be application/x-www-form-urlencoded");
    }
    let body: SmsBody =
        serde_urlencoded::from_bytes(body).map_err(|_| "body must be message=...")?;
    if body.message.is_empty() {
        return Err("message is empty");
    }
    Ok((strict_phone(&query.phone)?, body.message))
}
