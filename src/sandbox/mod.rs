//! `msgsend sandbox`: local simulated KakaoTalk and SMS APIs that serve SPEC section 4 strictly
//! (401 for wrong credentials, 400 for a malformed body or phone, 400 for an SMS the carriers
//! would not take (outside KS X 1001, over 2,000 EUC-KR bytes; section 10), 429 past a
//! sliding-window rate limit, `GET /health`), inject faults on demand and record every accepted
//! message as a JSON line. It honours idempotency keys and can hold requests back as if they
//! reached it late. Operators try campaigns against it; every test of msgsend talks to it over
//! real HTTP.

mod contract;
mod idempotency;
mod listen;
mod message;
mod record;
mod server;
mod window;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::provider::ProviderKind;
use crate::units::Rate;

pub use record::RecordedMessage;

/// Everything one simulated provider needs to know.
#[derive(Debug, Clone)]
pub struct ProviderSimConfig {
    pub addr: SocketAddr,
    /// The quota per credential, enforced over a sliding window.
    pub rate: Rate,
    /// `(username, password)` pairs it accepts.
    pub credentials: Vec<(String, String)>,
    pub faults: Faults,
}

/// Injected misbehaviour.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of message requests answered 500, at random.
    pub fail_rate: f64,
    /// Delay before every answer.
    pub latency: Duration,
    /// 503 to every request for this long after start.
    pub outage_for: Duration,
    /// The first N message requests are answered 500 (replays of an accepted idempotency key
    /// aside: those are answered as they were first).
    pub fail_first: u64,
    /// Phones (normalised) answered 400 (KakaoTalk only, as SPEC section 4 says).
    pub reject_phones: HashSet<String>,
    /// Share of accepted messages whose answer is cut off: status 200 is sent, then the
    /// connection breaks in the middle of the body. The message counts as accepted.
    pub reset_rate: f64,
    /// Share of accepted messages answered 200 with a body that is not JSON.
    pub garbage_rate: f64,
    /// 429 to every request for this long after start (a storm), with `Retry-After: 1`
    /// unless `storm_without_retry_after`.
    pub storm_for: Duration,
    pub storm_without_retry_after: bool,
    /// Share of message requests held for `stall_for` before the provider takes them up
    /// (counts them in its rate window, accepts and records them), even when the client has
    /// stopped waiting meanwhile: a request that reaches the provider late.
    pub stall_rate: f64,
    pub stall_for: Duration,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub kakaotalk: ProviderSimConfig,
    pub sms: ProviderSimConfig,
    /// Append each accepted message to this file as a JSON line.
    pub record: Option<PathBuf>,
}

impl SandboxConfig {
    /// The SPEC defaults: KakaoTalk on 127.0.0.1:8081 (`autoever`/`1234`, 100/min), SMS on
    /// 127.0.0.1:8082 (`autoever`/`5678`, 500/min), no faults, no record.
    pub fn spec_defaults() -> Self {
        let provider = |port: u16, password: &str, rate: &str| ProviderSimConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            rate: rate.parse().expect("valid default rate"),
            credentials: vec![("autoever".to_string(), password.to_string())],
            faults: Faults::default(),
        };
        SandboxConfig {
            kakaotalk: provider(8081, "1234", "100/min"),
            sms: provider(8082, "5678", "500/min"),
            record: None,
        }
    }

    /// The defaults on free loopback ports, for tests and the demo.
    pub fn ephemeral() -> Self {
        let mut config = Self::spec_defaults();
        config.kakaotalk.addr.set_port(0);
        config.sms.addr.set_port(0);
        config
    }
}

/// What one simulated provider has seen. All counts include every request, health probes too.
#[derive(Debug, Default)]
pub struct SimStats {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    pub unauthorized: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub rejected: AtomicU64,
    pub health_checks: AtomicU64,
    /// The most requests any one credential had in any window of the rate's length.
    pub peak_window: AtomicU64,
    /// Message requests answered with the remembered answer to their idempotency key.
    pub replayed: AtomicU64,
    /// Message requests held back by `stall_rate`.
    pub stalled: AtomicU64,
}

impl SimStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// Switches a running simulated provider's behaviour (in-process tests and the demo).
#[derive(Debug, Default)]
pub struct SimControl {
    /// While set, every request is answered 503, as in an outage.
    pub down: AtomicBool,
}

/// A running simulated provider.
#[derive(Debug, Clone)]
pub struct ProviderSim {
    pub kind: ProviderKind,
    pub addr: SocketAddr,
    pub stats: Arc<SimStats>,
    pub control: Arc<SimControl>,
}

impl ProviderSim {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Both simulated providers, running until [`Sandbox::shutdown`] or drop.
#[derive(Debug)]
pub struct Sandbox {
    pub kakaotalk: ProviderSim,
    pub sms: ProviderSim,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Message requests being processed, detached from their connections.
    requests: TaskTracker,
}

impl Sandbox {
    /// Binds both servers and starts serving them on the current runtime.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Sandbox> {
        let recorder = match &config.record {
            Some(path) => Some(Arc::new(record::Recorder::create(path)?)),
            None => None,
        };
        let stop = CancellationToken::new();
        let requests = TaskTracker::new();
        let mut tasks = Vec::new();
        let mut start =
            async |kind: ProviderKind, sim: &ProviderSimConfig| -> std::io::Result<ProviderSim> {
                let listener = TcpListener::bind(sim.addr).await.map_err(|error| {
                    std::io::Error::new(
                        error.kind(),
                        format!("cannot listen on {} for {kind}: {error}", sim.addr),
                    )
                })?;
                let addr = listener.local_addr()?;
                let state = server::SimState::new(kind, sim, recorder.clone(), &stop, &requests);
                let handle = ProviderSim {
                    kind,
                    addr,
                    stats: state.stats.clone(),
                    control: state.control.clone(),
                };
                tasks.push(tokio::spawn(listen::serve(
                    listener,
                    server::router(state),
                    stop.clone(),
                )));
                Ok(handle)
            };
        let kakaotalk = start(ProviderKind::KakaoTalk, &config.kakaotalk).await?;
        let sms = start(ProviderKind::Sms, &config.sms).await?;
        Ok(Sandbox {
            kakaotalk,
            sms,
            stop,
            tasks,
            requests,
        })
    }

    /// Stops accepting connections and waits for the servers to finish, and for the message
    /// requests still being processed (stalled ones give up at once, unrecorded).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.requests.close();
        self.requests.wait().await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
