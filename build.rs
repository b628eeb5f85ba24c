//! Says whether the PostgreSQL tests can run here (`cfg(postgres_available)`): a server URL in
//! `MSGSEND_TEST_POSTGRES_URL`, or a server installed where Debian puts it, which the tests start
//! as a throwaway cluster. Without either, those tests are `#[ignore]`d with the reason, so a
//! newcomer's `cargo test` shows them as ignored rather than as a silent `ok`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_available)");
    println!("cargo::rerun-if-env-changed=MSGSEND_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-changed=/usr/lib/postgresql");
    let url_given = std::env::var("MSGSEND_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty());
    let installed = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .filter_map(Result::ok)
            .any(|version| version.path().join("bin/initdb").is_file())
    });
    if url_given || installed {
        println!("cargo::rustc-cfg=postgres_available");
    }
}
