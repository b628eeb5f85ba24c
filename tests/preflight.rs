//! The start-up health checks (SPEC section 3, "Pre-flight"; the seed's diagrams 6 and 8), through
//! the binary against the sandbox on 127.0.0.1: a refused credential or a provider that is down
//! is found before the first message, a busy quota is not a failure, the probes take rate-limit
//! slots, and a circuit that opens mid-run alerts with a health probe's result.

mod common;

use std::process::Output;
use std::time::Duration;

use axum::http::StatusCode;
use common::receiver::Receiver;
use common::{World, count, json, message_requests, stderr};

/// A world with the pre-flight on (the default; the shared test config turns it off) and
/// `people` recipients in their 20s; returns the CSV's path.
fn world_with_people(world: &mut World, people: usize) -> String {
    world.set("routing.preflight", true);
    let csv = world.path("people.csv");
    std::fs::write(&csv, common::people_csv("7300", people, "\n")).unwrap();
    csv.display().to_string()
}

async fn bulk(world: &World, csv: &str, extra: &[&str]) -> Output {
    let mut extra = extra.to_vec();
    extra.extend(["--summary-json", "-"]);
    world.msgsend(&common::campaign_args(csv, &extra)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_kakaotalk_password_sends_nothing_to_kakaotalk_and_alerts_once() {
    let mut world = World::start(|_| {}).await;
    let csv = world_with_people(&mut world, 10);
    world.set("providers.kakaotalk.password", "not-the-password");
    let output = bulk(&world, &csv, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["fallback"], 10, "{summary}");
    assert_eq!(summary["preflight"]["kakaotalk"], "credentials_rejected");
    assert_eq!(summary["preflight"]["sms"], "healthy");
    assert_eq!(message_requests(&world.sandbox.kakaotalk), 0);
    let log = stderr(&output);
    assert_eq!(
        log.matches("alert=\"provider_down\"").count() + log.matches("alert=provider_down").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_down_at_start_starts_with_its_circuit_open_and_recovers() {
    let mut world = World::start(|c| {
        c.kakaotalk.faults.outage_for = Duration::from_millis(300);
        c.sms.rate = "10/s".parse().unwrap();
    })
    .await;
    let csv = world_with_people(&mut world, 20);
    world
        .set("providers.sms.rate_limit", "10/s")
        .set("circuit_breaker.open_timeout", "600ms");
    let output = bulk(&world, &csv, &["--concurrency", "2"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["preflight"]["kakaotalk"], "unhealthy", "{summary}");
    // No message request met the outage: the circuit was open until the half-open probe.
    let kakaotalk = &summary["providers"]["kakaotalk"];
    assert!(
        kakaotalk["errors"].get("server_error").is_none(),
        "{summary}"
    );
    assert!(summary["fallback"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["sent"].as_u64().unwrap() > 0,
        "recovered: {summary}"
    );
    let log = stderr(&output);
    assert!(log.contains("provider_recovered"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_quota_at_pre_flight_is_not_a_failure() {
    let mut world =
        World::start(|c| c.kakaotalk.faults.storm_for = Duration::from_millis(200)).await;
    let csv = world_with_people(&mut world, 5);
    world.set("retry.max_delay", "2s");
    let output = bulk(&world, &csv, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["preflight"]["kakaotalk"], "busy", "{summary}");
    assert_eq!(summary["sent"], 5, "the circuit stayed closed: {summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pre_flight_or_in_a_dry_run_no_probe_is_made() {
    let mut world = World::start(|_| {}).await;
    let csv = world_with_people(&mut world, 3);
    let skipped = bulk(&world, &csv, &["--no-preflight"]).await;
    assert_eq!(skipped.status.code(), Some(0), "{}", stderr(&skipped));
    assert_eq!(json(&skipped)["preflight"]["kakaotalk"], "skipped");
    let dry = world
        .msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--message",
            "hi",
            "--csv",
            &csv,
            "--dry-run",
        ])
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    for sim in [&world.sandbox.kakaotalk, &world.sandbox.sms] {
        assert_eq!(count(&sim.stats.health_checks), 0);
    }
    let sent = world.send_hi(&["--no-preflight"]).await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.health_checks), 0);
    let probed = world.send_hi(&[]).await;
    assert_eq!(probed.status.code(), Some(0), "{}", stderr(&probed));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.health_checks), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probes_take_rate_limit_slots_so_a_strict_provider_never_answers_429() {
    let mut world = World::start(|c| {
        c.kakaotalk.rate = "5/s".parse().unwrap();
        c.sms.rate = "5/s".parse().unwrap();
    })
    .await;
    let csv = world_with_people(&mut world, 12);
    world
        .set("providers.kakaotalk.rate_limit", "5/s")
        .set("providers.sms.rate_limit", "5/s");
    let output = bulk(&world, &csv, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.health_checks), 1);
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 0);
    assert_eq!(json(&output)["sent"], 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_opening_mid_run_alerts_with_a_health_probe() {
    let hook = Receiver::start(StatusCode::OK).await;
    let mut world = World::start(|_| {}).await;
    let csv = world_with_people(&mut world, 10);
    world
        .set("alerts.webhook", hook.url())
        .set("circuit_breaker.failure_threshold", 2);
    world
        .sandbox
        .kakaotalk
        .control
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Pre-flight off here: the circuit is to open on failed sends, mid-run.
    let output = bulk(&world, &csv, &["--no-preflight"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("health probe: unhealthy (HTTP 503)"), "{log}");
    let alerts: Vec<serde_json::Value> = hook
        .received()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .filter(|a: &serde_json::Value| a["alert"] == "provider_down")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["health"], "unhealthy (HTTP 503)");
}
