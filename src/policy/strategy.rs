//! Routing strategies (`[routing] strategy`, SPEC section 3). Under both, the fallback channel
//! takes a recipient whenever the primary fails for it: retries exhausted, a permanent
//! rejection, credentials refused, or an open circuit. They differ in how long a send waits for
//! the primary's rate-limit token:
//!
//! - `failover` waits as long as it takes, so the fallback carries only failures;
//! - `spillover` waits at most `acquire_timeout`, then hands the recipient to the fallback, so
//!   a large campaign runs on both quotas at once.

use std::time::Duration;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    strum::Display,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Strategy {
    Failover,
    Spillover,
}

/// How long a send may wait for a rate-limit token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWait {
    Unbounded,
    AtMost(Duration),
}

impl Strategy {
    /// The wait for the primary channel's token. The fallback always waits: it is the last resort.
    pub fn primary_wait(self, acquire_timeout: Duration) -> TokenWait {
        match self {
            Strategy::Failover => TokenWait::Unbounded,
            Strategy::Spillover => TokenWait::AtMost(acquire_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spillover_bounds_the_primary_wait() {
        let timeout = Duration::from_secs(5);
        assert_eq!(
            Strategy::Failover.primary_wait(timeout),
            TokenWait::Unbounded
        );
        assert_eq!(
            Strategy::Spillover.primary_wait(timeout),
            TokenWait::AtMost(timeout)
        );
        assert_eq!("spillover".parse(), Ok(Strategy::Spillover));
        assert_eq!(Strategy::Failover.to_string(), "failover");
        assert!("both".parse::<Strategy>().is_err());
    }
}
