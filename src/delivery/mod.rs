//! Where one message is routed and how: the [`Router`] takes the primary channel, then the
//! fallback when the primary fails for this recipient (SPEC section 3); a [`Channel`] is one
//! provider as a send sees it — its credentials each behind a rate limiter, its circuit
//! breaker, the retries. The policies themselves (limiter, breaker, backoff, strategy) live in
//! [`crate::policy`]; the HTTP contract in [`crate::provider`].

mod channel;
mod health;
mod key;
mod pricing;
mod router;

pub use channel::{Attempt, AttemptOutcome, Channel, ChannelFailure, RequestGate, Ungated};
pub use health::{Health, Probe};
pub use key::MessageKey;
pub use pricing::{MessagePrice, Pricing};
pub use router::{Delivery, DeliveryOutcome, Router};
