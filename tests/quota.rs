//! SPEC section 8 across real processes: the quota is shared through the state, so a strict
//! provider (the sandbox, counting arrivals in a sliding window) never answers 429 — two
//! `bulk`s back to back, a `bulk` stopped or killed and resumed at once, `send` and `health`
//! beside a saturating `bulk`, a request that times out and arrives late. Idempotency keys are
//! stable where they must be and differ where they must.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::crowd::crowd;
use common::{World, campaign_args, count, stderr, stdout};

/// A strict sandbox: KakaoTalk 10 per 2 s, and the config saying so, with a short timeout so
/// that a killed run's worst case passes quickly.
async fn strict_world() -> World {
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "10/2s".parse().unwrap();
    })
    .await;
    world
        .set("providers.kakaotalk.rate_limit", "10/2s")
        .set("providers.kakaotalk.timeout", "500ms");
    world
}

/// How often each phone was delivered.
fn deliveries(world: &World) -> BTreeMap<String, usize> {
    let mut received = BTreeMap::new();
    for message in world.recorded() {
        *received.entry(message.phone).or_insert(0) += 1;
    }
    received
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bulks_back_to_back_meet_no_429() {
    let mut world = strict_world().await;
    let people = crowd(12);
    let csv = world.with_crowd(&people);
    for job in ["first", "second"] {
        let output = world
            .msgsend(&campaign_args(&csv, &["--job-id", job]))
            .await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 0);
    assert_eq!(world.recorded().len(), 2 * people.eligible.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_stopped_or_killed_and_resumed_at_once_meets_no_429_and_nobody_twice() {
    for stop in ["TERM", "KILL"] {
        let mut world = strict_world().await;
        let people = crowd(25);
        let csv = world.with_crowd(&people);
        let child = world
            .command(&campaign_args(&csv, &["--job-id", "cut"]))
            .spawn()
            .unwrap();
        // Inside the second window: the first ten went, more are waiting or out.
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        common::signal(child.id(), stop);
        let stopped = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_ne!(
            stopped.status.code(),
            Some(0),
            "{stop}: {}",
            stderr(&stopped)
        );
        let resumed = world
            .msgsend(&["bulk", "--resume", "cut", "--resend-uncertain"])
            .await;
        assert!(
            matches!(resumed.status.code(), Some(0 | 3)),
            "{stop}: {}",
            stderr(&resumed)
        );
        assert_eq!(
            count(&world.sandbox.kakaotalk.stats.rate_limited),
            0,
            "{stop}: the resumed run met the stopped run's window"
        );
        let received = deliveries(&world);
        assert!(received.values().all(|&n| n == 1), "{stop}: {received:?}");
        assert_eq!(received.len(), people.eligible.len(), "{stop}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_and_health_beside_a_saturating_bulk_meet_no_429() {
    let mut world = strict_world().await;
    let people = crowd(30);
    let csv = world.with_crowd(&people);
    let bulk = world
        .command(&campaign_args(&csv, &["--job-id", "busy"]))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = world.msgsend(&["health", "--json"]).await;
    assert_eq!(health.status.code(), Some(0), "{}", stdout(&health));
    let rows: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    let kakaotalk = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["provider"] == "kakaotalk")
        .unwrap();
    assert!(
        kakaotalk["status"] == "busy" || kakaotalk["status"] == "healthy",
        "{rows}"
    );
    let send = world
        .msgsend(&[
            "send",
            "--to",
            "01099990000",
            "--name",
            "S",
            "--message",
            "hi",
            "--channel",
            "kakaotalk",
            "--no-fallback",
        ])
        .await;
    assert_eq!(send.status.code(), Some(0), "{}", stderr(&send));
    let bulk = output_of_child(bulk).await;
    assert_eq!(bulk.status.code(), Some(0), "{}", stderr(&bulk));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 0);
}

async fn output_of_child(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_times_out_and_arrives_late_is_delivered_once_by_its_key() {
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "2/s".parse().unwrap();
        config.kakaotalk.faults.stall_rate = 1.0;
        config.kakaotalk.faults.stall_for = Duration::from_millis(600);
    })
    .await;
    world
        .set("providers.kakaotalk.rate_limit", "2/s")
        .set("providers.kakaotalk.timeout", "400ms")
        .set("retry.max_attempts", 3);
    let output = world.send_hi(&["--json"]).await;
    // Every attempt stalls past the timeout, so msgsend never hears the answer: uncertain.
    // The provider takes the first under its key and replays it to the later ones.
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(world.recorded().len(), 1, "delivered once");
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 0);
    assert_eq!(common::message_requests(&world.sandbox.sms), 0);
}

/// A provider standing in for KakaoTalk that notes each request's idempotency key and phone,
/// answers 500 to a key's first request (so it is retried), and never answers a phone in
/// `hang` (so its requests time out).
struct KeyWitness {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl KeyWitness {
    async fn start(hang: &'static str) -> KeyWitness {
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let phone = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["phone"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let first = {
                    let mut seen = log.lock().unwrap();
                    let first = !seen.iter().any(|(k, _)| *k == key);
                    seen.push((key, phone.clone()));
                    first
                };
                if phone == hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                if first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        KeyWitness { addr, seen }
    }

    /// Phone → the keys its requests carried, in order.
    fn keys(&self) -> BTreeMap<String, Vec<String>> {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, phone) in self.seen.lock().unwrap().iter() {
            keys.entry(phone.clone()).or_default().push(key.clone());
        }
        keys
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_is_stable_across_retries_runs_and_resends_and_differs_between_recipients_and_jobs() {
    let people = crowd(4);
    let hang = people.eligible.iter().next().unwrap().clone();
    let witness = KeyWitness::start(Box::leak(hang.clone().into_boxed_str())).await;
    let mut world = World::start(|_| {}).await;
    world
        .set(
            "providers.kakaotalk.base_url",
            format!("http://{}", witness.addr),
        )
        .set("providers.kakaotalk.timeout", "300ms")
        .set("retry.max_attempts", 2);
    let csv = world.with_crowd(&people);
    let first = world
        .msgsend(&campaign_args(&csv, &["--job-id", "keys-a"]))
        .await;
    // The hanging phone times out on both attempts: uncertain (exit 3).
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    let resent = world
        .msgsend(&["bulk", "--resume", "keys-a", "--resend-uncertain"])
        .await;
    assert_eq!(resent.status.code(), Some(3), "{}", stderr(&resent));
    let in_a = witness.keys();
    for (phone, keys) in &in_a {
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{phone}: one key across retries: {keys:?}"
        );
        assert!(!keys[0].contains(&phone.replace('-', "")) && !keys[0].contains(phone));
    }
    // Two retries in the first run, two more after --resend-uncertain, one key.
    assert_eq!(in_a[&hang].len(), 4, "{in_a:?}");
    let all: BTreeSet<&String> = in_a.values().map(|keys| &keys[0]).collect();
    assert_eq!(all.len(), people.eligible.len(), "a key per recipient");
    let second = world
        .msgsend(&campaign_args(&csv, &["--job-id", "keys-b"]))
        .await;
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    let in_b = witness.keys();
    for (phone, keys) in &in_b {
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            2,
            "{phone}: another job, another key: {keys:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_window_of_a_list_holds() {
    let mut world = World::start(|_| {}).await;
    world.set(
        "providers.kakaotalk.rate_limit",
        toml::Value::Array(vec!["3/s".into(), "5/2s".into()]),
    );
    let people = crowd(12);
    let csv = world.with_crowd(&people);
    let output = world.msgsend(&campaign_args(&csv, &[])).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut arrivals: Vec<jiff::Timestamp> = world
        .recorded()
        .iter()
        .map(|m| m.at.parse().unwrap())
        .collect();
    arrivals.sort();
    for (count, window_ms) in [(3usize, 1_000i64), (5, 2_000)] {
        for (i, start) in arrivals.iter().enumerate() {
            let inside = arrivals[i..]
                .iter()
                .take_while(|t| t.duration_since(*start).as_millis() < i128::from(window_ms))
                .count();
            assert!(inside <= count, "{inside} arrivals within {window_ms} ms");
        }
    }
}

/// A request still out when a stop's grace runs out may reach the provider later: the ledger
/// keeps its slot (its worst case), so an immediate resume cannot crowd the window.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_abandoned_at_the_end_of_the_grace_keeps_its_slot() {
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "10/2s".parse().unwrap();
        config.kakaotalk.faults.stall_rate = 1.0;
        config.kakaotalk.faults.stall_for = Duration::from_millis(3_000);
    })
    .await;
    world
        .set("providers.kakaotalk.rate_limit", "10/2s")
        .set("providers.kakaotalk.timeout", "5s")
        .set("bulk.shutdown_grace", "200ms");
    let people = crowd(10);
    let csv = world.with_crowd(&people);
    let child = world
        .command(&campaign_args(&csv, &["--job-id", "grace"]))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let term_at = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    common::signal(child.id(), "TERM");
    let stopped = output_of_child(child).await;
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    // Still held by the provider (stalled 3 s): each row counts at least one more timeout.
    let mut db = common::sqlite_file(&world.path("state").join("quota.sqlite")).await;
    let earliest: i64 = sqlx::query_scalar("SELECT MIN(arrived_by) FROM quota_rows")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        earliest >= term_at + 5_000_000,
        "an abandoned request was stamped {} ms after TERM",
        (earliest - term_at) / 1000
    );
}
