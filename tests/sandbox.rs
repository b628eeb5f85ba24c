//! The sandbox serves SPEC section 4 strictly. These tests speak to it with a plain HTTP client,
//! and run the `msgsend sandbox` binary the way the README tells a newcomer to.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KAKAOTALK_PASSWORD, SMS_PASSWORD, World, count};
use reqwest::StatusCode;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn kakaotalk_accepts_exactly_the_contract() {
    let world = World::start(|config| {
        config
            .kakaotalk
            .faults
            .reject_phones
            .insert("010-9999-0000".into());
    })
    .await;
    let url = format!("{}/kakaotalk-messages", world.sandbox.kakaotalk.base_url());
    let post = |body: serde_json::Value, password: &str| {
        client()
            .post(&url)
            .basic_auth("autoever", Some(password))
            .json(&body)
            .send()
    };
    let ok = post(
        serde_json::json!({"phone": "010-1234-5678", "message": "hi"}),
        KAKAOTALK_PASSWORD,
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.json::<serde_json::Value>().await.unwrap()["messageId"],
        "kt-1"
    );

    let cases = [
        (
            serde_json::json!({"phone": "010-1234-5678", "message": "hi"}),
            "wrong",
            StatusCode::UNAUTHORIZED,
        ),
        (
            serde_json::json!({"phone": "01012345678", "message": "hi"}),
            KAKAOTALK_PASSWORD,
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"phone": "010-1234-5678"}),
            KAKAOTALK_PASSWORD,
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"phone": "010-1234-5678", "message": "hi", "extra": 1}),
            KAKAOTALK_PASSWORD,
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"phone": "010-1234-5678", "message": ""}),
            KAKAOTALK_PASSWORD,
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"phone": "010-9999-0000", "message": "hi"}),
            KAKAOTALK_PASSWORD,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, password, expected) in cases {
        assert_eq!(
            post(body.clone(), password).await.unwrap().status(),
            expected,
            "{body}"
        );
    }
    let form = client()
        .post(&url)
        .basic_auth("autoever", Some(KAKAOTALK_PASSWORD))
        .form(&[("phone", "010-1234-5678"), ("message", "hi")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
    assert_eq!(world.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_accepts_exactly_the_contract() {
    let world = World::start(|_| {}).await;
    let url = format!("{}/sms", world.sandbox.sms.base_url());
    let ok = client()
        .post(&url)
        .query(&[("phone", "010-1234-5678")])
        .basic_auth("autoever", Some(SMS_PASSWORD))
        .form(&[("message", "안녕하세요")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["result"], "OK");
    assert_eq!(body["smsId"], "sms-1");

    let no_phone = client()
        .post(&url)
        .basic_auth("autoever", Some(SMS_PASSWORD))
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_phone.status(), StatusCode::BAD_REQUEST);
    let json_body = client()
        .post(&url)
        .query(&[("phone", "010-1234-5678")])
        .basic_auth("autoever", Some(SMS_PASSWORD))
        .json(&serde_json::json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
    let no_auth = client()
        .post(&url)
        .query(&[("phone", "010-1234-5678")])
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);
    let recorded = world.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].message, "안녕하세요");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_its_limit_it_answers_429_with_retry_after_and_health_counts() {
    let world = World::start(|config| config.sms.rate = "3/10s".parse().unwrap()).await;
    let health = format!("{}/health", world.sandbox.sms.base_url());
    for _ in 0..3 {
        let answer = client()
            .get(&health)
            .basic_auth("autoever", Some(SMS_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let over = client()
        .get(&health)
        .basic_auth("autoever", Some(SMS_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let wrong = client()
        .get(&health)
        .basic_auth("autoever", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(count(&world.sandbox.sms.stats.rate_limited), 1);
    assert_eq!(count(&world.sandbox.sms.stats.peak_window), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_failures_answer_500_and_outages_503() {
    let world = World::start(|config| {
        config.kakaotalk.faults.fail_rate = 1.0;
        config.sms.faults.outage_for = Duration::from_secs(600);
    })
    .await;
    let kakaotalk = client()
        .post(format!(
            "{}/kakaotalk-messages",
            world.sandbox.kakaotalk.base_url()
        ))
        .basic_auth("autoever", Some(KAKAOTALK_PASSWORD))
        .json(&serde_json::json!({"phone": "010-1234-5678", "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kakaotalk.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let sms = client()
        .get(format!("{}/health", world.sandbox.sms.base_url()))
        .basic_auth("autoever", Some(SMS_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(sms.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(world.recorded().is_empty());
}

/// Starts `msgsend sandbox` on free ports; returns the child and the two base URLs it prints.
fn spawn_sandbox_binary(extra: &[&str]) -> (std::process::Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_msgsend"))
        .args([
            "sandbox",
            "--kakaotalk-addr",
            "127.0.0.1:0",
            "--sms-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url_of = |name: &str| {
        let line = lines
            .next()
            .expect("the sandbox prints its addresses")
            .unwrap();
        assert!(line.starts_with(name), "{line}");
        line.split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap()
            .to_string()
    };
    let kakaotalk = url_of("kakaotalk");
    let sms = url_of("sms");
    std::thread::spawn(move || for _ in lines {});
    (child, kakaotalk, sms)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_command_serves_send_and_records_it_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("sent.jsonl");
    let (child, kakaotalk, sms) = spawn_sandbox_binary(&["--record", record.to_str().unwrap()]);
    let config = dir.path().join("msgsend.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.kakaotalk]\nbase_url = \"{kakaotalk}\"\nusername = \"autoever\"\npassword = \"${{KAKAOTALK_PASSWORD}}\"\n\n\
             [providers.sms]\nbase_url = \"{sms}\"\nusername = \"autoever\"\npassword = \"${{SMS_PASSWORD}}\"\n"
        ),
    )
    .unwrap();
    let send = Command::new(env!("CARGO_BIN_EXE_msgsend"))
        .args(["send", "--to", "010 1234 5678", "--message", "hello"])
        .env("MSGSEND_CONFIG", &config)
        .env("KAKAOTALK_PASSWORD", "1234")
        .env("SMS_PASSWORD", "5678")
        .output()
        .unwrap();
    assert_eq!(
        send.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&send.stderr)
    );
    let health = Command::new(env!("CARGO_BIN_EXE_msgsend"))
        .args(["health", "--config", config.to_str().unwrap()])
        .env("KAKAOTALK_PASSWORD", "1234")
        .env("SMS_PASSWORD", "5678")
        .output()
        .unwrap();
    assert_eq!(
        health.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&health.stdout)
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let recorded = msgsend::sandbox::RecordedMessage::read_all(&record).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (
            recorded[0].provider.as_str(),
            recorded[0].phone.as_str(),
            recorded[0].message.as_str()
        ),
        ("kakaotalk", "010-1234-5678", "hello")
    );
}
