//! The sandbox's HTTP side: one axum router per simulated provider, and the checks every
//! request passes. A request is first [`authenticate`]d (latency, credentials: 401), then
//! [`gate`]d (the rate limit: 429, a storm: 429, an outage: 503). `GET /health` is answered
//! there; a message request goes on in `message.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::idempotency::{self, KeyStore};
use super::message::{self, Remembered};
use super::record::Recorder;
use super::window::{ArrivalWindow, Verdict};
use super::{Faults, ProviderSimConfig, SimControl, SimStats};
use crate::provider::ProviderKind;

pub(super) struct SimState {
    pub(super) kind: ProviderKind,
    /// `Authorization` header value → username.
    accepted_auth: HashMap<String, String>,
    windows: Mutex<HashMap<String, ArrivalWindow>>,
    rate: crate::units::Rate,
    pub(super) faults: Faults,
    started: Instant,
    pub(super) next_id: AtomicU64,
    pub(super) message_requests: AtomicU64,
    pub(super) recorder: Option<Arc<Recorder>>,
    /// The idempotency keys of accepted messages. A plain lock: it is never held across an
    /// await, and each use is a hash lookup.
    pub(super) keys: std::sync::Mutex<KeyStore<Remembered>>,
    /// Set once the store first forgot an unexpired key, so the warning is logged once.
    pub(super) keys_full_warned: AtomicBool,
    /// Cancelled when the sandbox stops: requests still stalled or waiting give up.
    pub(super) stop: CancellationToken,
    /// The detached tasks that process message requests, so that the sandbox's shutdown waits
    /// for them.
    pub(super) requests: TaskTracker,
    pub(super) stats: Arc<SimStats>,
    pub(super) control: Arc<SimControl>,
}

impl SimState {
    pub(super) fn new(
        kind: ProviderKind,
        config: &ProviderSimConfig,
        recorder: Option<Arc<Recorder>>,
        stop: &CancellationToken,
        requests: &TaskTracker,
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
            keys: std::sync::Mutex::new(KeyStore::new(
                idempotency::MAX_KEYS,
                idempotency::KEEP_FOR,
            )),
            keys_full_warned: AtomicBool::new(false),
            stop: stop.clone(),
            requests: requests.clone(),
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
        .route(send_path, post(message::handle))
        .with_state(state)
}

/// What every request passes first, at arrival: latency, then credentials. Counted in
/// `requests`; `Ok` carries the caller's username.
pub(super) async fn authenticate(
    state: &SimState,
    headers: &HeaderMap,
) -> Result<String, Response> {
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
    Ok(username)
}

/// What an authenticated request passes when the provider takes it up (for a stalled message
/// request, after its stall): the credential's rate window, a storm, an outage.
pub(super) async fn gate(state: &SimState, username: &str) -> Result<(), Response> {
    let verdict = {
        let mut windows = state.windows.lock().await;
        windows
            .entry(username.to_string())
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
    Ok(())
}

async fn health(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    state.stats.health_checks.fetch_add(1, Ordering::SeqCst);
    let admitted = match authenticate(&state, &headers).await {
        Ok(username) => gate(&state, &username).await,
        Err(response) => Err(response),
    };
    match admitted {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response(),
        Err(response) => response,
    }
}

pub(super) fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

pub(super) fn bad_request(state: &SimState, reason: &'static str) -> Response {
    state.stats.rejected.fetch_add(1, Ordering::SeqCst);
    (StatusCode::BAD_REQUEST, reason).into_response()
}
