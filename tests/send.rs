//! `msgsend send` end to end: the binary against the sandbox over real HTTP on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{KAKAOTALK_PASSWORD, SMS_PASSWORD, World, count, json, stderr, stdout};

const TO: &str = "01012345678";

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_send_is_delivered_by_kakaotalk_with_the_header() {
    let world = World::start(|_| {}).await;
    let output = world
        .msgsend(&[
            "send",
            "--to",
            TO,
            "--name",
            "김민준",
            "--message",
            "쿠폰이 도착했습니다.",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("delivered to 010-1234-5678 via kakaotalk, message id kt-1, 1 attempt"),
        "{text}"
    );
    let recorded = world.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].provider, "kakaotalk");
    assert_eq!(recorded[0].phone, "010-1234-5678");
    assert_eq!(
        recorded[0].message,
        "김민준님, 안녕하세요. 현대 오토에버입니다.\n쿠폰이 도착했습니다."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_result_names_channel_id_and_attempts() {
    let world = World::start(|_| {}).await;
    let output = world
        .msgsend(&[
            "send",
            "--to",
            "+82 10-1234-5678",
            "--name",
            "A",
            "--message",
            "hi",
            "--json",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0));
    let result = json(&output);
    assert_eq!(result["delivered"], true);
    assert_eq!(result["channel"], "kakaotalk");
    assert_eq!(result["fallback"], false);
    assert_eq!(result["message_id"], "kt-1");
    assert_eq!(result["phone"], "010-1234-5678");
    assert_eq!(result["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_server_errors_then_success_take_three_attempts() {
    let world = World::start(|config| config.kakaotalk.faults.fail_first = 2).await;
    let output = world.send_hi(&["--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result = json(&output);
    assert_eq!(result["channel"], "kakaotalk");
    let outcomes: Vec<&str> = result["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["server_error", "server_error", "ok"]);
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 3);
    assert_eq!(count(&world.sandbox.sms.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_is_retried_after_the_retry_after_it_carries() {
    // The sandbox allows 1 request a second; msgsend's own limit is set far higher, so the
    // second send meets a 429 with Retry-After: 1. Its own backoff (10 ms, 20 ms) would run
    // into 429 twice more and fall back to SMS; waiting as told gets through on KakaoTalk.
    let mut world = World::start(|config| config.kakaotalk.rate = "1/s".parse().unwrap()).await;
    world.set("retry.max_attempts", 3);
    // The Retry-After (1 s) is waited for only up to max_delay (SPEC section 7).
    world.set("retry.max_delay", "2s");
    let first = world
        .msgsend(&["send", "--to", TO, "--name", "A", "--message", "one"])
        .await;
    assert_eq!(first.status.code(), Some(0));
    let second = world
        .msgsend(&[
            "send",
            "--to",
            TO,
            "--name",
            "A",
            "--message",
            "two",
            "--json",
        ])
        .await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let result = json(&second);
    assert_eq!(result["channel"], "kakaotalk", "{result}");
    let outcomes: Vec<&str> = result["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["rate_limited", "ok"]);
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kakaotalk_400_is_delivered_by_sms_without_retrying() {
    let world = World::start(|config| {
        config
            .kakaotalk
            .faults
            .reject_phones
            .insert("010-1234-5678".into());
    })
    .await;
    let output = world.send_hi(&[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(
            "delivered to 010-1234-5678 via sms (fallback), message id sms-1, 2 attempts"
        ),
        "{text}"
    );
    assert!(text.contains("kakaotalk #1: rejected HTTP 400"), "{text}");
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 1);
    let recorded = world.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].provider, "sms");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_fallback_a_rejection_is_not_delivered_and_exits_3() {
    let world = World::start(|config| {
        config
            .kakaotalk
            .faults
            .reject_phones
            .insert("010-1234-5678".into());
    })
    .await;
    let output = world.send_hi(&["--no-fallback"]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stdout(&output).starts_with("not delivered to 010-1234-5678: kakaotalk: HTTP 400"),
        "{}",
        stdout(&output)
    );
    assert_eq!(count(&world.sandbox.sms.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_channel_flag_starts_with_sms() {
    let world = World::start(|_| {}).await;
    let output = world.send_hi(&["--channel", "sms"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output).contains("via sms, message id sms-1"),
        "{}",
        stdout(&output)
    );
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_is_not_retried_and_the_provider_is_taken_out() {
    let mut world = World::start(|_| {}).await;
    world.set("providers.kakaotalk.password", "wrong-password");
    let output = world.send_hi(&["--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result = json(&output);
    assert_eq!(result["channel"], "sms");
    assert_eq!(result["attempts"][0]["outcome"], "auth");
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 1);
    assert_eq!(count(&world.sandbox.kakaotalk.stats.unauthorized), 1);
    let log = stderr(&output);
    assert!(
        log.contains("rejected the credentials of autoever"),
        "{log}"
    );
    assert!(!log.contains("wrong-password") && !stdout(&output).contains("wrong-password"));
}

/// SPEC section 8: a timeout leaves open whether KakaoTalk took the message. It is asked
/// again under the same key (KakaoTalk honours keys), and when every attempt times out the
/// message is `uncertain`: never handed to SMS, which could deliver it a second time.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_are_retried_under_the_key_and_never_handed_to_the_fallback() {
    let mut world =
        World::start(|config| config.kakaotalk.faults.latency = Duration::from_millis(800)).await;
    world
        .set("providers.kakaotalk.timeout", "100ms")
        .set("retry.max_attempts", 2);
    let output = world.send_hi(&["--json"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let result = json(&output);
    let outcomes: Vec<&str> = result["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["timeout", "timeout"], "{result}");
    assert_eq!(result["delivered"], false);
    assert_eq!(common::message_requests(&world.sandbox.sms), 0);
    // Without keys, the first timeout already ends it.
    world.set("providers.kakaotalk.idempotency_header", "");
    let output = world.send_hi(&["--json"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(json(&output)["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(common::message_requests(&world.sandbox.sms), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_opens_the_breaker_with_an_alert_and_falls_back() {
    let mut world =
        World::start(|config| config.kakaotalk.faults.outage_for = Duration::from_secs(600)).await;
    world
        .set("circuit_breaker.failure_threshold", 2)
        .set("retry.max_attempts", 3);
    let output = world.send_hi(&["--json", "--log-format", "json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result = json(&output);
    assert_eq!(result["channel"], "sms");
    // Two 503s open the circuit; the third attempt is never made.
    assert_eq!(common::message_requests(&world.sandbox.kakaotalk), 2);
    let alert = stderr(&output)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["alert"] == "provider_down")
        .expect("a provider_down alert");
    assert_eq!(alert["level"], "WARN");
    assert_eq!(alert["provider"], "kakaotalk");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_channels_failing_is_not_delivered_and_exits_3() {
    let mut world = World::start(|config| {
        config.kakaotalk.faults.outage_for = Duration::from_secs(600);
        config.sms.faults.outage_for = Duration::from_secs(600);
    })
    .await;
    world.set("retry.max_attempts", 2);
    let output = world.send_hi(&[]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stdout(&output)
            .starts_with("not delivered to 010-1234-5678: kakaotalk: HTTP 503; sms: HTTP 503"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_config_error_exits_2_before_any_request() {
    let cases: [(&str, toml::Value, &str); 5] = [
        (
            "providers.kakaotalk.timout",
            "5s".into(),
            "providers.kakaotalk.timout: unknown field",
        ),
        (
            "retry.max_attempts",
            "three".into(),
            "retry.max_attempts: invalid type",
        ),
        (
            "providers.sms.timeout",
            "5 sec".into(),
            "providers.sms.timeout: invalid value",
        ),
        (
            "providers.kakaotalk.rate_limit",
            "100/fortnight".into(),
            "providers.kakaotalk.rate_limit: invalid value",
        ),
        (
            "providers.sms.password",
            "${MSGSEND_TEST_UNSET_VARIABLE}".into(),
            "environment variable MSGSEND_TEST_UNSET_VARIABLE is not set",
        ),
    ];
    for (key, value, expected) in cases {
        let mut world = World::start(|_| {}).await;
        world.set(key, value);
        let output = world.send_hi(&[]).await;
        let log = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{key}: {log}");
        assert!(
            log.contains("msgsend.toml:"),
            "{key}: the file is named: {log}"
        );
        assert!(log.contains(expected), "{key}: {log}");
        assert_eq!(
            count(&world.sandbox.kakaotalk.stats.requests)
                + count(&world.sandbox.sms.stats.requests),
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_and_send_nothing() {
    let world = World::start(|_| {}).await;
    for args in [
        vec![
            "send",
            "--to",
            "02-123-4567",
            "--name",
            "A",
            "--message",
            "hi",
        ],
        vec!["send", "--to", TO, "--message", "hi"],
        vec!["send", "--to", TO, "--name", "A", "--message", "{coupon}"],
        vec![
            "send",
            "--to",
            TO,
            "--name",
            "A",
            "--message",
            "unclosed {name",
        ],
        vec![
            "send",
            "--to",
            TO,
            "--name",
            "A",
            "--message",
            "hi",
            "--channel",
            "fax",
        ],
    ] {
        let output = world.msgsend(&args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        count(&world.sandbox.kakaotalk.stats.requests) + count(&world.sandbox.sms.stats.requests),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_never_appear_in_any_output() {
    let mut world = World::start(|config| config.kakaotalk.faults.fail_first = 1).await;
    world.set("providers.sms.password", "wrong-sms-password");
    let runs = [
        world
            .msgsend(&[
                "-vv",
                "send",
                "--to",
                TO,
                "--name",
                "A",
                "--message",
                "hi",
                "--channel",
                "sms",
            ])
            .await,
        world
            .msgsend(&[
                "-vv",
                "--log-format",
                "json",
                "send",
                "--to",
                TO,
                "--name",
                "A",
                "--message",
                "hi",
                "--json",
            ])
            .await,
        world.msgsend(&["config", "check"]).await,
        world.msgsend(&["health", "--json"]).await,
    ];
    for output in &runs {
        for secret in [KAKAOTALK_PASSWORD, SMS_PASSWORD, "wrong-sms-password"] {
            assert!(
                !stdout(output).contains(secret),
                "stdout shows a password: {}",
                stdout(output)
            );
            assert!(
                !stderr(output).contains(secret),
                "stderr shows a password: {}",
                stderr(output)
            );
        }
    }
    assert!(
        stdout(&runs[2]).contains("password = \"(redacted)\""),
        "{}",
        stdout(&runs[2])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_mask_the_phone() {
    let world = World::start(|_| {}).await;
    let output = world
        .msgsend(&["-v", "send", "--to", TO, "--name", "A", "--message", "hi"])
        .await;
    let log = stderr(&output);
    assert!(log.contains("010-****-5678"), "{log}");
    assert!(
        !log.contains("010-1234-5678") && !log.contains("01012345678"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_200_that_confirms_nothing_is_never_handed_to_kakaotalk() {
    let world = World::start(|c| c.sms.faults.garbage_rate = 1.0).await;
    let output = world.send_hi(&["--channel", "sms", "--json"]).await;
    let result = json(&output);
    // Asked again under its key, SMS answers again (the sandbox replays what it accepted, in
    // full): delivered, once, and KakaoTalk never asked.
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(result["channel"], "sms", "{result}");
    let providers: Vec<String> = world.recorded().into_iter().map(|m| m.provider).collect();
    assert_eq!(
        providers,
        ["sms"],
        "SMS has the message; KakaoTalk must not get it too"
    );
}
