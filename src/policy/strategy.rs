//! Routing strategies (`[routing] strategy`, SPEC section 3). Under both, the fallback channel
//! takes a recipient whenever the primary fails for it: retries exhausted, a permanent
//! rejection, credentials refused, or an open circuit. They differ in what a send does when the
//! primary has no rate-limit token free:
//!
//! - `failover` waits for the primary's as long as it takes, so the fallback carries only
//!   failures;
//! - `spillover` takes the fallback's when it has one free first (the primary's whenever it has
//!   one now: it stays preferred), so a campaign runs on both quotas at once, whatever its
//!   concurrency ([`crate::delivery`]'s router). `acquire_timeout` bounds the waits that are for
//!   the primary alone: a retry on it, or a message the fallback would not take now (its
//!   circuit is open, the text cannot go by SMS); past it the message goes to the fallback.

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
    /// The wait for the primary channel's token when the primary alone is waited for. The
    /// fallback always waits: it is the last resort.
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
