//! The shared quota, the ledger and idempotency keys under hostile input (SPEC section 8): a
//! damaged or missing ledger, far-future rows, a spent day window, odd job ids and header
//! names, a connection that never opens, a health probe that arrives late.

mod common;

use std::time::{Duration, Instant};

use common::crowd::crowd;
use common::{World, campaign_args, count, stderr, stdout};

/// Waits for `child` at most `limit`; kills it (and says so) if it is still running then.
async fn wait_at_most(
    mut child: std::process::Child,
    limit: Duration,
) -> (std::process::Output, bool) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut killed = false;
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (child.wait_with_output().unwrap(), killed)
    })
    .await
    .unwrap()
}

/// Only KakaoTalk configured: no fallback.
fn no_sms(world: &mut World) {
    world.config["providers"]
        .as_table_mut()
        .unwrap()
        .remove("sms");
}

/// The idempotency key is an HTTP header value; a job id is free text (`--job-id`), and in
/// Korea a campaign is often named in Korean. The key must still be a valid header, or every
/// request fails before it leaves — and is then taken for a lost answer (`uncertain`).
#[tokio::test(flavor = "multi_thread")]
async fn a_korean_job_id_still_sends() {
    let mut world = World::start(|_| {}).await;
    let people = crowd(4);
    let csv = world.with_crowd(&people);
    let output = world
        .msgsend(&campaign_args(&csv, &["--job-id", "봄-캠페인"]))
        .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(world.recorded().len(), people.eligible.len());
}

/// SPEC section 8, "A spent quota": a day window spent → PAUSED, `quota exhausted until`,
/// exit 75, not a wait of hours.
#[tokio::test(flavor = "multi_thread")]
async fn a_spent_day_window_pauses_the_campaign() {
    let mut world = World::start(|_| {}).await;
    world.set(
        "providers.kakaotalk.rate_limit",
        toml::Value::Array(vec!["100/s".into(), "3/day".into()]),
    );
    no_sms(&mut world);
    let people = crowd(8);
    let csv = world.with_crowd(&people);
    let child = world
        .command(&campaign_args(&csv, &["--job-id", "daily"]))
        .spawn()
        .unwrap();
    let (output, killed) = wait_at_most(child, Duration::from_secs(30)).await;
    assert!(!killed, "still waiting after 30 s: {}", stderr(&output));
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("quota exhausted until"),
        "{}",
        stderr(&output)
    );
    // The sends that had their slots went before the pause: the day's 3, no more.
    assert_eq!(world.recorded().len(), 3, "{}", stderr(&output));
    // A resume inside the same day pauses again at once, within the day's quota.
    let resumed = world.msgsend(&["bulk", "--resume", "daily"]).await;
    assert_eq!(resumed.status.code(), Some(75), "{}", stderr(&resumed));
    assert_eq!(world.recorded().len(), 3);
    assert!(stdout(&resumed).contains("PAUSED"), "{}", stdout(&resumed));
}

/// A spent quota (here the year 3000 in the ledger, as a clock far ahead once wrote) must not
/// make a command deaf to SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_far_future_ledger_row_leaves_send_and_bulk_interruptible() {
    let mut world = World::start(|_| {}).await;
    no_sms(&mut world);
    // A first send creates the ledger and its credential's row.
    let first = world.send_hi(&["--no-fallback"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let ledger = world.dir.path().join("state").join("quota.sqlite");
    let mut db = common::sqlite_file(&ledger).await;
    let year_3000: i64 = 32_503_680_000_000_000;
    let changed = sqlx::query("UPDATE quota_rows SET arrived_by = $1, count = 1000")
        .bind(year_3000)
        .execute(&mut db)
        .await
        .unwrap()
        .rows_affected();
    assert!(changed > 0);
    drop(db);
    for args in [
        common::send_hi_args(&["--no-fallback"]),
        campaign_args("people.csv", &["--job-id", "future"]),
    ] {
        if args[0] == "bulk" {
            let people = crowd(3);
            world.with_crowd(&people);
        }
        let child = world.command(&args).spawn().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        common::signal(child.id(), "TERM");
        let (output, killed) = wait_at_most(child, Duration::from_secs(10)).await;
        assert!(!killed, "{}: deaf to SIGTERM: {}", args[0], stderr(&output));
        assert!(
            matches!(output.status.code(), Some(75 | 130 | 1 | 3)),
            "{}: {:?} {}",
            args[0],
            output.status,
            stderr(&output)
        );
    }
    assert_eq!(
        world.recorded().len(),
        1,
        "nothing sent past the spent quota"
    );
}

/// A ledger that cannot be used is a clear error: exit 1 or 2, never a panic, nothing sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_ledger_is_a_clear_error_and_nothing_is_sent() {
    type Breaker = fn(&std::path::Path);
    let breakers: [(&str, Breaker); 4] = [
        ("a directory", |ledger| {
            std::fs::create_dir_all(ledger).unwrap()
        }),
        ("garbage", |ledger| {
            std::fs::write(ledger, vec![0x5a_u8; 8192]).unwrap();
        }),
        ("a symlink", |ledger| {
            let target = ledger.with_file_name("elsewhere.sqlite");
            std::fs::write(&target, b"").unwrap();
            std::os::unix::fs::symlink(&target, ledger).unwrap();
        }),
        ("a dangling symlink", |ledger| {
            std::os::unix::fs::symlink("/nonexistent/quota.sqlite", ledger).unwrap();
        }),
    ];
    for (what, break_it) in breakers {
        let mut world = World::start(|_| {}).await;
        let state = world.dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        break_it(&state.join("quota.sqlite"));
        let people = crowd(2);
        let csv = world.with_crowd(&people);
        for args in [
            common::send_hi_args(&[]),
            campaign_args(&csv, &[]),
            vec!["health"],
        ] {
            let child = world.command(&args).spawn().unwrap();
            let (output, killed) = wait_at_most(child, Duration::from_secs(20)).await;
            assert!(!killed, "{what}, {}: hangs: {}", args[0], stderr(&output));
            assert!(
                matches!(output.status.code(), Some(1 | 2)),
                "{what}, {}: {:?} {}",
                args[0],
                output.status,
                stderr(&output)
            );
            assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
            assert!(
                stderr(&output).contains("quota"),
                "{what}: the error names the ledger: {}",
                stderr(&output)
            );
        }
        assert_eq!(world.recorded().len(), 0, "{what}");
    }
}

/// A ledger row edited by hand (or written by a newer msgsend) with a value of the wrong type
/// must not panic the process.
#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_row_of_the_wrong_type_is_an_error_not_a_panic() {
    let mut world = World::start(|_| {}).await;
    let first = world.send_hi(&["--no-fallback"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let ledger = world.dir.path().join("state").join("quota.sqlite");
    let mut db = common::sqlite_file(&ledger).await;
    sqlx::query("UPDATE quota_rows SET arrived_by = 'soon'")
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    no_sms(&mut world);
    let child = world
        .command(&common::send_hi_args(&["--no-fallback"]))
        .spawn()
        .unwrap();
    let (output, killed) = wait_at_most(child, Duration::from_secs(20)).await;
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    assert!(!killed, "hangs: {}", stderr(&output));
    assert!(
        matches!(output.status.code(), Some(1..=3)),
        "{:?} {}",
        output.status,
        stderr(&output)
    );
    assert_eq!(world.recorded().len(), 1, "nothing more sent");
}

/// `idempotency_header` naming a header msgsend itself sets would corrupt every request.
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_header_that_msgsend_sets_itself_is_a_config_error() {
    for name in ["Authorization", "content-type", "Host", "Content-Length"] {
        let mut world = World::start(|_| {}).await;
        world.set("providers.kakaotalk.idempotency_header", name);
        let output = world.send_hi(&["--no-fallback"]).await;
        assert_eq!(output.status.code(), Some(2), "{name}: {}", stderr(&output));
        assert_eq!(world.recorded().len(), 0);
        assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
    }
}

/// A provider standing in for KakaoTalk that notes when each request *reaches* it: a health
/// probe reaches it `probe_late` after it left (a slow network on the way), a message at once.
struct LateProbes {
    addr: std::net::SocketAddr,
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Instant)>>>,
}

impl LateProbes {
    async fn start(probe_late: Duration) -> LateProbes {
        let arrivals: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Instant)>>> =
            Default::default();
        let (health_log, message_log) = (arrivals.clone(), arrivals.clone());
        let app = axum::Router::new()
            .route(
                "/health",
                axum::routing::get(move || {
                    let log = health_log.clone();
                    async move {
                        // Its own task: the request reaches the provider even when msgsend has
                        // stopped waiting (axum drops a handler whose client went away).
                        tokio::spawn(async move {
                            tokio::time::sleep(probe_late).await;
                            log.lock().unwrap().push(("probe", Instant::now()));
                        })
                        .await
                        .unwrap();
                        "{\"status\": \"ok\"}"
                    }
                }),
            )
            .fallback(move || {
                let log = message_log.clone();
                async move {
                    log.lock().unwrap().push(("message", Instant::now()));
                    "{}"
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        LateProbes { addr, arrivals }
    }
}

/// SPEC section 8: a request msgsend stopped waiting for keeps its slot as if it arrived up
/// to one more `timeout` later — health probes included ("health takes a slot like any
/// request"). A probe that timed out and reached the provider late must still count.
#[tokio::test(flavor = "multi_thread")]
async fn a_health_probe_that_times_out_and_arrives_late_keeps_its_slot() {
    let provider = LateProbes::start(Duration::from_millis(700)).await;
    let mut world = World::start(|_| {}).await;
    no_sms(&mut world);
    world
        .set(
            "providers.kakaotalk.base_url",
            format!("http://{}", provider.addr),
        )
        .set("providers.kakaotalk.rate_limit", "1/s")
        .set("providers.kakaotalk.timeout", "500ms");
    let health = world.msgsend(&["health"]).await;
    assert_eq!(health.status.code(), Some(4), "{}", stdout(&health));
    let send = world.send_hi(&["--no-fallback"]).await;
    assert_eq!(send.status.code(), Some(0), "{}", stderr(&send));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = provider.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "{arrivals:?}");
    let (probe, message) = (arrivals[0], arrivals[1]);
    assert_eq!((probe.0, message.0), ("probe", "message"));
    let gap = message.1.duration_since(probe.1);
    assert!(
        gap >= Duration::from_secs(1),
        "two requests within {gap:?} under a quota of 1/s"
    );
}

/// A listener on 127.0.0.1 whose accept queue is full: a new connection's SYN is dropped, so
/// connecting hangs (as to a provider behind a black hole) and no request is ever written.
fn hanging_listener() -> (std::net::SocketAddr, Vec<std::net::TcpStream>, i32) {
    // SAFETY: plain socket calls on a fresh descriptor; the address is a valid sockaddr_in.
    let (fd, port) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut bound_len = len;
        assert_eq!(
            libc::getsockname(fd, (&raw mut bound).cast(), &raw mut bound_len),
            0
        );
        (fd, u16::from_be(bound.sin_port))
    };
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut filling = Vec::new();
    while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        filling.push(stream);
        assert!(filling.len() < 64, "the accept queue never filled");
    }
    (addr, filling, fd)
}

/// SPEC section 8: "A connection that failed before the request was written is `connect` and
/// is not ambiguous." A provider that cannot even be connected to within `timeout` never got
/// the message: it is retried and handed to the fallback, not left `uncertain`.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_opens_is_not_ambiguous() {
    let (addr, _filling, _fd) = hanging_listener();
    let mut world = World::start(|_| {}).await;
    world
        .set("providers.kakaotalk.base_url", format!("http://{addr}"))
        .set("providers.kakaotalk.timeout", "400ms")
        .set("retry.max_attempts", 2);
    let output = world.send_hi(&["--json"]).await;
    let result = common::json(&output);
    assert_eq!(result["delivered"], true, "{result}\n{}", stderr(&output));
    assert_eq!(result["channel"], "sms", "{result}");
    assert_eq!(world.recorded().len(), 1);
}
