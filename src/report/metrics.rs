//! Prometheus metrics of a campaign (SPEC section 6): `[metrics] textfile` is rewritten every
//! 30 s and at the end (to a temporary file then renamed, so node_exporter's textfile collector
//! never reads half a file), and `[metrics] pushgateway` receives them at the end of a run,
//! grouped by `job/msgsend/job_id/<id>`.
//!
//! The exposition is rendered by metrics-exporter-prometheus: it writes the classic text
//! format without sample timestamps (which the textfile collector rejects) and, unlike
//! prometheus-client, no OpenMetrics `# EOF`. The recorder is this run's own, not a process
//! global, so tests running campaigns side by side never mix their figures.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `msgsend_messages_total` | counter | `channel` (kakaotalk, sms, none), `outcome` (sent, fallback, failed, uncertain) |
//! | `msgsend_recipients_skipped_total` | counter | `reason` (invalid, duplicate, suppressed) |
//! | `msgsend_retries_total` | counter | `provider` |
//! | `msgsend_fallbacks_total` | counter | |
//! | `msgsend_provider_requests_total` | counter | `provider`, `result` (ok or the error class) |
//! | `msgsend_provider_request_duration_seconds` | histogram | `provider` |
//! | `msgsend_success_ratio` | gauge | |
//! | `msgsend_queue_size` | gauge | |
//! | `msgsend_circuit_open` | gauge (0/1) | `provider` |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::config::MetricsSettings;
use crate::delivery::Attempt;
use crate::job::RecipientState;
use crate::policy::breaker::BreakerState;
use crate::provider::ProviderKind;

/// Upper bounds of the request-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn to_labels(pairs: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    pairs
        .iter()
        .map(|&(key, value)| metrics::Label::new(key, value))
        .collect()
}

/// A metric and its labels (at most two here), all static: the key of a cached handle.
type HandleKey = (&'static str, [(&'static str, &'static str); 2]);

fn handle_key(name: &'static str, labels: &[(&'static str, &'static str)]) -> HandleKey {
    let mut key = [("", ""); 2];
    assert!(
        labels.len() <= key.len(),
        "{name}: more labels than a key holds"
    );
    key[..labels.len()].copy_from_slice(labels);
    (name, key)
}

/// One run's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Sends recorded so far, to drain histogram samples every [`UPKEEP_EVERY`].
    finished: std::sync::atomic::AtomicU64,
    /// Handles already registered: the recorder's own lookup builds the labels and hashes
    /// them on every call, three times per message on the collector's path.
    counters: std::sync::Mutex<HashMap<HandleKey, Counter>>,
    histograms: std::sync::Mutex<HashMap<HandleKey, Histogram>>,
}

/// The exporter keeps raw histogram samples until they are drained into buckets (on render or
/// upkeep); without a textfile nothing renders during a run, so memory would grow with every
/// request. Draining every this many sends keeps it flat.
const UPKEEP_EVERY: u64 = 1024;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("msgsend_provider_request_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            finished: std::sync::atomic::AtomicU64::new(0),
            counters: Default::default(),
            histograms: Default::default(),
        };
        metrics.with(|| {
            metrics::describe_counter!(
                "msgsend_messages_total",
                "Recipients whose send ended, by channel and outcome"
            );
            metrics::describe_counter!(
                "msgsend_recipients_skipped_total",
                "Rows not sent to, by reason"
            );
            metrics::describe_counter!(
                "msgsend_retries_total",
                "Requests beyond the first per channel"
            );
            metrics::describe_counter!(
                "msgsend_fallbacks_total",
                "Recipients delivered by the fallback channel"
            );
            metrics::describe_counter!(
                "msgsend_provider_requests_total",
                "Requests made to a provider, by result"
            );
            metrics::describe_histogram!(
                "msgsend_provider_request_duration_seconds",
                Unit::Seconds,
                "Round-trip time of provider requests"
            );
            metrics::describe_gauge!(
                "msgsend_success_ratio",
                "Delivered share of the recipients attempted in this run"
            );
            metrics::describe_gauge!(
                "msgsend_queue_size",
                "Recipients admitted and not yet finished"
            );
            metrics::describe_gauge!(
                "msgsend_circuit_open",
                "1 while the provider's circuit is open or half-open"
            );
            // Present from the start, so a dashboard sees zeros rather than gaps.
            metrics::gauge!("msgsend_success_ratio").set(1.0);
            metrics::gauge!("msgsend_queue_size").set(0.0);
        });
        metrics
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        let mut counters = self.counters.lock().expect("metrics handles");
        counters
            .entry(handle_key(name, labels))
            .or_insert_with(|| self.with(|| metrics::counter!(name, to_labels(labels))))
            .clone()
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.with(|| metrics::gauge!(name, to_labels(labels)))
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Histogram {
        let mut histograms = self.histograms.lock().expect("metrics handles");
        histograms
            .entry(handle_key(name, labels))
            .or_insert_with(|| self.with(|| metrics::histogram!(name, to_labels(labels))))
            .clone()
    }

    /// A recipient's send ended in `state` through `channel`, after `attempts`.
    pub fn finished(
        &self,
        state: RecipientState,
        channel: Option<ProviderKind>,
        attempts: &[Attempt],
    ) {
        let channel = channel.map_or("none", ProviderKind::name);
        self.counter(
            "msgsend_messages_total",
            &[("channel", channel), ("outcome", state.name())],
        )
        .increment(1);
        if state == RecipientState::Fallback {
            self.counter("msgsend_fallbacks_total", &[]).increment(1);
        }
        let finished = self
            .finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if finished % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.handle.run_upkeep();
        }
        for attempt in attempts {
            let provider = attempt.channel.name();
            self.counter(
                "msgsend_provider_requests_total",
                &[("provider", provider), ("result", attempt.outcome.name())],
            )
            .increment(1);
            self.histogram(
                "msgsend_provider_request_duration_seconds",
                &[("provider", provider)],
            )
            .record(attempt.latency_ms as f64 / 1000.0);
            if attempt.number > 1 {
                self.counter("msgsend_retries_total", &[("provider", provider)])
                    .increment(1);
            }
        }
    }

    /// A row not sent to: `invalid`, `duplicate` or `suppressed`.
    pub fn skipped(&self, reason: &'static str) {
        self.counter("msgsend_recipients_skipped_total", &[("reason", reason)])
            .increment(1);
    }

    pub fn set_success_ratio(&self, ratio: f64) {
        self.gauge("msgsend_success_ratio", &[]).set(ratio);
    }

    pub fn set_queue_size(&self, size: u64) {
        self.gauge("msgsend_queue_size", &[]).set(size as f64);
    }

    /// Reads each provider's circuit into `msgsend_circuit_open`.
    pub fn observe_circuits(
        &self,
        circuits: impl IntoIterator<Item = (ProviderKind, BreakerState)>,
    ) {
        for (provider, state) in circuits {
            let open = !matches!(state, BreakerState::Closed { .. });
            self.gauge("msgsend_circuit_open", &[("provider", provider.name())])
                .set(if open { 1.0 } else { 0.0 });
        }
    }

    /// The end-of-run metrics: the textfile once more, and the Pushgateway. Failures are
    /// logged; monitoring never changes a campaign's outcome.
    pub async fn publish(&self, settings: &MetricsSettings, http: &reqwest::Client, job_id: &str) {
        if let Some(path) = &settings.textfile
            && let Err(error) = self.write_textfile(path)
        {
            tracing::warn!(file = %path.display(), "cannot write the metrics textfile: {error}");
        }
        if let Some(gateway) = &settings.pushgateway
            && let Err(error) = self.push(http, gateway, job_id).await
        {
            let gateway = crate::secret::redacted_url(gateway, false);
            tracing::warn!(pushgateway = %gateway, "cannot push the metrics: {error}");
        }
    }

    /// The Prometheus text exposition of everything so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Writes the exposition to `path` atomically: a temporary file beside it, then a rename.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut file, self.render().as_bytes())?;
        // No personal data in it, and node_exporter runs as another user: readable by all.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Rewrites the textfile every `period` (the first time at once) until the task is
    /// dropped, calling `refresh` first (to read the circuits). A failed write is logged and
    /// retried at the next tick: monitoring never stops a campaign.
    pub async fn write_every(
        self: Arc<Self>,
        period: Duration,
        path: PathBuf,
        refresh: impl Fn(&Metrics),
    ) {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            refresh(&self);
            if let Err(error) = self.write_textfile(&path) {
                tracing::warn!(file = %path.display(), "cannot write the metrics textfile: {error}");
            }
        }
    }

    /// PUTs the exposition to the Pushgateway, grouped by job id.
    pub async fn push(
        &self,
        http: &reqwest::Client,
        gateway: &reqwest::Url,
        job_id: &str,
    ) -> Result<(), String> {
        let mut url = gateway.clone();
        url.path_segments_mut()
            .map_err(|()| "the pushgateway URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["metrics", "job", "msgsend", "job_id", job_id]);
        let response = http
            .put(url)
            .timeout(Duration::from_secs(10))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(self.render())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout".to_string()
                } else {
                    "connection failed".to_string()
                }
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::AttemptOutcome;
    use crate::provider::Class;

    fn attempt(channel: ProviderKind, number: u32, outcome: AttemptOutcome) -> Attempt {
        Attempt {
            channel,
            number,
            outcome,
            detail: String::new(),
            latency_ms: 42,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_textfile_is_rewritten_every_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msgsend.prom");
        let metrics = Arc::new(Metrics::new());
        let writer = tokio::spawn(metrics.clone().write_every(
            Duration::from_secs(30),
            path.clone(),
            |_| {},
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(path.exists(), "written at once");
        metrics.set_queue_size(3);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("msgsend_queue_size 0")
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("msgsend_queue_size 3")
        );
        writer.abort();
    }

    #[test]
    fn the_exposition_carries_the_spec_names_and_no_timestamps() {
        let metrics = Metrics::new();
        metrics.finished(
            RecipientState::Fallback,
            Some(ProviderKind::Sms),
            &[
                attempt(
                    ProviderKind::KakaoTalk,
                    1,
                    AttemptOutcome::Failed(Class::ServerError),
                ),
                attempt(
                    ProviderKind::KakaoTalk,
                    2,
                    AttemptOutcome::Failed(Class::Rejected),
                ),
                attempt(ProviderKind::Sms, 1, AttemptOutcome::Ok),
            ],
        );
        metrics.skipped("invalid");
        metrics.set_queue_size(7);
        let text = metrics.render();
        for expected in [
            "msgsend_messages_total{channel=\"sms\",outcome=\"fallback\"} 1",
            "msgsend_fallbacks_total 1",
            "msgsend_retries_total{provider=\"kakaotalk\"} 1",
            "msgsend_provider_requests_total{provider=\"kakaotalk\",result=\"server_error\"} 1",
            "msgsend_provider_request_duration_seconds_bucket{provider=\"sms\",le=\"0.05\"} 1",
            "msgsend_recipients_skipped_total{reason=\"invalid\"} 1",
            "msgsend_queue_size 7",
            "# TYPE msgsend_provider_request_duration_seconds histogram",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert_eq!(
                line.split_whitespace().count(),
                2,
                "a timestamp in {line:?}"
            );
        }
    }
}
