//! The fault suite: campaigns against a sandbox that hangs, answers slowly, cuts answers off,
//! answers garbage or storms with 429s. Whatever the fault, the run ends, every eligible
//! recipient ends in one recorded state, and nobody receives the message twice. (A provider
//! going down and coming back, and both providers down at once, are in `operations.rs` and
//! `bulk.rs`.)

mod common;

use std::time::Duration;

use common::{assert_never_twice, campaign_under};

/// SPEC section 8: a timeout leaves open whether the provider took the message, so the
/// recipients whose requests timed out are `uncertain`, never handed to SMS; the timeouts open
/// the circuit, and the recipients after that go to SMS without touching KakaoTalk.
#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_primary_leaves_its_recipients_uncertain_and_opens_its_circuit() {
    let (world, crowd, summary, received) = campaign_under(
        40,
        |c| c.kakaotalk.faults.latency = Duration::from_secs(2),
        &[
            ("providers.kakaotalk.timeout", "150ms".into()),
            ("retry.max_attempts", 2.into()),
            ("bulk.concurrency", 1.into()),
        ],
    )
    .await;
    assert_never_twice(&received);
    let uncertain = summary["uncertain"].as_u64().unwrap();
    let fallback = summary["fallback"].as_u64().unwrap();
    assert!(uncertain > 0 && fallback > 0, "{summary}");
    assert_eq!(
        uncertain + fallback,
        crowd.eligible.len() as u64,
        "{summary}"
    );
    assert!(
        summary["providers"]["kakaotalk"]["errors"]["timeout"]
            .as_u64()
            .unwrap()
            > 0
    );
    let by_sms = world
        .recorded()
        .iter()
        .filter(|m| m.provider == "sms")
        .count();
    assert_eq!(by_sms as u64, fallback);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_just_inside_the_timeout_are_successes_not_retries() {
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| c.kakaotalk.faults.latency = Duration::from_millis(120),
        &[("providers.kakaotalk.timeout", "400ms".into())],
    )
    .await;
    assert_eq!(summary["sent"], crowd.eligible.len() as u64, "{summary}");
    assert_eq!(summary["retries"], 0);
    assert_never_twice(&received);
}

/// A provider that honours idempotency keys (the sandbox does, SPEC section 4): an answer cut
/// off after its 200 is asked again under the same key, the provider answers the first answer
/// again, and the message is delivered once.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_cut_off_after_200_is_asked_again_under_its_key_and_delivered_once() {
    // Lost answers count for the breaker; a high threshold keeps the circuit closed, so the
    // retries are what this test sees (with the default, 5 lost answers in a row open it and
    // the rest are `uncertain`, as `without_keys_…` below checks without keys).
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| c.kakaotalk.faults.reset_rate = 0.4,
        &[("circuit_breaker.failure_threshold", 1000.into())],
    )
    .await;
    assert_never_twice(&received);
    assert_eq!(received.len(), crowd.eligible.len());
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");
    // Retried under its key, each lost answer is answered again: all sent, none uncertain but
    // by the odds of three lost answers in a row (0.4³ each).
    assert!(
        summary["sent"].as_u64().unwrap() > summary["uncertain"].as_u64().unwrap(),
        "{summary}"
    );
    assert_eq!(
        summary["sent"].as_u64().unwrap() + summary["uncertain"].as_u64().unwrap(),
        crowd.eligible.len() as u64,
        "{summary}"
    );
    assert_eq!(summary["fallback"], 0);
}

/// Without keys (`idempotency_header = ""`), an answer cut off is not asked again: those
/// recipients are `uncertain`, not resent and not handed to SMS.
#[tokio::test(flavor = "multi_thread")]
async fn without_keys_an_answer_cut_off_after_200_is_not_sent_again() {
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| c.kakaotalk.faults.reset_rate = 0.4,
        &[
            ("providers.kakaotalk.idempotency_header", "".into()),
            // Lost answers count for the breaker: kept closed, so every recipient meets the
            // fault rather than the fallback.
            ("circuit_breaker.failure_threshold", 1000.into()),
        ],
    )
    .await;
    assert_never_twice(&received);
    assert_eq!(received.len(), crowd.eligible.len());
    let uncertain = summary["uncertain"].as_u64().unwrap();
    assert!(uncertain > 0, "{summary}");
    assert_eq!(
        summary["sent"].as_u64().unwrap() + uncertain,
        crowd.eligible.len() as u64,
        "{summary}"
    );
    assert_eq!(summary["fallback"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_with_a_body_that_is_not_json_is_never_retried() {
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| {
            c.kakaotalk.faults.garbage_rate = 0.5;
            c.sms.faults.garbage_rate = 0.5;
            c.kakaotalk.faults.reject_phones = ["010-5000-0010".to_string()].into();
        },
        &[],
    )
    .await;
    assert_never_twice(&received);
    // KakaoTalk's 200 is its success whatever the body; SMS's needs {"result": "OK"}, so the
    // one phone KakaoTalk rejects may end failed, but was sent to SMS once at most.
    assert!(
        summary["sent"].as_u64().unwrap() >= crowd.eligible.len() as u64 - 1,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_with_retry_after_is_waited_out() {
    // A retry waits for Retry-After (1 s here) only up to [retry] max_delay (SPEC section 7).
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| c.kakaotalk.faults.storm_for = Duration::from_millis(300),
        &[("retry.max_delay", "2s".into())],
    )
    .await;
    assert_never_twice(&received);
    assert_eq!(received.len(), crowd.eligible.len());
    assert!(
        summary["providers"]["kakaotalk"]["errors"]["rate_limited"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Retry-After: 1 s outlasts the storm, so the second attempt goes through.
    assert_eq!(summary["sent"], crowd.eligible.len() as u64, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_longer_than_max_delay_sends_to_the_fallback_at_once() {
    // The storm answers Retry-After: 1 s; the test config's max_delay is 50 ms.
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| c.kakaotalk.faults.storm_for = Duration::from_secs(30),
        &[],
    )
    .await;
    assert_never_twice(&received);
    assert_eq!(
        summary["fallback"],
        crowd.eligible.len() as u64,
        "{summary}"
    );
    // One request each: no retry waited for the provider's day.
    assert_eq!(
        summary["providers"]["kakaotalk"]["requests"],
        crowd.eligible.len() as u64,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_without_retry_after_falls_back_once_retries_are_spent() {
    let (_, crowd, summary, received) = campaign_under(
        40,
        |c| {
            c.kakaotalk.faults.storm_for = Duration::from_secs(30);
            c.kakaotalk.faults.storm_without_retry_after = true;
        },
        &[],
    )
    .await;
    assert_never_twice(&received);
    assert_eq!(
        summary["fallback"],
        crowd.eligible.len() as u64,
        "{summary}"
    );
}
