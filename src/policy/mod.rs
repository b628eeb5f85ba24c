//! The delivery policies, each a small state machine with its own guarantee and tests:
//! [`rate_limit`] (never more than N requests in any window), [`retry`] (exponential backoff with
//! jitter, `Retry-After` honoured), [`breaker`] (stop calling a provider that is down) and
//! [`strategy`] (when the fallback channel takes over).

pub mod breaker;
pub mod rate_limit;
pub mod retry;
pub mod strategy;
