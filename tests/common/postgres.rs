//! The PostgreSQL server the tests talk to: `MSGSEND_TEST_POSTGRES_URL` (as `.ci/run` sets it),
//! else a throwaway cluster this test binary starts itself on 127.0.0.1 when a server is
//! installed (Debian's `postgresql`: `/usr/lib/postgresql/*/bin`), so `cargo test --release`
//! alone runs the PostgreSQL tests. Without a server the build script marks those tests
//! `#[ignore]` with the reason (`cfg(postgres_available)`), so they show as ignored, never as a
//! silent `ok`; `MSGSEND_REQUIRE_POSTGRES=1` turns a missing server into a failure.
//!
//! The cluster lives under the target directory and ends with the test process: the server
//! is started with the parent-death signal set (SIGTERM when the thread that started it, one
//! that lives as long as the process, goes away).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::POSTGRES_TEST_PASSWORD;

/// The server's URL, with the test password; `None` when there is no server (said on stderr).
pub fn postgres_url() -> Option<String> {
    if let Ok(url) = std::env::var("MSGSEND_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    static STARTED: OnceLock<Option<String>> = OnceLock::new();
    let url = STARTED.get_or_init(start_cluster).clone();
    if url.is_none() {
        let required = std::env::var("MSGSEND_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "MSGSEND_REQUIRE_POSTGRES=1 but there is no PostgreSQL server (set MSGSEND_TEST_POSTGRES_URL or apt-get install postgresql)"
        );
        eprintln!("SKIPPED: no PostgreSQL server (apt-get install postgresql)");
    }
    url
}

/// The newest installed server's `bin` folder.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// The account the server runs as: `postgres` when the tests run as root (the server refuses
/// root), else the tests' own.
fn server_account() -> Option<(libc::uid_t, libc::gid_t)> {
    // SAFETY: geteuid has no preconditions; getpwnam's result is read before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let entry = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !entry.is_null(),
            "running as root needs the postgres account"
        );
        Some(((*entry).pw_uid, (*entry).pw_gid))
    }
}

fn as_account(command: &mut Command, account: Option<(libc::uid_t, libc::gid_t)>) {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = account {
        command.uid(uid).gid(gid);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_cluster() -> Option<String> {
    let bin = server_bin()?;
    let account = server_account();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // Clusters of test processes that are gone (each is tens of MB).
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("pg-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let root = tmp.join(format!("pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("password"), POSTGRES_TEST_PASSWORD).unwrap();
    if let Some((uid, gid)) = account {
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(root.join("password"), Some(uid), Some(gid)).unwrap();
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(root.join("data"))
        .args(["-U", "msgsend", "--auth=scram-sha-256"])
        .arg(format!("--pwfile={}", root.join("password").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    as_account(&mut initdb, account);
    assert!(
        initdb.status().unwrap().success(),
        "initdb failed in {}",
        root.display()
    );

    let port = free_port();
    let (started, ready) = std::sync::mpsc::channel();
    let postgres = bin.join("postgres");
    let data = root.join("data");
    let socket_dir = root.clone();
    // The thread that starts the server lives as long as the process: the server's parent-death
    // signal fires when it goes, that is when the tests end.
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt as _;
        let mut server = Command::new(postgres);
        server
            .arg("-D")
            .arg(data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(socket_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        as_account(&mut server, account);
        // SAFETY: prctl only sets this child's parent-death signal, between fork and exec.
        unsafe {
            server.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = server.spawn();
        let _ = started.send(child.is_ok());
        let _keep = child;
        loop {
            std::thread::park();
        }
    });
    assert!(ready.recv().unwrap(), "the PostgreSQL server did not start");
    let deadline = Instant::now() + Duration::from_secs(30);
    let accepting = || {
        Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success())
    };
    while !accepting() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("started a throwaway PostgreSQL cluster on 127.0.0.1:{port}");
    Some(format!(
        "postgres://msgsend:{POSTGRES_TEST_PASSWORD}@127.0.0.1:{port}/postgres"
    ))
}

/// A new empty database on the test server, named after `test` (one per test, so that each has
/// its own state schema); its URL.
pub async fn fresh_database(url: &str, test: &str) -> String {
    let name = format!("{test}_{}", std::process::id());
    let mut admin = connect(url).await;
    // Two statements: CREATE DATABASE refuses to run inside a (multi-statement) transaction.
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let (server, _) = url.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

/// A connection to the test server, to prepare tables.
pub async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::ConnectOptions as _;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    options.connect().await.unwrap()
}
