//! Adaptive pacing against a provider whose real quota is lower than the config says: the
//! first 429s cut the pace, so the provider is met, not hammered, and everyone gets the
//! message once.

mod common;

use common::{assert_never_twice, campaign_under, count};

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_stricter_than_the_config_is_met_not_hammered() {
    const RECIPIENTS: usize = 80;
    // The config claims 30/s, the provider keeps 10/s (and counts refused requests too).
    let (world, crowd, summary, received) = campaign_under(
        RECIPIENTS,
        |c| c.kakaotalk.rate = "10/s".parse().unwrap(),
        &[
            ("providers.kakaotalk.rate_limit", "30/s".into()),
            ("retry.max_attempts", 6.into()),
            // The sandbox's Retry-After (1 s) is waited for only up to max_delay.
            ("retry.max_delay", "2s".into()),
        ],
    )
    .await;
    assert_eq!(received.len(), crowd.eligible.len(), "{summary}");
    assert_never_twice(&received);

    // Unadapted, every second would carry 30 requests of which 20 are refused: well over 100
    // 429s for 80 recipients. Adapted: the first second's 20, then a handful while the pace
    // finds 10/s and probes upwards again.
    let stats = &world.sandbox.kakaotalk.stats;
    let refused = count(&stats.rate_limited);
    let accepted = count(&stats.accepted);
    eprintln!("kakaotalk: {accepted} accepted, {refused} answered 429");
    assert!(refused <= 50, "{refused} requests answered 429: {summary}");
    assert!(
        accepted as usize >= RECIPIENTS * 3 / 4,
        "the primary should carry most: {summary}"
    );
}
