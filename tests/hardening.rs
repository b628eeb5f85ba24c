//! The security review's defects, each through the binary on 127.0.0.1: a provider that
//! redirects or floods, secrets inside URLs, personal data at rest, symlinked outputs, a source
//! query that writes, and text from outside that carries terminal escapes.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use common::{World, count, stderr, stdout};
use futures_util::StreamExt as _;

/// A loopback HTTP server answering every request with `answer()`; returns its base URL.
async fn fake_provider<F>(answer: F) -> String
where
    F: Fn() -> Response + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        async move { answer() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A CSV of one person aged 25, `people.csv` in the world's folder; returns its path.
fn one_person(world: &World) -> std::path::PathBuf {
    let csv = world.path("people.csv");
    std::fs::write(&csv, common::people_csv("7600", 1, "\n")).unwrap();
    csv
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_redirect_is_a_rejection_and_nothing_follows_it() {
    let mut world = World::start(|_| {}).await;
    // The "provider" redirects to the sandbox's own SMS endpoint: following it would deliver.
    let target = format!("{}/sms?phone=010-1234-5678", world.sandbox.sms.base_url());
    let url = fake_provider(move || {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(&target).unwrap());
        response
    })
    .await;
    world.set("providers.kakaotalk.base_url", url);
    let output = world.send_hi(&["--no-fallback", "--json"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let result = common::json(&output);
    assert_eq!(result["attempts"][0]["detail"], "HTTP 307", "{result}");
    assert_eq!(count(&world.sandbox.sms.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_answer_is_read_up_to_a_cap_and_memory_stays_flat() {
    let mut world = World::start(|_| {}).await;
    let url = fake_provider(|| {
        let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
        let endless = futures_util::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
        Response::new(Body::from_stream(endless))
    })
    .await;
    world.set("providers.kakaotalk.base_url", url);
    let mut command = world.command(&common::send_hi_args(&["--no-fallback"]));
    let child = command.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (status, max_rss_kib) = tokio::task::spawn_blocking(move || {
        let mut status = 0;
        // SAFETY: wait4 on our own child, with valid pointers to locals.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(waited, pid);
        drop(child);
        (libc::WEXITSTATUS(status), usage.ru_maxrss)
    })
    .await
    .unwrap();
    assert_eq!(status, 3, "not delivered: the answer confirms nothing");
    assert!(max_rss_kib < 100 * 1024, "peak RSS {max_rss_kib} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_id_with_terminal_escapes_is_printed_escaped() {
    let mut world = World::start(|_| {}).await;
    let url =
        fake_provider(|| Response::new(Body::from(r#"{"messageId": "\u001b[2Jgone"}"#))).await;
    world.set("providers.kakaotalk.base_url", url);
    let output = world.send_hi(&["--no-fallback"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("\\u{1b}[2Jgone"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_inside_urls_never_reach_the_output_or_the_logs() {
    let mut world = World::start(|_| {}).await;
    world
        .set(
            "metrics.pushgateway",
            "http://pgw:pushgw-pw-71@127.0.0.1:9/",
        )
        .set(
            "alerts.webhook",
            "https://hooks.example.com/T0/abcsecret?token=hook-token-52",
        )
        .set(
            "source.database",
            "postgres://app@db.example:5432/crm?password=db-pw-33&sslmode=require",
        );
    let secrets = ["pushgw-pw-71", "abcsecret", "hook-token-52", "db-pw-33"];
    let check = world.msgsend(&["config", "check"]).await;
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let csv = one_person(&world);
    let run = world
        .msgsend(
            &[
                &["-vv"][..],
                &common::campaign_args(csv.to_str().unwrap(), &[]),
            ]
            .concat(),
        )
        .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    for output in [&check, &run] {
        for secret in secrets {
            assert!(!stdout(output).contains(secret), "{secret} in stdout");
            assert!(!stderr(output).contains(secret), "{secret} in stderr");
        }
    }
    assert!(stdout(&check).contains("https://hooks.example.com/(redacted)"));
    assert!(
        stderr(&run).contains("cannot push the metrics"),
        "{}",
        stderr(&run)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_with_personal_data_are_private_even_under_umask_000() {
    let world = World::start(|_| {}).await;
    let csv = one_person(&world);
    let (failed, summary, invalid, prom) = (
        world.path("failed.csv"),
        world.path("summary.json"),
        world.path("invalid.csv"),
        world.path("msgsend.prom"),
    );
    let mut world = world;
    world.set("metrics.textfile", prom.display().to_string());
    let mut command = world.command(&common::campaign_args(
        csv.to_str().unwrap(),
        &[
            "--failed-csv",
            failed.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
            "--invalid-csv",
            invalid.to_str().unwrap(),
        ],
    ));
    // SAFETY: umask only changes the child's file-creation mask, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let output = common::output_of(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let journal = world.path("state/journal.sqlite");
    for private in [&failed, &summary, &invalid, &journal] {
        assert_eq!(mode(private), 0o600, "{}", private.display());
    }
    for suffix in ["-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", journal.display()));
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert_eq!(mode(&prom), 0o644, "node_exporter must read the metrics");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_path_that_is_a_symlink_never_writes_through_it() {
    let world = World::start(|_| {}).await;
    let csv = one_person(&world);
    let precious = world.path("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let link = world.path("summary.json");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let output = world
        .msgsend(&common::campaign_args(
            csv.to_str().unwrap(),
            &["--summary-json", link.to_str().unwrap()],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_postgres_query_that_would_write_is_refused() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let mut db = common::postgres::connect(&url).await;
    let suffix = std::process::id();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS people_{suffix}, audit_{suffix};\
         CREATE TABLE people_{suffix} (name TEXT, phone TEXT, birth_date TEXT);\
         CREATE TABLE audit_{suffix} (n INT);\
         INSERT INTO people_{suffix} VALUES ('a', '010-7700-0000', '{born}');\
         CREATE OR REPLACE FUNCTION side_effect_{suffix}() RETURNS INT VOLATILE LANGUAGE SQL \
           AS 'INSERT INTO audit_{suffix} VALUES (1) RETURNING n';",
        born = common::born(25)
    )))
    .execute(&mut db)
    .await
    .unwrap();
    let world = World::start(|_| {}).await;
    let query = format!("SELECT *, side_effect_{suffix}() AS x FROM people_{suffix}");
    let output = world.dry_run_of_database(&url, &query).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let written: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM audit_{suffix}"
    )))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(written, 0, "the source query wrote");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_in_the_environment_never_sees_a_loopback_provider() {
    let proxy = common::receiver::Receiver::start(StatusCode::OK).await;
    let world = World::start(|_| {}).await;
    let mut command = world.command(&common::send_hi_args(&[]));
    command
        .env("HTTP_PROXY", proxy.url())
        .env("ALL_PROXY", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let output = common::output_of(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(proxy.received().is_empty(), "the proxy saw the request");
    assert_eq!(world.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_refuses_an_unauthenticated_body_before_reading_it_and_drops_slow_headers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let world = World::start(|_| {}).await;
    let addr = world.sandbox.kakaotalk.addr;
    // Headers announcing a large body, wrong credentials, and no body at all.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /kakaotalk-messages HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d3Jvbmc6d3Jvbmc=\r\n\
              Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer))
        .await
        .expect("answered before the body came")
        .unwrap();
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 401"),
        "{:?}",
        String::from_utf8_lossy(&answer[..read])
    );

    // A connection that sends nothing is closed too.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut nothing = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut nothing)).await;
    assert!(closed.is_ok(), "a silent connection was held open");

    // Headers that never end: the connection is closed after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /kakaotalk-messages HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a connection without its headers was held open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_others_can_read_is_warned_about_and_its_journal_stays_private() {
    let world = World::start(|_| {}).await;
    let state = world.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let csv = one_person(&world);
    let output = world
        .msgsend(&common::campaign_args(csv.to_str().unwrap(), &[]))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("can be read by other users"),
        "{}",
        stderr(&output)
    );
    let journal = std::fs::metadata(state.join("journal.sqlite")).unwrap();
    assert_eq!(journal.permissions().mode() & 0o777, 0o600);
}
