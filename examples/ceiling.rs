//! The ceiling for `bench/overhead.sh`: the plainest client there is — one reqwest client,
//! `CONCURRENCY` requests in flight, no limiter, no journal — POSTing `N` KakaoTalk messages
//! to a sandbox. msgsend's throughput is reported as a share of this one's.
//!
//! Usage: `cargo run --release --example ceiling -- BASE_URL N CONCURRENCY`

use std::time::Instant;

use futures_util::StreamExt as _;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base_url, n, concurrency] = args.as_slice() else {
        eprintln!("usage: ceiling BASE_URL N CONCURRENCY");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY is a number");
    let url = format!("{base_url}/kakaotalk-messages");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let ok = futures_util::stream::iter(0..n)
        .map(|i| {
            let request = http.post(&url).basic_auth("autoever", Some("1234")).json(
                &serde_json::json!({
                    "phone": format!("010-{:04}-{:04}", 1000 + i / 10_000, i % 10_000),
                    "message": format!("사람{i}님, 안녕하세요. 현대 오토에버입니다.\nhi 사람{i}"),
                }),
            );
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    println!("{ok} {seconds:.3} {:.0}", ok as f64 / seconds);
}
