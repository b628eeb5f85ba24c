//! The delivery path in-process, over real HTTP to the sandbox: the breaker across many sends,
//! and the rate-limit invariant as the provider sees it.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{World, count, message_requests};
use msgsend::delivery::{DeliveryOutcome, MessageKey, Router};
use msgsend::ledger::Ledger;
use msgsend::phone::Phone;
use msgsend::policy::breaker::BreakerState;
use msgsend::provider::http_client;

/// The quota ledger of the world's state directory, as `bulk` and `send` open it.
async fn ledger_of(world: &World) -> Ledger {
    Ledger::open(&world.settings().state_dir).await.unwrap()
}

/// A router for the world's config, its quotas in the world's state_dir.
async fn router_of(world: &World) -> Router {
    let settings = world.settings();
    Router::new(
        &settings,
        &settings.routing,
        http_client(),
        &ledger_of(world).await,
    )
    .unwrap()
}

fn phone(n: usize) -> Phone {
    Phone::parse(&format!("010{:08}", n)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_opens_the_breaker_later_sends_go_straight_to_sms_and_recovery_closes_it() {
    let mut world = World::start(|_| {}).await;
    world
        .set("circuit_breaker.failure_threshold", 3)
        .set("circuit_breaker.open_timeout", "300ms")
        .set("retry.max_attempts", 1);
    let router = router_of(&world).await;
    let kakaotalk = &world.sandbox.kakaotalk;
    let primary = router.channels().next().unwrap();

    kakaotalk.control.down.store(true, Ordering::SeqCst);
    for n in 0..3 {
        let delivery = router.deliver(&phone(n), "hi", &MessageKey::fresh()).await;
        assert!(
            matches!(delivery.outcome, DeliveryOutcome::Fallback { .. }),
            "{delivery:?}"
        );
    }
    assert!(matches!(primary.breaker_state(), BreakerState::Open { .. }));
    assert_eq!(message_requests(kakaotalk), 3);

    // While open, KakaoTalk is not called at all.
    for n in 3..8 {
        let delivery = router.deliver(&phone(n), "hi", &MessageKey::fresh()).await;
        assert!(matches!(delivery.outcome, DeliveryOutcome::Fallback { .. }));
        assert!(
            delivery
                .attempts
                .iter()
                .all(|a| a.channel == msgsend::provider::ProviderKind::Sms)
        );
    }
    assert_eq!(message_requests(kakaotalk), 3);

    // Still down when the half-open probe goes: it fails and the circuit opens again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let delivery = router.deliver(&phone(8), "hi", &MessageKey::fresh()).await;
    assert!(matches!(delivery.outcome, DeliveryOutcome::Fallback { .. }));
    assert_eq!(message_requests(kakaotalk), 4);
    assert!(matches!(primary.breaker_state(), BreakerState::Open { .. }));

    // Back up: the next probe succeeds and closes the circuit; sends use KakaoTalk again.
    kakaotalk.control.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let delivery = router.deliver(&phone(9), "hi", &MessageKey::fresh()).await;
    assert!(
        matches!(delivery.outcome, DeliveryOutcome::Sent { .. }),
        "{delivery:?}"
    );
    assert_eq!(
        primary.breaker_state(),
        BreakerState::Closed { failures: 0 }
    );
    let delivery = router.deliver(&phone(10), "hi", &MessageKey::fresh()).await;
    assert!(matches!(delivery.outcome, DeliveryOutcome::Sent { .. }));
}

fn assert_all_sent(outcomes: &[DeliveryOutcome]) {
    let not_sent: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, DeliveryOutcome::Sent { .. }))
        .collect();
    assert!(not_sent.is_empty(), "not sent by the primary: {not_sent:?}");
}

/// Sends `messages` through the router from `workers` concurrent tasks.
async fn deliver_concurrently(
    router: Arc<Router>,
    messages: usize,
    workers: usize,
) -> Vec<DeliveryOutcome> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (router, next) = (router.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= messages {
                    return outcomes;
                }
                outcomes.push(
                    router
                        .deliver(&phone(n), "hi", &MessageKey::fresh())
                        .await
                        .outcome,
                );
            }
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strict_provider_never_answers_429_even_at_the_start() {
    // The sandbox enforces exactly what msgsend is configured with. 60 messages at 20/s from
    // 20 workers: the opening burst and every later window must stay within 20.
    let mut world = World::start(|config| config.kakaotalk.rate = "20/s".parse().unwrap()).await;
    world
        .set("providers.kakaotalk.rate_limit", "20/s")
        .set("routing.fallback", "sms");
    let router = Arc::new(
        Router::new(
            &world.settings(),
            &without_fallback(&world),
            http_client(),
            &ledger_of(&world).await,
        )
        .unwrap(),
    );
    let outcomes = deliver_concurrently(router, 60, 20).await;
    assert_all_sent(&outcomes);
    let stats = &world.sandbox.kakaotalk.stats;
    assert_eq!(count(&stats.rate_limited), 0);
    assert_eq!(count(&stats.accepted), 60);
    assert!(
        count(&stats.peak_window) <= 20,
        "peak {}",
        count(&stats.peak_window)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_credentials_pool_their_quotas_and_each_keeps_its_own() {
    let credentials = [("a", "pa"), ("b", "pb"), ("c", "pc")];
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "10/s".parse().unwrap();
        config.kakaotalk.credentials = credentials
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
    })
    .await;
    let list: Vec<toml::Value> = credentials
        .iter()
        .map(|(u, p)| {
            let mut table = toml::Table::new();
            table.insert("username".into(), (*u).into());
            table.insert("password".into(), (*p).into());
            toml::Value::Table(table)
        })
        .collect();
    if let Some(provider) = world
        .config
        .get_mut("providers")
        .and_then(|p| p.get_mut("kakaotalk"))
        .and_then(|k| k.as_table_mut())
    {
        provider.remove("username");
        provider.remove("password");
    }
    world
        .set("providers.kakaotalk.credentials", list)
        .set("providers.kakaotalk.rate_limit", "10/s");
    let router = Arc::new(
        Router::new(
            &world.settings(),
            &without_fallback(&world),
            http_client(),
            &ledger_of(&world).await,
        )
        .unwrap(),
    );
    // 60 messages need 2 windows at 30/s pooled; a single credential would need 6.
    let outcomes = deliver_concurrently(router, 60, 30).await;
    assert_all_sent(&outcomes);
    let stats = &world.sandbox.kakaotalk.stats;
    assert_eq!(count(&stats.rate_limited), 0);
    assert!(count(&stats.peak_window) <= 10);
    let recorded = world.recorded();
    for (user, _) in credentials {
        let used = recorded.iter().filter(|m| m.credential == user).count();
        assert_eq!(used, 20, "credential {user} carried {used} of 60");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spillover_sends_what_the_primary_cannot_take_in_time_through_sms() {
    let mut world = World::start(|config| config.kakaotalk.rate = "5/s".parse().unwrap()).await;
    world
        .set("providers.kakaotalk.rate_limit", "5/s")
        .set("routing.strategy", "spillover")
        .set("routing.acquire_timeout", "100ms");
    let router = Arc::new(router_of(&world).await);
    let outcomes = deliver_concurrently(router, 30, 10).await;
    let sent = outcomes
        .iter()
        .filter(|o| matches!(o, DeliveryOutcome::Sent { .. }))
        .count();
    let fallback = outcomes
        .iter()
        .filter(|o| matches!(o, DeliveryOutcome::Fallback { .. }))
        .count();
    assert_eq!(sent + fallback, 30);
    assert!(
        sent >= 5 && fallback >= 10,
        "sent {sent}, fallback {fallback}"
    );
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 0);
}

/// A world of KakaoTalk at 50/s and SMS at 100/s (the sandbox as strict as the config), under
/// spillover with a primary wait far longer than any send needs: `acquire_timeout = "5s"`.
async fn spillover_world() -> (World, Arc<Router>) {
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "50/s".parse().unwrap();
        config.sms.rate = "100/s".parse().unwrap();
    })
    .await;
    world
        .set("providers.kakaotalk.rate_limit", "50/s")
        .set("providers.sms.rate_limit", "100/s")
        .set("routing.strategy", "spillover")
        .set("routing.acquire_timeout", "5s");
    let router = router_of(&world).await;
    (world, Arc::new(router))
}

#[tokio::test(flavor = "multi_thread")]
async fn spillover_with_few_sends_in_flight_runs_on_both_quotas_without_waiting_for_the_timeout() {
    let (world, router) = spillover_world().await;
    // Four sends in flight never wait 5 s for KakaoTalk: waiting for the primary first, SMS
    // would carry nothing. Taking whichever has a slot first, each carries about its quota's
    // share of the sum (a third and two thirds), which is what a campaign finishing in
    // N / (sum of quotas) looks like.
    let n = 300;
    let outcomes = deliver_concurrently(router, n, 4).await;
    let sent = outcomes
        .iter()
        .filter(|o| matches!(o, DeliveryOutcome::Sent { .. }))
        .count();
    let fallback = outcomes
        .iter()
        .filter(|o| matches!(o, DeliveryOutcome::Fallback { .. }))
        .count();
    assert_eq!(sent + fallback, n);
    assert!(
        sent >= n / 4 && fallback >= n / 2,
        "KakaoTalk {sent}, SMS {fallback} of {n}"
    );
    for (sim, quota) in [(&world.sandbox.kakaotalk, 50), (&world.sandbox.sms, 100)] {
        assert_eq!(count(&sim.stats.rate_limited), 0);
        assert!(count(&sim.stats.peak_window) <= quota);
    }
    assert_eq!(message_requests(&world.sandbox.kakaotalk), sent as u64);
    assert_eq!(message_requests(&world.sandbox.sms), fallback as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn spillover_leaves_the_fallback_alone_while_the_primary_has_slots_free() {
    let (world, router) = spillover_world().await;
    // Thirty one at a time fit in KakaoTalk's first window (its burst is its quota, 50).
    let outcomes = deliver_concurrently(router, 30, 1).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, DeliveryOutcome::Sent { .. })),
        "{outcomes:?}"
    );
    assert_eq!(message_requests(&world.sandbox.sms), 0);
}

/// The world's routing with no fallback channel.
fn without_fallback(world: &World) -> msgsend::config::RoutingSettings {
    msgsend::config::RoutingSettings {
        fallback: None,
        ..world.settings().routing
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_spilled_to_a_fallback_that_fails_it_for_certain_goes_on_to_the_primary() {
    // The SMS sandbox refuses msgsend's password: every spilled message meets a 401.
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "50/s".parse().unwrap();
        config.sms.credentials = vec![("autoever".into(), "another-password".into())];
    })
    .await;
    world
        .set("providers.kakaotalk.rate_limit", "50/s")
        .set("routing.strategy", "spillover");
    let router = router_of(&world).await;
    let outcomes = deliver_concurrently(Arc::new(router), 80, 20).await;
    let delivered = outcomes
        .iter()
        .filter(|o| matches!(o, DeliveryOutcome::Sent { .. }))
        .count();
    assert_eq!(delivered, 80, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_spillover_a_message_sms_cannot_carry_waits_for_kakaotalk_as_long_as_it_takes() {
    let mut world = World::start(|config| config.kakaotalk.rate = "10/s".parse().unwrap()).await;
    world
        .set("providers.kakaotalk.rate_limit", "10/s")
        .set("routing.strategy", "spillover")
        .set("routing.acquire_timeout", "100ms");
    let router = Arc::new(router_of(&world).await);
    // 25 at once on a 10/s quota: most wait far longer than acquire_timeout, and SMS cannot
    // carry an emoji: giving up on KakaoTalk would fail them for certain.
    let tasks: Vec<_> = (0..25)
        .map(|n| {
            let router = router.clone();
            tokio::spawn(async move {
                router
                    .deliver(&phone(n), "hi 😀", &MessageKey::fresh())
                    .await
                    .outcome
            })
        })
        .collect();
    for task in tasks {
        let outcome = task.await.unwrap();
        assert!(
            matches!(outcome, DeliveryOutcome::Sent { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(message_requests(&world.sandbox.sms), 0);
}
