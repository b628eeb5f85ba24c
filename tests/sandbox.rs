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

/// POSTs one SMS with `message` to `world`'s sandbox; returns the status and the body.
async fn post_sms(world: &World, message: &str) -> (StatusCode, String) {
    let answer = client()
        .post(format!("{}/sms", world.sandbox.sms.base_url()))
        .query(&[("phone", "010-1234-5678")])
        .basic_auth("autoever", Some(SMS_PASSWORD))
        .form(&[("message", message)])
        .send()
        .await
        .unwrap();
    (answer.status(), answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_with_a_character_outside_ks_x_1001_is_answered_400_and_not_delivered() {
    let world = World::start(|_| {}).await;
    // '똠' is one of the Hangul syllables only CP949 encodes; an emoji has no Korean encoding.
    for message in ["똠양꿍 할인", "할인 쿠폰 도착 😀"] {
        assert_eq!(
            post_sms(&world, message).await,
            (
                StatusCode::BAD_REQUEST,
                "not representable in EUC-KR".to_string()
            ),
            "{message}"
        );
    }
    assert!(world.recorded().is_empty());
    assert_eq!(count(&world.sandbox.sms.stats.rejected), 2);
    assert_eq!(count(&world.sandbox.sms.stats.accepted), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_of_2000_euc_kr_bytes_is_delivered_and_one_of_2001_is_answered_400() {
    let world = World::start(|_| {}).await;
    let longest = "가".repeat(1000);
    assert_eq!(post_sms(&world, &longest).await.0, StatusCode::OK);
    // 1,001 characters, so the character limit refuses it too: the reason shows that its bytes
    // were counted (and first).
    let (status, reason) = post_sms(&world, &format!("{longest}a")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason, "message too long: over 2000 EUC-KR bytes");
    let recorded = world.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].message, longest);
    assert_eq!(count(&world.sandbox.sms.stats.rejected), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kakaotalk_delivers_what_sms_cannot_encode() {
    let world = World::start(|_| {}).await;
    let answer = client()
        .post(format!(
            "{}/kakaotalk-messages",
            world.sandbox.kakaotalk.base_url()
        ))
        .basic_auth("autoever", Some(KAKAOTALK_PASSWORD))
        .json(&serde_json::json!({"phone": "010-1234-5678", "message": "똠양꿍 😀"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let recorded = world.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].message, "똠양꿍 😀");
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

/// POSTs one KakaoTalk message to `world`'s sandbox as `user`, with `key` as its
/// `Idempotency-Key` if given.
async fn post_kakaotalk(
    world: &World,
    user: &str,
    password: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(format!(
            "{}/kakaotalk-messages",
            world.sandbox.kakaotalk.base_url()
        ))
        .basic_auth(user, Some(password))
        .json(&serde_json::json!({"phone": "010-1234-5678", "message": "hi"}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// An answer's status, `Idempotent-Replayed` header and body.
async fn read(answer: reqwest::Response) -> (StatusCode, Option<String>, String) {
    let replayed = answer
        .headers()
        .get("idempotent-replayed")
        .map(|value| value.to_str().unwrap().to_string());
    (answer.status(), replayed, answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_an_accepted_key_gets_the_first_answer_again_and_is_recorded_once() {
    let world = World::start(|_| {}).await;
    let first =
        read(post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, Some("job-1:a")).await).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.1, None, "a first answer is no replay");
    assert_eq!(first.2, r#"{"messageId":"kt-1"}"#);
    let again =
        read(post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, Some("job-1:a")).await).await;
    assert_eq!(again, (StatusCode::OK, Some("true".into()), first.2));
    // Without a key, or with another one, the same message is delivered again.
    let other =
        read(post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, Some("job-1:b")).await).await;
    assert_eq!(
        other,
        (StatusCode::OK, None, r#"{"messageId":"kt-2"}"#.into())
    );
    let none = read(post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, None).await).await;
    assert_eq!(none.2, r#"{"messageId":"kt-3"}"#);

    // SMS keeps its keys too, and replays its own answer.
    let sms = |key: &'static str| {
        client()
            .post(format!("{}/sms", world.sandbox.sms.base_url()))
            .query(&[("phone", "010-1234-5678")])
            .basic_auth("autoever", Some(SMS_PASSWORD))
            .header("Idempotency-Key", key)
            .form(&[("message", "hi")])
            .send()
    };
    let first_sms = read(sms("job-1:a").await.unwrap()).await;
    assert_eq!(first_sms.2, r#"{"result":"OK","smsId":"sms-1"}"#);
    let again_sms = read(sms("job-1:a").await.unwrap()).await;
    assert_eq!(
        again_sms,
        (StatusCode::OK, Some("true".into()), first_sms.2)
    );

    let ids: Vec<String> = world.recorded().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["kt-1", "kt-2", "kt-3", "sms-1"]);
    let stats = &world.sandbox.kakaotalk.stats;
    assert_eq!((count(&stats.accepted), count(&stats.replayed)), (3, 1));
    assert_eq!(count(&world.sandbox.sms.stats.replayed), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_counts_against_the_rate_window_like_any_request() {
    let world = World::start(|config| config.kakaotalk.rate = "2/10s".parse().unwrap()).await;
    let post = || post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, Some("k"));
    assert_eq!(read(post().await).await.1, None);
    assert_eq!(read(post().await).await.1.as_deref(), Some("true"));
    let over = post().await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(over.headers().contains_key("retry-after"));
    assert!(!over.headers().contains_key("idempotent-replayed"));
    let stats = &world.sandbox.kakaotalk.stats;
    assert_eq!(count(&stats.peak_window), 3);
    assert_eq!(count(&stats.rate_limited), 1);
    assert_eq!(count(&stats.replayed), 1);
    assert_eq!(world.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_from_another_credential_is_another_key() {
    let world = World::start(|config| {
        config
            .kakaotalk
            .credentials
            .push(("second".into(), "second-pw".into()));
    })
    .await;
    let first = read(post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, Some("k")).await).await;
    let second = read(post_kakaotalk(&world, "second", "second-pw", Some("k")).await).await;
    assert_eq!(
        first,
        (StatusCode::OK, None, r#"{"messageId":"kt-1"}"#.into())
    );
    assert_eq!(
        second,
        (StatusCode::OK, None, r#"{"messageId":"kt-2"}"#.into())
    );
    let credentials: Vec<String> = world.recorded().into_iter().map(|m| m.credential).collect();
    assert_eq!(credentials, ["autoever", "second"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_answer_is_not_remembered_so_the_key_is_processed_afresh() {
    let world = World::start(|config| config.kakaotalk.faults.fail_first = 1).await;
    let post =
        |key: &'static str| post_kakaotalk(&world, "autoever", KAKAOTALK_PASSWORD, Some(key));
    let failed = read(post("k").await).await;
    assert_eq!(
        (failed.0, failed.1),
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    );
    let fresh = read(post("k").await).await;
    assert_eq!(
        fresh,
        (StatusCode::OK, None, r#"{"messageId":"kt-1"}"#.into())
    );
    let replayed = read(post("k").await).await;
    assert_eq!(replayed, (StatusCode::OK, Some("true".into()), fresh.2));

    // A 400 is not remembered either.
    let url = format!("{}/kakaotalk-messages", world.sandbox.kakaotalk.base_url());
    let bad_phone = client()
        .post(&url)
        .basic_auth("autoever", Some(KAKAOTALK_PASSWORD))
        .header("Idempotency-Key", "k2")
        .json(&serde_json::json!({"phone": "01012345678", "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_phone.status(), StatusCode::BAD_REQUEST);
    let fixed = read(post("k2").await).await;
    assert_eq!(
        fixed,
        (StatusCode::OK, None, r#"{"messageId":"kt-2"}"#.into())
    );
    assert_eq!(world.recorded().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_with_one_key_at_the_same_time_deliver_it_once() {
    let world = World::start(|_| {}).await;
    let world = &world;
    for round in 0..10 {
        let key = format!("race-{round}");
        let answers = futures_util::future::join_all((0..8).map(|_| async {
            read(post_kakaotalk(world, "autoever", KAKAOTALK_PASSWORD, Some(&key)).await).await
        }))
        .await;
        let bodies: std::collections::HashSet<&str> =
            answers.iter().map(|(_, _, body)| body.as_str()).collect();
        assert_eq!(bodies.len(), 1, "one answer for one key: {answers:?}");
        assert!(answers.iter().all(|(status, ..)| *status == StatusCode::OK));
        let replays = answers
            .iter()
            .filter(|(_, replayed, _)| replayed.is_some())
            .count();
        assert_eq!(replays, 7, "{answers:?}");
    }
    assert_eq!(world.recorded().len(), 10);
    assert_eq!(count(&world.sandbox.kakaotalk.stats.accepted), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overlong_or_empty_key_is_answered_400() {
    let world = &World::start(|_| {}).await;
    let post = |key: String| async move {
        post_kakaotalk(world, "autoever", KAKAOTALK_PASSWORD, Some(&key))
            .await
            .status()
    };
    assert_eq!(post("x".repeat(257)).await, StatusCode::BAD_REQUEST);
    assert_eq!(post(String::new()).await, StatusCode::BAD_REQUEST);
    assert_eq!(post("x".repeat(256)).await, StatusCode::OK);
    assert_eq!(world.recorded().len(), 1);
}

/// Sends one KakaoTalk message over a bare connection, waits `wait` for an answer that does not
/// come, and hangs up: a client that gave up, whose connection the sandbox sees closed (a
/// pooling client may keep it open, which would not test that the request outlives it).
async fn post_and_hang_up(world: &World, key: Option<&str>, message: &str, wait: Duration) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = serde_json::json!({"phone": "010-1234-5678", "message": message}).to_string();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("autoever:{KAKAOTALK_PASSWORD}"));
    let key = key
        .map(|key| format!("Idempotency-Key: {key}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /kakaotalk-messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\n{key}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(world.sandbox.kakaotalk.addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(wait, stream.read(&mut answer)).await;
    assert!(read.is_err(), "no answer before the client gives up");
    drop(stream);
}

/// Waits up to `limit` for the record to hold `n` messages.
async fn recorded_within(
    world: &World,
    n: usize,
    limit: Duration,
) -> Vec<msgsend::sandbox::RecordedMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let recorded = world.recorded();
        if recorded.len() >= n || tokio::time::Instant::now() >= deadline {
            return recorded;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_is_counted_and_recorded_late_even_after_its_client_gave_up() {
    let world = World::start(|config| {
        config.kakaotalk.rate = "1/1s".parse().unwrap();
        config.kakaotalk.faults.stall_rate = 1.0;
        config.kakaotalk.faults.stall_for = Duration::from_millis(1200);
    })
    .await;
    let base = world.sandbox.kakaotalk.base_url();
    // A probe takes the credential's only slot for a second.
    let probe = client()
        .get(format!("{base}/health"))
        .basic_auth("autoever", Some(KAKAOTALK_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
    post_and_hang_up(&world, None, "late", Duration::from_millis(200)).await;
    assert!(world.recorded().is_empty(), "not taken up yet");
    assert_eq!(count(&world.sandbox.kakaotalk.stats.stalled), 1);

    // Taken up after the stall, when the probe has left the window: had it been counted on
    // arrival, it would have been the second request in a second and refused.
    let recorded = recorded_within(&world, 1, Duration::from_secs(5)).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].message, "late");
    let stats = &world.sandbox.kakaotalk.stats;
    assert_eq!(count(&stats.rate_limited), 0);
    assert_eq!(count(&stats.accepted), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_a_stalled_request_with_its_key_is_not_delivered_twice() {
    let world = World::start(|config| {
        config.kakaotalk.faults.stall_rate = 1.0;
        config.kakaotalk.faults.stall_for = Duration::from_millis(500);
    })
    .await;
    // The client stops waiting; the request reaches the provider later all the same.
    post_and_hang_up(&world, Some("job-7:r1"), "hi", Duration::from_millis(100)).await;
    let retry = client()
        .post(format!(
            "{}/kakaotalk-messages",
            world.sandbox.kakaotalk.base_url()
        ))
        .basic_auth("autoever", Some(KAKAOTALK_PASSWORD))
        .header("Idempotency-Key", "job-7:r1")
        .json(&serde_json::json!({"phone": "010-1234-5678", "message": "hi"}))
        .send()
        .await
        .unwrap();
    let retry = read(retry).await;
    assert_eq!(
        retry,
        (
            StatusCode::OK,
            Some("true".into()),
            r#"{"messageId":"kt-1"}"#.into()
        )
    );
    assert_eq!(world.recorded().len(), 1);
}

#[test]
fn the_stall_flags_are_checked() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_msgsend"))
            .args([
                "sandbox",
                "--kakaotalk-addr",
                "127.0.0.1:0",
                "--sms-addr",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let over = run(&["--stall-rate", "1.5", "--stall-for", "1s"]);
    assert_eq!(over.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&over.stderr);
    assert!(
        stderr.contains("--stall-rate") && stderr.contains("from 0 to 1"),
        "{stderr}"
    );
    let alone = run(&["--stall-rate", "0.5"]);
    assert_eq!(alone.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--stall-for"), "{stderr}");
    let bad_duration = run(&["--stall-rate", "0.5", "--stall-for", "soon"]);
    assert_eq!(bad_duration.status.code(), Some(2));
}
