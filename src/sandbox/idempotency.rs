//! Idempotency keys as a provider keeps them (SPEC sections 4 and 8): the answer to a message
//! request it accepted under an `Idempotency-Key` is remembered for [`KEEP_FOR`], per credential,
//! so that a client that lost the answer can ask again with the same key and learn the message
//! id without the message being delivered twice.
//!
//! What the store guarantees, for one credential and one key:
//! - at most one request is being processed at a time: the first takes a [`Claim`], the others
//!   are told to [`Begin::Wait`] until it ends;
//! - once a claim ends accepted, every later request within [`KEEP_FOR`] gets that answer back
//!   ([`Begin::Replay`]) until the bound forces the key out (below);
//! - a claim that ends otherwise (refused, failed, dropped) leaves nothing behind, so the next
//!   request with the key is processed afresh.
//!
//! Memory is bounded: accepted keys older than [`KEEP_FOR`] are dropped as the store is used,
//! and past [`MAX_KEYS`] accepted keys the oldest is forgotten to make room (the caller is told,
//! to warn). Forgetting an unexpired key weakens "at most once" for that key only; refusing new
//! keys instead would stop a long benchmark against the sandbox, which is worse for a test
//! double. Keys being processed are not counted: there are at most as many as requests in
//! flight.
//!
//! The store is plain data with the clock passed in, so its rules are tested without waiting;
//! the server keeps it behind a lock and does the waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long an accepted answer is replayed.
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The most accepted keys one simulated provider remembers.
pub const MAX_KEYS: usize = 1_000_000;

/// The longest key accepted, in bytes; a longer one is answered 400.
pub const MAX_KEY_LEN: usize = 256;

/// A key as the store files it: the same key from another credential is another key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyId {
    credential: Box<str>,
    key: Box<str>,
}

#[derive(Debug)]
enum Entry<A> {
    /// A request with this key is being processed; `done` is cancelled when its claim ends.
    Processing { done: CancellationToken },
    /// Accepted at `at` with this answer.
    Accepted { answer: A, at: Instant },
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Begin<A> {
    /// Nobody is processing this key and no answer is remembered: process the request, then
    /// end the claim with [`KeyStore::accept`] or [`KeyStore::abandon`].
    Fresh(Claim),
    /// Accepted before: answer this again.
    Replay(A),
    /// Another request with this key is being processed: wait until this token is cancelled
    /// (its claim ended), then begin again.
    Wait(CancellationToken),
}

/// The right to process one key. Dropping it without ending it (a panic) wakes the waiters,
/// and the key counts as free again.
#[derive(Debug)]
pub struct Claim {
    id: Arc<KeyId>,
    // Held for its drop, which cancels `done` and so wakes every waiter.
    _done: DropGuard,
}

#[derive(Debug)]
pub struct KeyStore<A> {
    entries: HashMap<Arc<KeyId>, Entry<A>>,
    /// Accepted keys, oldest first: what expiry and the bound remove.
    accepted: VecDeque<(Instant, Arc<KeyId>)>,
    capacity: usize,
    keep_for: Duration,
}

impl<A: Clone> KeyStore<A> {
    /// A store that remembers at most `capacity` accepted keys, each for `keep_for`.
    pub fn new(capacity: usize, keep_for: Duration) -> Self {
        KeyStore {
            entries: HashMap::new(),
            accepted: VecDeque::new(),
            capacity: capacity.max(1),
            keep_for,
        }
    }

    /// Looks `key` up for `credential` at `now`.
    pub fn begin(&mut self, credential: &str, key: &str, now: Instant) -> Begin<A> {
        self.expire(now);
        let id = KeyId {
            credential: credential.into(),
            key: key.into(),
        };
        match self.entries.get(&id) {
            Some(Entry::Accepted { answer, .. }) => return Begin::Replay(answer.clone()),
            // A claim dropped without ending leaves a cancelled token: the key is free.
            Some(Entry::Processing { done }) if !done.is_cancelled() => {
                return Begin::Wait(done.clone());
            }
            _ => {}
        }
        let id = Arc::new(id);
        let done = CancellationToken::new();
        self.entries
            .insert(id.clone(), Entry::Processing { done: done.clone() });
        Begin::Fresh(Claim {
            id,
            _done: done.drop_guard(),
        })
    }

    /// Ends `claim` accepted: `answer` is replayed for the key from now on. Returns whether an
    /// unexpired key had to be forgotten to stay within the bound.
    pub fn accept(&mut self, claim: Claim, answer: A, now: Instant) -> bool {
        self.expire(now);
        let mut forgot = false;
        while self.accepted.len() >= self.capacity {
            self.forget_oldest();
            forgot = true;
        }
        self.entries
            .insert(claim.id.clone(), Entry::Accepted { answer, at: now });
        self.accepted.push_back((now, claim.id.clone()));
        // The entry is in place before `claim` drops here and wakes the waiters.
        drop(claim);
        forgot
    }

    /// Ends `claim` without an answer to remember: the next request with the key is processed
    /// afresh.
    pub fn abandon(&mut self, claim: Claim) {
        if matches!(self.entries.get(&claim.id), Some(Entry::Processing { .. })) {
            self.entries.remove(&claim.id);
        }
    }

    /// Accepted keys remembered now.
    #[cfg(test)]
    pub fn accepted_len(&self) -> usize {
        self.accepted.len()
    }

    /// Drops the accepted keys older than `keep_for`; each call does only the work that is due,
    /// so the store costs nothing extra per request on average.
    fn expire(&mut self, now: Instant) {
        while self
            .accepted
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.keep_for)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((at, id)) = self.accepted.pop_front() else {
            return;
        };
        // Only the entry this record was made for: the queue and the accepted entries are one
        // to one, but checking costs nothing and keeps a later answer for the key safe.
        if matches!(self.entries.get(&id), Some(Entry::Accepted { at: when, .. }) if *when == at) {
            self.entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = KEEP_FOR;

    fn fresh(begin: Begin<u32>) -> Claim {
        match begin {
            Begin::Fresh(claim) => claim,
            other => panic!("expected a fresh claim, got {other:?}"),
        }
    }

    #[test]
    fn an_accepted_key_is_replayed_for_its_credential_only() {
        let now = Instant::now();
        let mut store = KeyStore::new(10, DAY);
        let claim = fresh(store.begin("a", "k1", now));
        assert!(!store.accept(claim, 7, now));
        assert!(matches!(store.begin("a", "k1", now), Begin::Replay(7)));
        // The same key from another credential is another key.
        let other = fresh(store.begin("b", "k1", now));
        store.abandon(other);
        // ... and another key from the same credential too.
        assert!(matches!(store.begin("a", "k2", now), Begin::Fresh(_)));
    }

    #[test]
    fn a_key_being_processed_makes_the_next_request_wait_until_its_claim_ends() {
        let now = Instant::now();
        let mut store = KeyStore::new(10, DAY);
        let claim = fresh(store.begin("a", "k", now));
        let Begin::Wait(done) = store.begin("a", "k", now) else {
            panic!("the second request must wait");
        };
        assert!(!done.is_cancelled());
        store.accept(claim, 1, now);
        assert!(done.is_cancelled(), "the waiter is woken");
        assert!(matches!(store.begin("a", "k", now), Begin::Replay(1)));
    }

    #[test]
    fn an_abandoned_or_dropped_claim_leaves_the_key_free() {
        let now = Instant::now();
        let mut store = KeyStore::new(10, DAY);
        let claim = fresh(store.begin("a", "k", now));
        let Begin::Wait(done) = store.begin("a", "k", now) else {
            panic!("the second request must wait");
        };
        store.abandon(claim);
        assert!(done.is_cancelled());
        let claim = fresh(store.begin("a", "k", now));
        drop(claim); // as if its task panicked
        let claim = fresh(store.begin("a", "k", now));
        store.accept(claim, 2, now);
        assert!(matches!(store.begin("a", "k", now), Begin::Replay(2)));
        assert_eq!(store.accepted_len(), 1);
    }

    #[test]
    fn an_accepted_key_is_forgotten_after_keep_for() {
        let start = Instant::now();
        let mut store = KeyStore::new(10, DAY);
        let claim = fresh(store.begin("a", "old", start));
        store.accept(claim, 1, start);
        let later = start + Duration::from_secs(3600);
        let claim = fresh(store.begin("a", "new", later));
        store.accept(claim, 2, later);

        let almost = start + DAY - Duration::from_millis(1);
        assert!(matches!(store.begin("a", "old", almost), Begin::Replay(1)));
        let claim = fresh(store.begin("a", "old", start + DAY));
        assert_eq!(store.accepted_len(), 1, "only `new` is still remembered");
        store.accept(claim, 3, start + DAY);
        assert!(matches!(
            store.begin("a", "new", start + DAY),
            Begin::Replay(2)
        ));
        assert!(matches!(
            store.begin("a", "old", later + DAY),
            Begin::Replay(3)
        ));
        assert!(matches!(
            store.begin("a", "new", later + DAY),
            Begin::Fresh(_)
        ));
    }

    #[test]
    fn past_its_bound_the_store_forgets_the_oldest_accepted_key() {
        let start = Instant::now();
        let mut store = KeyStore::new(3, DAY);
        for (i, key) in ["k0", "k1", "k2", "k3", "k4"].into_iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            let claim = fresh(store.begin("a", key, at));
            assert_eq!(store.accept(claim, i as u32, at), i >= 3, "{key}");
            assert!(store.accepted_len() <= 3);
        }
        let now = start + Duration::from_secs(10);
        for key in ["k0", "k1"] {
            assert!(
                matches!(store.begin("a", key, now), Begin::Fresh(_)),
                "{key}"
            );
        }
        assert!(matches!(store.begin("a", "k2", now), Begin::Replay(2)));
        assert!(matches!(store.begin("a", "k4", now), Begin::Replay(4)));
    }

    #[test]
    fn keys_being_processed_are_never_forgotten_to_make_room() {
        let now = Instant::now();
        let mut store = KeyStore::new(1, DAY);
        let slow = fresh(store.begin("a", "slow", now));
        for key in ["k1", "k2"] {
            let claim = fresh(store.begin("a", key, now));
            store.accept(claim, 0, now);
        }
        assert!(matches!(store.begin("a", "slow", now), Begin::Wait(_)));
        store.accept(slow, 9, now);
        assert!(matches!(store.begin("a", "slow", now), Begin::Replay(9)));
        assert_eq!(store.accepted_len(), 1);
    }
}
