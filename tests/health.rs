//! `msgsend health`: healthy, credentials rejected, unreachable, and what it exits with.

mod common;

use std::time::Duration;

use common::{World, count, json, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn all_providers_healthy_exits_0_with_a_table() {
    let world = World::start(|_| {}).await;
    let output = world.msgsend(&["health"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let table = stdout(&output);
    assert!(
        table.lines().next().unwrap().starts_with("PROVIDER"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|line| line.contains("healthy"))
            .count(),
        2,
        "{table}"
    );
    assert_eq!(count(&world.sandbox.kakaotalk.stats.health_checks), 1);
    assert_eq!(count(&world.sandbox.sms.stats.health_checks), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_credentials_and_outages_exit_4_and_say_why() {
    let mut world =
        World::start(|config| config.sms.faults.outage_for = Duration::from_secs(600)).await;
    world.set("providers.kakaotalk.password", "wrong");
    let output = world.msgsend(&["health", "--json"]).await;
    assert_eq!(output.status.code(), Some(4));
    let reports = json(&output);
    assert_eq!(reports[0]["provider"], "kakaotalk");
    assert_eq!(reports[0]["status"], "credentials_rejected");
    assert_eq!(reports[0]["detail"], "HTTP 401");
    assert_eq!(reports[1]["provider"], "sms");
    assert_eq!(reports[1]["status"], "unhealthy");
    assert_eq!(reports[1]["detail"], "HTTP 503");
    // The state a campaign started now would begin in, and each provider's role.
    assert_eq!(reports[0]["run_state"], "disabled");
    assert_eq!(reports[0]["role"], "primary");
    assert_eq!(reports[1]["run_state"], "opens");
    assert_eq!(reports[1]["role"], "fallback");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_slow_provider_is_unhealthy() {
    let mut world = World::start(|config| config.sms.faults.latency = Duration::from_secs(2)).await;
    // A port nobody listens on: bind one, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    world
        .set("providers.kakaotalk.base_url", format!("http://{closed}"))
        .set("providers.sms.timeout", "200ms");
    let output = world.msgsend(&["health", "--json"]).await;
    assert_eq!(output.status.code(), Some(4));
    let reports = json(&output);
    assert_eq!(reports[0]["detail"], "connection refused");
    assert_eq!(reports[1]["detail"], "timeout");
}
