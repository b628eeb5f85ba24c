//! Per-credential rate limiting with a hard guarantee: **no window of length W ever holds more
//! than N requests** to one credential whose quota is N per W (each of its windows, SPEC
//! section 8), retries, health probes and requests answered 429 included, counted where the
//! provider counts them — at arrival — and across every msgsend process that shares the state:
//! two `bulk`s, a `bulk` killed and resumed at once, `send` and `health` beside a `bulk`.
//!
//! ## The rule
//! Every request is a row in the quota ledger ([`crate::ledger`]), shared by the processes,
//! whose `arrived_by` is a moment by which the request has surely reached the provider if it
//! ever does:
//! - while the slot is unused or its request is out: the lease's last moment of use plus twice
//!   the provider's `timeout` (a process that dies leaves that behind: its request reached the
//!   provider at the latest then, SPEC section 8);
//! - once answered (or failed): the moment the answer came back;
//! - once timed out: that moment plus one more `timeout` (a request msgsend stopped waiting for
//!   may still arrive late: it keeps its slot as if it arrived then);
//! - never used: no row at all.
//!
//! A row counts in a window of length W while `arrived_by + W + margin` lies ahead. A visit to
//! the ledger (one process at a time per credential) grants slots only while fewer than the
//! window's N (the allowance, below) rows count, in every window.
//!
//! **Why no window at the provider ever holds more than N.** Take any window of length W at the
//! provider and, among the requests that arrived in it, the one `r` whose slot was granted last
//! (by any process). Every other request `x` in the window arrived after `arrival(r) - W`, and
//! `arrived_by(x) >= arrival(x)` at every moment of its row's life (a row is only ever replaced
//! by a later or truer bound, and the timeout rule is the assumption that a late request arrives
//! within one more timeout). So `arrived_by(x) + W > arrival(r) >= grant(r)`: `x`'s row counted
//! when `r` was granted, and since it was granted earlier it was in the ledger then. The grant
//! needed fewer than N counted rows, so at most N-1 others share the window with `r`. Nothing
//! in the argument is about one process: the ledger's visits are serialised, which is all it
//! uses.
//!
//! Stamping the moment a request is *let go* instead (a plain sliding log) is not enough: a
//! request delayed on its way arrives close to the next window's first requests and a strict
//! provider answers 429; CI machines showed exactly that. The price of counting from the answer
//! is the round trip: a slot is reused after W + latency, about 0.1 % at 100 ms and one minute.
//!
//! ## Cheap for one process
//! A process takes slots in leases of up to a second's worth of the tightest rate (at most
//! [`MAX_LEASE`]; one slot at first, doubling while it uses them up), uses them within
//! [`LEASE_USE`], and writes back what it learnt on its next
//! visit, at most every [`WRITE_BACK`] while it sends: a campaign visits the ledger a few times a
//! second, not per request. A slot that is not used in time is given back (no row). Until a
//! process writes back, other processes see its rows at their worst case, so they wait a
//! little longer, never less. Processes share a quota first come, first served.
//!
//! ## Pacing
//! In front of the ledger, governor's GCRA ([`pacer`]) lets `burst` requests go back to back
//! and spaces the rest evenly at the tightest window's rate. It makes the traffic smooth; it
//! does not hold the quota (the ledger does, whatever `burst` is). Its state is the process's
//! own: two processes each get their own burst, inside the one shared quota. A slot given back
//! unused still spent its pacer cell (governor cannot take one back).
//!
//! ## Adaptive pacing
//! The configured quota is a ceiling, not a promise. A 429 tells msgsend the provider's real
//! quota is lower (another client shares the credential, or the config is wrong), so the
//! credential's *allowance* (requests per tightest window, the other windows scaled alike) is
//! cut, once per window, to the larger of half of it and what the provider accepted from this
//! process in the last window; a `Retry-After` also pauses the credential until then. Every
//! window without a cut raises the allowance by 5 % of the quota, up to the quota (additive
//! increase, multiplicative decrease, as TCP does). The allowance lives in the ledger, so every
//! process and the next run start from it.
//!
//! Waiters of one process are served in arrival order: one async mutex (FIFO in tokio) is held
//! while a waiter waits for its slot. A waiter that gives up (dropped by `tokio::time::timeout`)
//! takes no slot.
//!
//! The ledger's times are the wall clock (shared by the processes); a clock stepped backwards
//! only makes rows count longer, one stepped forward by more than the margin can shorten a
//! window — NTP slews rather than steps, which keeps the error within the margin.

mod first_free;
mod pacer;
mod rules;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::{Instant, sleep_until};

use crate::ledger::{Ledger, Micros, Pace};
use crate::units::RateLimit;
use pacer::Pacer;
use rules::{Quota, RateLimited, micros};

pub use first_free::acquire_first_free;
pub use rules::margin_for;

/// How long a granted slot may wait in the process before its request leaves.
pub const LEASE_USE: Duration = Duration::from_secs(1);
/// The most slots one visit grants.
pub const MAX_LEASE: u32 = 4096;
/// How often a sending process writes back what it learnt (and looks at the others' rows when
/// it waits).
pub const WRITE_BACK: Duration = Duration::from_millis(100);

/// One credential's quota, as the limiter is given it.
#[derive(Debug, Clone)]
pub struct CredentialQuota {
    /// The credential's name in the ledger ([`crate::ledger::credential_key`]).
    pub key: String,
    pub limit: RateLimit,
    /// `burst` (SPEC section 8); `None`: the tightest window's N.
    pub burst: Option<u32>,
}

/// Every credential's next free slot is further away than the caller will wait: when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota exhausted until {}", format_micros(*.0))]
pub struct QuotaSpent(pub Micros);

/// A ledger time as RFC 3339.
pub fn format_micros(at: Micros) -> String {
    jiff::Timestamp::from_microsecond(at).map_or_else(|_| format!("{at} µs"), |t| t.to_string())
}

/// Rate limits for the credentials of one provider; [`acquire`](Self::acquire) picks the
/// credential that can send soonest, which spreads a campaign over all of them.
#[derive(Debug)]
pub struct RateLimiter {
    /// Held by the waiter whose turn it is; tokio's mutex is fair, so turns go in FIFO order.
    turn: Mutex<()>,
    /// Short critical sections only (never held across an await): slots are released from
    /// `Drop`, which cannot await.
    credentials: std::sync::Mutex<Vec<Local>>,
    /// Woken when a slot completes, which may let a waiter write back and find a slot.
    completed: Notify,
    ledger: Ledger,
    clock: WallClock,
    /// The provider's `timeout`: how late a request can arrive (see the module doc).
    timeout: Micros,
}

/// The wall clock the ledger is kept in; in tests, one that follows tokio's paused clock.
#[derive(Debug, Clone, Copy)]
enum WallClock {
    System,
    #[cfg(test)]
    Simulated {
        start_wall: Micros,
        start: Instant,
    },
}

impl WallClock {
    fn now(self) -> Micros {
        match self {
            WallClock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, micros),
            #[cfg(test)]
            WallClock::Simulated { start_wall, start } => start_wall + micros(start.elapsed()),
        }
    }

    fn is_real(self) -> bool {
        matches!(self, WallClock::System)
    }

    /// The tokio instant at which the wall clock reads `at`.
    fn instant_of(self, at: Micros) -> Instant {
        let ahead = at.saturating_sub(self.now()).max(0);
        Instant::now() + Duration::from_micros(u64::try_from(ahead).unwrap_or(0))
    }
}

/// This process's view of one credential.
#[derive(Debug)]
struct Local {
    key: String,
    quota: Quota,
    /// Completions are rounded up to this: a quarter of the margin, at least 1 ms (fewer ledger
    /// rows to write back; costs at most 0.25 % of a window).
    bucket: Micros,
    pacer: Pacer,
    /// A pacer cell taken and not yet used by a request (the ledger made the waiter wait).
    paced: bool,
    /// When the pacer last said its next cell comes (cleared when one is taken).
    pacer_until: Option<Micros>,
    /// Granted slots not yet used: their lease and the moment they must be used by.
    in_hand: VecDeque<(i64, Micros)>,
    /// Slots handed to a request and not yet settled.
    held: usize,
    /// Slots to ask for on the next visit: 1 at first, doubled while leases are used up, halved
    /// when slots go unused, at most [`Local::lease_size`] (slow start: a `send` takes one slot,
    /// not a second's worth, and a campaign reaches full leases in a few visits).
    next_lease: u32,
    leases: HashMap<i64, Lease>,
    /// How many leases have something to write back (kept beside them: the check runs on
    /// every acquire).
    dirty_leases: usize,
    /// The shared pace as of the last visit, with this process's 429s since applied.
    pace: Pace,
    /// 429s not yet written to the ledger.
    pending: Vec<RateLimited>,
    /// This process's accepted completions within the tightest window, for the cut rule.
    accepted: VecDeque<Micros>,
    /// When the last visit found nothing free: the earliest moment a slot frees.
    next_free: Option<Micros>,
    last_visit: Option<Micros>,
    /// The last completion, to prefer the credential idle the longest.
    last_completion: Option<Micros>,
}

/// A lease's slots as this process knows them.
#[derive(Debug, Default)]
struct Lease {
    /// The worst-case arrival of its slots in hand or out.
    worst_case: Micros,
    /// Slots in hand or out.
    open: u32,
    /// Settled slots: arrival bound → count.
    settled: BTreeMap<Micros, u32>,
    /// Bumped on every change; a write-back clears `dirty` only if nothing changed meanwhile.
    version: u64,
    dirty: bool,
}

impl Lease {
    fn rows(&self) -> Vec<(Micros, u32)> {
        let mut rows: Vec<(Micros, u32)> = self.settled.iter().map(|(&a, &c)| (a, c)).collect();
        if self.open > 0 {
            rows.push((self.worst_case, self.open));
        }
        rows
    }
}

impl Local {
    fn new(quota: &CredentialQuota) -> Self {
        let tightest = quota.limit.tightest();
        let smallest_margin = quota
            .limit
            .windows()
            .iter()
            .map(|rate| margin_for(rate.per))
            .min()
            .unwrap_or_default();
        Local {
            key: quota.key.clone(),
            quota: Quota::new(&quota.limit),
            bucket: (micros(smallest_margin) / 4).max(1_000),
            pacer: Pacer::new(tightest, quota.burst.unwrap_or(tightest.count)),
            paced: false,
            pacer_until: None,
            in_hand: VecDeque::new(),
            held: 0,
            next_lease: 1,
            leases: HashMap::new(),
            dirty_leases: 0,
            pace: Pace::default(),
            pending: Vec::new(),
            accepted: VecDeque::new(),
            next_free: None,
            last_visit: None,
            last_completion: None,
        }
    }

    /// Slots to ask for per visit: a [`LEASE_USE`]'s worth of the tightest rate.
    fn lease_size(&self) -> u32 {
        let per_lease = self.quota.tightest.per_second() * LEASE_USE.as_secs_f64();
        (per_lease as u32).clamp(1, MAX_LEASE)
    }

    fn dirty(&self) -> bool {
        self.dirty_leases > 0
    }

    /// Marks `lease` as having something to write back.
    fn touch(lease: &mut Lease, dirty_leases: &mut usize) {
        lease.version += 1;
        if !lease.dirty {
            lease.dirty = true;
            *dirty_leases += 1;
        }
    }

    /// Gives back the slots in hand whose time to be used has passed.
    fn drop_stale(&mut self, now: Micros) {
        while let Some(&(lease, use_by)) = self.in_hand.front() {
            if use_by > now {
                break;
            }
            self.in_hand.pop_front();
            self.settle(lease, None);
            self.next_lease = (self.next_lease / 2).max(1);
        }
    }

    /// One slot of `lease` is settled: it arrived by `arrived_by`, or was never used (`None`).
    fn settle(&mut self, lease: i64, arrived_by: Option<Micros>) {
        let bucket = self.bucket;
        if let Some(lease) = self.leases.get_mut(&lease) {
            lease.open = lease.open.saturating_sub(1);
            if let Some(at) = arrived_by {
                // Rounded up: later is always safe.
                let rounded = at.saturating_add(bucket - 1) / bucket * bucket;
                *lease.settled.entry(rounded).or_default() += 1;
            }
            Local::touch(lease, &mut self.dirty_leases);
        }
    }

    /// Forgets leases the ledger no longer counts and that have nothing left to say.
    fn forget_old_leases(&mut self, now: Micros) {
        let hold = self.quota.longest_hold;
        self.leases.retain(|_, lease| {
            lease.dirty
                || lease.open > 0
                || lease
                    .settled
                    .keys()
                    .next_back()
                    .is_some_and(|&last| last.saturating_add(hold) > now)
        });
        let window = micros(self.quota.tightest.per);
        while self
            .accepted
            .front()
            .is_some_and(|&at| at.saturating_add(window) <= now)
        {
            self.accepted.pop_front();
        }
    }
}

/// What the waiter does next for a credential.
enum Next {
    /// Visit the ledger for slots.
    Visit,
    /// Nothing before then.
    At(Micros),
    /// The pacer's next cell is due then.
    Paced(Micros),
}

/// What one look at the credentials found.
enum Look<'a> {
    /// A slot, taken.
    Slot(Slot<'a>),
    /// None free now: look again then (or on a completion).
    Wait(Wake),
}

/// When a waiter looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    /// At once, after letting other tasks run: a pacer cell is due within [`PACER_SPIN`].
    Yield,
    /// At this moment, or on a completion, whichever comes first.
    At(Instant),
}

/// How close to a pacer cell's due time the waiter stops sleeping and yields instead: tokio's
/// timers wake up to a millisecond late, and governor's GCRA with a small burst never catches
/// up, so a cell taken late shifts every later one (at 50/s and `burst = 1`, 5 % of the
/// quota). Yielding costs at most this much CPU per cell, only while the pacer holds back.
const PACER_SPIN: Duration = Duration::from_millis(2);

/// One request's place in its credential's quota. Its end is said explicitly ([`answered`],
/// [`timed_out`], [`rate_limited`], [`unused`]); one merely dropped counts at its worst case.
/// See the module doc.
///
/// [`answered`]: Slot::answered
/// [`timed_out`]: Slot::timed_out
/// [`rate_limited`]: Slot::rate_limited
/// [`unused`]: Slot::unused
#[derive(Debug)]
#[must_use = "the slot must live until the request has completed"]
pub struct Slot<'a> {
    limiter: &'a RateLimiter,
    credential: usize,
    lease: i64,
}

/// How a slot ends.
enum Release {
    /// No request was made.
    Unused,
    /// Dropped without a word (a send dropped with its request out, when a stop's grace ran
    /// out): the request may still arrive, so it keeps its lease's worst case.
    Abandoned,
    /// The request completed: answered (anything but a 429), or failed on the way.
    Answered,
    /// No answer within the timeout: the request may still arrive up to a timeout later.
    TimedOut,
    /// The provider answered 429.
    RateLimited(Option<Duration>),
}

impl Slot<'_> {
    /// The index of the credential the request must use.
    pub fn credential(&self) -> usize {
        self.credential
    }

    /// Makes sure the slot's worst case still covers a request that leaves now: a slot that
    /// waited longer than [`LEASE_USE`] (a slow journal write before the request) has its
    /// worst case moved later in the ledger before the request goes.
    pub async fn refresh(&self) {
        let now = self.limiter.clock.now();
        let stale = {
            let mut credentials = self.limiter.lock();
            let local = &mut credentials[self.credential];
            let worst_case = now
                .saturating_add(micros(LEASE_USE))
                .saturating_add(self.limiter.timeout.saturating_mul(2));
            match local.leases.get_mut(&self.lease) {
                Some(lease) if lease.worst_case < worst_case.saturating_sub(micros(LEASE_USE)) => {
                    lease.worst_case = worst_case;
                    Local::touch(lease, &mut local.dirty_leases);
                    true
                }
                _ => false,
            }
        };
        if stale {
            self.limiter.write_back(self.credential).await;
        }
    }

    /// The request completed: answered (anything but a 429), or failed on the way.
    pub fn answered(self) {
        self.release(Release::Answered);
        std::mem::forget(self);
    }

    /// Gives the slot back without a request having been made: it does not count.
    pub fn unused(self) {
        self.release(Release::Unused);
        std::mem::forget(self);
    }

    /// The request timed out: it counts as if it arrived up to one more timeout from now.
    pub fn timed_out(self) {
        self.release(Release::TimedOut);
        std::mem::forget(self);
    }

    /// The provider answered 429 (with its `Retry-After`, if any): the slot counts, and the
    /// credential's pace adapts (see the module doc).
    pub fn rate_limited(self, retry_after: Option<Duration>) {
        self.release(Release::RateLimited(retry_after));
        std::mem::forget(self);
    }

    fn release(&self, how: Release) {
        {
            let now = self.limiter.clock.now();
            let mut credentials = self.limiter.lock();
            let local = &mut credentials[self.credential];
            local.held = local.held.saturating_sub(1);
            match how {
                Release::Unused => local.settle(self.lease, None),
                Release::Abandoned => {
                    let worst_case = local.leases.get(&self.lease).map(|l| l.worst_case);
                    local.settle(self.lease, worst_case);
                }
                Release::Answered => {
                    local.settle(self.lease, Some(now));
                    local.accepted.push_back(now);
                    local.last_completion = Some(now);
                }
                Release::TimedOut => {
                    local.settle(self.lease, Some(now.saturating_add(self.limiter.timeout)));
                    local.last_completion = Some(now);
                }
                Release::RateLimited(retry_after) => {
                    local.settle(self.lease, Some(now));
                    local.last_completion = Some(now);
                    let event = RateLimited {
                        at: now,
                        retry_after,
                        accepted: u32::try_from(local.accepted.len()).unwrap_or(u32::MAX),
                    };
                    // At once here, so this process slows down before its next visit.
                    let quota = local.quota.clone();
                    rules::rate_limited(&mut local.pace, &quota, event);
                    local.pending.push(event);
                }
            }
        }
        self.limiter.completed.notify_waiters();
    }
}

/// A slot dropped without being told how its request ended cannot know whether it reached the
/// provider: it counts at its worst case (SPEC section 8).
impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.release(Release::Abandoned);
    }
}

impl RateLimiter {
    /// One limit per credential, in the provider's credential order; `timeout` is the
    /// provider's. The ledger is shared with every process that opens the same one.
    pub fn new(quotas: &[CredentialQuota], timeout: Duration, ledger: Ledger) -> Self {
        Self::with_clock(quotas, timeout, ledger, WallClock::System)
    }

    fn with_clock(
        quotas: &[CredentialQuota],
        timeout: Duration,
        ledger: Ledger,
        clock: WallClock,
    ) -> Self {
        assert!(
            !quotas.is_empty(),
            "a rate limiter needs at least one credential"
        );
        RateLimiter {
            turn: Mutex::new(()),
            credentials: std::sync::Mutex::new(quotas.iter().map(Local::new).collect()),
            completed: Notify::new(),
            ledger,
            clock,
            timeout: micros(timeout),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Local>> {
        // A panic while holding this lock leaves counts that are still consistent (every
        // section is a few integer updates), so a poisoned lock is used as is.
        self.credentials
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a slot and takes it on the credential that can send soonest.
    pub async fn acquire(&self) -> Slot<'_> {
        self.acquire_on(None).await
    }

    /// Waits for a slot of credential `index` (a health probe of that credential, or a retry
    /// that must reach the same account as its ambiguous first attempt) and takes it.
    pub async fn acquire_for(&self, index: usize) -> Slot<'_> {
        self.acquire_on(Some(index)).await
    }

    /// A slot of credential `index` for a health probe: it does not queue behind the sends
    /// waiting their turn (a probe is one request, and a circuit's alert waits for it), but
    /// takes its slot under the same rule.
    pub async fn acquire_probe(&self, index: usize) -> Slot<'_> {
        self.find_slot(Some(index)).await
    }

    /// Like [`acquire`](Self::acquire), but says so at once (taking nothing) when every
    /// credential's next free slot — from the ledger's rows, or a `Retry-After` pause — is more
    /// than `horizon` away: a spent day window (SPEC section 8, `[bulk] max_wait`).
    pub async fn acquire_within_horizon(&self, horizon: Duration) -> Result<Slot<'_>, QuotaSpent> {
        let _turn = self.turn.lock().await;
        self.find_slot_before(None, Some(horizon)).await
    }

    async fn acquire_on(&self, only: Option<usize>) -> Slot<'_> {
        let _turn = self.turn.lock().await;
        self.find_slot(only).await
    }

    async fn find_slot(&self, only: Option<usize>) -> Slot<'_> {
        match self.find_slot_before(only, None).await {
            Ok(slot) => slot,
            Err(QuotaSpent(_)) => unreachable!("no horizon, no spent quota"),
        }
    }

    async fn find_slot_before(
        &self,
        only: Option<usize>,
        horizon: Option<Duration>,
    ) -> Result<Slot<'_>, QuotaSpent> {
        loop {
            // Registered before looking, so a completion between the look and the wait is seen.
            let completion = self.completed.notified();
            tokio::pin!(completion);
            completion.as_mut().enable();
            let wake = match self.look(only, horizon).await? {
                Look::Slot(slot) => return Ok(slot),
                Look::Wait(wake) => wake,
            };
            match wake {
                Wake::Yield => tokio::task::yield_now().await,
                Wake::At(at) => {
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = &mut completion => {}
                    }
                }
            }
        }
    }

    /// Takes a slot free now, writing back and visiting the ledger as needed (I/O, but no
    /// waiting for the quota); else says when to look again.
    async fn look(
        &self,
        only: Option<usize>,
        horizon: Option<Duration>,
    ) -> Result<Look<'_>, QuotaSpent> {
        loop {
            let now = self.clock.now();
            // What this process learnt goes to the ledger at least every WRITE_BACK while it
            // sends, so that other processes see its real rows soon.
            let due = {
                let credentials = self.lock();
                (0..credentials.len()).find(|&index| {
                    let local = &credentials[index];
                    local.dirty()
                        && local
                            .last_visit
                            .is_none_or(|at| at.saturating_add(micros(WRITE_BACK)) <= now)
                })
            };
            if let Some(index) = due {
                self.write_back(index).await;
                continue;
            }
            let (at, index, next) = {
                let mut credentials = self.lock();
                let mut order: Vec<usize> = match only {
                    Some(index) => vec![index],
                    None => (0..credentials.len()).collect(),
                };
                // Between equals, the credential idle the longest.
                if order.len() > 1 {
                    order.sort_by_key(|&index| credentials[index].last_completion);
                }
                let mut best: Option<(Micros, usize, Next)> = None;
                for index in order {
                    let local = &mut credentials[index];
                    local.drop_stale(now);
                    let next = match local.pace.paused_until.filter(|&until| until > now) {
                        Some(until) => Next::At(until),
                        None if !local.paced => match local.pacer.take() {
                            Ok(()) => {
                                local.paced = true;
                                local.pacer_until = None;
                                continue_with(local, now)
                            }
                            Err(wait) => {
                                let at = now.saturating_add(micros(wait));
                                local.pacer_until = Some(at);
                                Next::Paced(at)
                            }
                        },
                        None => continue_with(local, now),
                    };
                    if let Next::At(at) = next
                        && at <= now
                        && local.paced
                        && let Some((lease, _)) = local.in_hand.pop_front()
                    {
                        // A slot in hand and a pacer cell: it goes now.
                        local.paced = false;
                        local.held += 1;
                        return Ok(Look::Slot(Slot {
                            limiter: self,
                            credential: index,
                            lease,
                        }));
                    }
                    let at = match next {
                        Next::Visit => now,
                        Next::At(at) | Next::Paced(at) => at,
                    };
                    if best.as_ref().is_none_or(|(best_at, ..)| at < *best_at) {
                        best = Some((at, index, next));
                    }
                }
                // Spent: every credential's next slot, as the ledger said on the last visit
                // (or a pause), lies beyond the horizon.
                if let Some(horizon) = horizon {
                    let spent_until = credentials
                        .iter()
                        .map(|local| {
                            let paused = local
                                .pace
                                .paused_until
                                .max(local.pacer_until)
                                .unwrap_or(Micros::MIN);
                            match local.next_free {
                                Some(free) if local.in_hand.is_empty() => free.max(paused),
                                _ => paused,
                            }
                        })
                        .min()
                        .unwrap_or(now);
                    // Only once the slots already handed out have made their requests: they are
                    // inside the quota, and a pause that withdrew them would send nothing ever
                    // (the next run would hand them out and pause again).
                    let held = credentials.iter().any(|local| local.held > 0);
                    if spent_until > now.saturating_add(micros(horizon)) && !held {
                        return Err(QuotaSpent(spent_until));
                    }
                }
                best.expect("at least one credential")
            };
            let wake = match next {
                Next::Visit => {
                    self.visit(index).await;
                    continue;
                }
                // (Not on the simulated clock of the tests: there timers are exact, and time
                // stands still while a task yields.)
                Next::Paced(_)
                    if self.clock.is_real() && at <= now.saturating_add(micros(PACER_SPIN)) =>
                {
                    Wake::Yield
                }
                Next::Paced(_) if self.clock.is_real() => Wake::At(
                    self.clock
                        .instant_of(at.saturating_sub(micros(PACER_SPIN) / 2)),
                ),
                Next::At(_) | Next::Paced(_) => Wake::At(self.clock.instant_of(at)),
            };
            return Ok(Look::Wait(wake));
        }
    }

    /// Visits the ledger for credential `index`: writes back, asks for a lease.
    async fn visit(&self, index: usize) {
        let want = {
            let mut credentials = self.lock();
            let local = &mut credentials[index];
            let want = local.next_lease.min(local.lease_size());
            // A visit for slots means the last lease was used up: the next may be larger.
            local.next_lease = want.saturating_mul(2).min(local.lease_size());
            want
        };
        self.exchange(index, want).await;
    }

    /// Writes back what this process learnt about credential `index`, asking for nothing.
    async fn write_back(&self, index: usize) {
        self.exchange(index, 0).await;
    }

    async fn exchange(&self, index: usize, want: u32) {
        let now = self.clock.now();
        let lease_id: i64 = rand::random::<i64>() & i64::MAX;
        let (key, quota, write_backs, versions, events) = {
            let mut credentials = self.lock();
            let local = &mut credentials[index];
            let mut write_backs = Vec::new();
            let mut versions = Vec::new();
            for (&id, lease) in &local.leases {
                if lease.dirty {
                    write_backs.push((id, lease.rows()));
                    versions.push((id, lease.version));
                }
            }
            (
                local.key.clone(),
                local.quota.clone(),
                write_backs,
                versions,
                std::mem::take(&mut local.pending),
            )
        };
        let worst_case = now
            .saturating_add(micros(LEASE_USE))
            .saturating_add(self.timeout.saturating_mul(2));
        let visited = self
            .ledger
            .visit(&key, |entry| {
                let ask = rules::Ask {
                    write_backs,
                    events: &events,
                    want,
                    lease: lease_id,
                    arrival: worst_case,
                };
                rules::settle(entry, &quota, now, ask)
            })
            .await;
        let mut credentials = self.lock();
        let local = &mut credentials[index];
        match visited {
            Ok(settled) => {
                for (id, version) in versions {
                    if let Some(lease) = local.leases.get_mut(&id)
                        && lease.version == version
                        && lease.dirty
                    {
                        lease.dirty = false;
                        local.dirty_leases -= 1;
                    }
                }
                local.pace = settled.pace;
                // Never "free now" after finding nothing free: no busy loop of visits.
                local.next_free = settled
                    .next_free
                    .or((want > 0 && settled.granted == 0).then_some(now))
                    .map(|at| at.max(now.saturating_add(1_000)));
                local.last_visit = Some(now);
                if settled.granted > 0 {
                    local.leases.insert(
                        lease_id,
                        Lease {
                            worst_case,
                            open: settled.granted,
                            ..Lease::default()
                        },
                    );
                    let use_by = now.saturating_add(micros(LEASE_USE));
                    local
                        .in_hand
                        .extend((0..settled.granted).map(|_| (lease_id, use_by)));
                }
                local.forget_old_leases(now);
            }
            Err(error) => {
                // Nothing is granted without the ledger; the 429s wait for the next visit.
                let mut events = events;
                events.append(&mut local.pending);
                local.pending = events;
                local.last_visit = Some(now);
                local.next_free = Some(now.saturating_add(micros(Duration::from_secs(1))));
                tracing::error!(%error, "quota ledger unusable; retrying in a second");
            }
        }
    }

    /// Gives back the slots in hand and writes back everything this process learnt, so other
    /// processes see its real rows at once. Requests still out keep their worst case.
    pub async fn close(&self) {
        let count = {
            let mut credentials = self.lock();
            for local in credentials.iter_mut() {
                while let Some((lease, _)) = local.in_hand.pop_front() {
                    local.settle(lease, None);
                }
            }
            credentials.len()
        };
        for index in 0..count {
            if self.lock()[index].dirty() {
                self.write_back(index).await;
            }
        }
    }
}

/// A credential past its pace and pacer: a slot in hand goes now, else the ledger decides.
fn continue_with(local: &Local, now: Micros) -> Next {
    if !local.in_hand.is_empty() {
        return Next::At(now);
    }
    // The last visit found nothing: wait for the first slot to free, but look again after
    // WRITE_BACK (another process's write-back may free one sooner) or when this process
    // has something to write back (a completion).
    let look_again = local
        .last_visit
        .map_or(now, |at| at.saturating_add(micros(WRITE_BACK)));
    match local.next_free {
        Some(at) if at > now && look_again > now && !local.dirty() => Next::At(at.min(look_again)),
        _ => Next::Visit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TIMEOUT: Duration = Duration::from_secs(5);

    impl RateLimiter {
        /// A limiter on tokio's (paused) clock; limiters made with the same `clock` and
        /// `ledger` play processes sharing a state.
        fn simulated(quotas: &[CredentialQuota], ledger: &Ledger, clock: WallClock) -> Self {
            Self::with_clock(quotas, TIMEOUT, ledger.clone(), clock)
        }

        /// Like [`acquire`](Self::acquire), but gives up (taking nothing) after `limit`.
        async fn acquire_within(&self, limit: Duration) -> Option<Slot<'_>> {
            tokio::time::timeout(limit, self.acquire()).await.ok()
        }
    }

    pub(super) fn simulated_clock() -> WallClock {
        WallClock::Simulated {
            start_wall: 1_800_000_000_000_000,
            start: Instant::now(),
        }
    }

    pub(super) fn quotas(limits: &[RateLimit], burst: Option<u32>) -> Vec<CredentialQuota> {
        limits
            .iter()
            .enumerate()
            .map(|(index, limit)| CredentialQuota {
                key: format!("credential-{index}"),
                limit: limit.clone(),
                burst,
            })
            .collect()
    }

    fn one(text: &str) -> RateLimit {
        text.parse::<crate::units::Rate>().unwrap().into()
    }

    pub(super) fn single(text: &str) -> RateLimiter {
        RateLimiter::simulated(
            &quotas(&[one(text)], None),
            &Ledger::in_memory(),
            simulated_clock(),
        )
    }

    /// How the simulated requests behave.
    #[derive(Debug, Clone, Copy)]
    struct Scenario {
        processes: usize,
        tasks: usize,
        total: usize,
        round_trip: Duration,
        /// Every n-th request times out (0: none) and reaches the provider as late as the rule
        /// allows: a timeout after it was given up.
        timeout_every: usize,
        /// The first process dies after this many of its requests (0: never): its request
        /// then out never settles, and reaches the provider as late as the rule allows.
        killed_after: usize,
        /// The provider's timeout.
        timeout: Duration,
    }

    impl Scenario {
        fn plain(tasks: usize, total: usize, round_trip: Duration) -> Self {
            Scenario {
                processes: 1,
                tasks,
                total,
                round_trip,
                timeout_every: 0,
                killed_after: 0,
                timeout: TIMEOUT,
            }
        }
    }

    /// Runs the scenario under paused time; returns when each request reached the "provider",
    /// sorted, per credential. Arrivals are adversarial: answered requests arrive either the
    /// moment they are let go or just before their answer, so late arrivals of one window meet
    /// early arrivals of the next; timed-out ones a whole timeout after msgsend gave up; those
    /// of a killed process twice the timeout after they left.
    fn arrivals(limits: Vec<RateLimit>, burst: Option<u32>, s: Scenario) -> Vec<Vec<Instant>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let credentials = limits.len();
            let ledger = Ledger::in_memory();
            let clock = simulated_clock();
            let remaining = Arc::new(AtomicUsize::new(s.total));
            let mut handles = Vec::new();
            for process in 0..s.processes {
                let limiter = Arc::new(RateLimiter::with_clock(
                    &quotas(&limits, burst),
                    s.timeout,
                    ledger.clone(),
                    clock,
                ));
                let made = Arc::new(AtomicUsize::new(0));
                let dead = process == 0 && s.killed_after > 0;
                let mut tasks = Vec::new();
                for _ in 0..s.tasks {
                    let (limiter, remaining, made) =
                        (limiter.clone(), remaining.clone(), made.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut mine = Vec::new();
                        while let Ok(left) =
                            remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                n.checked_sub(1)
                            })
                        {
                            let slot = limiter.acquire().await;
                            let started = Instant::now();
                            let credential = slot.credential();
                            if dead && made.fetch_add(1, Ordering::SeqCst) >= s.killed_after {
                                // Killed with this request out: it never settles.
                                std::mem::forget(slot);
                                mine.push((credential, started + s.timeout * 2));
                                break;
                            }
                            if s.timeout_every > 0 && left % s.timeout_every == 0 {
                                tokio::time::sleep(s.timeout).await;
                                slot.timed_out();
                                mine.push((credential, Instant::now() + s.timeout));
                            } else {
                                tokio::time::sleep(s.round_trip).await;
                                let arrived = if left % 2 == 0 {
                                    started
                                } else {
                                    Instant::now()
                                };
                                mine.push((credential, arrived));
                                slot.answered();
                            }
                            tokio::task::yield_now().await;
                        }
                        mine
                    }));
                }
                // A process whose work is done gives back what it holds, as a run does at its
                // end; a killed one does not.
                handles.push(tokio::spawn(async move {
                    let mut all = Vec::new();
                    for task in tasks {
                        all.extend(task.await.unwrap());
                    }
                    if !dead {
                        limiter.close().await;
                    }
                    all
                }));
            }
            let mut per_credential = vec![Vec::new(); credentials];
            for handle in handles {
                for (index, at) in handle.await.unwrap() {
                    per_credential[index].push(at);
                }
            }
            per_credential.iter_mut().for_each(|times| times.sort());
            per_credential
        })
    }

    /// The largest number of instants inside any half-open window `[t, t + window)`.
    fn busiest_window(times: &[Instant], window: Duration) -> usize {
        let mut busiest = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            busiest = busiest.max(end - start + 1);
        }
        busiest
    }

    fn assert_every_window_holds(
        times: &[Instant],
        limit: &RateLimit,
    ) -> Result<(), TestCaseError> {
        for rate in limit.windows() {
            let busiest = busiest_window(times, rate.per);
            prop_assert!(
                busiest <= rate.count as usize,
                "{busiest} requests in one window of {rate}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn no_window_ever_holds_more_than_the_quota_whatever_the_processes_do(
            count in 1u32..30,
            window_ms in 10u64..5_000,
            processes in 1usize..4,
            tasks in 1usize..8,
            windows_run in 1usize..5,
            round_trip_percent in 0u32..60,
            timeout_every in prop_oneof![Just(0usize), 2usize..9],
            killed_after in prop_oneof![Just(0usize), 1usize..20],
            burst in prop_oneof![Just(None), (1u32..10).prop_map(Some)],
            timeout_ms in 10u64..2_000,
        ) {
            let rate = crate::units::Rate { count, per: Duration::from_millis(window_ms) };
            let limit = RateLimit::from(rate);
            // Long enough that late arrivals (a timeout, twice one) meet the traffic after.
            let windows_late = (3 * timeout_ms / window_ms) as usize + 1;
            let scenario = Scenario {
                processes,
                tasks,
                total: count as usize * (windows_run + windows_late) + 1,
                round_trip: rate.per * round_trip_percent / 100,
                timeout_every,
                killed_after,
                timeout: Duration::from_millis(timeout_ms),
            };
            let times = arrivals(vec![limit.clone()], burst, scenario).remove(0);
            prop_assert!(!times.is_empty());
            assert_every_window_holds(&times, &limit)?;
        }

        #[test]
        fn several_windows_and_credentials_each_hold(
            counts in proptest::collection::vec(1u32..12, 1..3),
            window_ms in 10u64..1_000,
            processes in 1usize..3,
            tasks in 1usize..8,
        ) {
            // Each credential: N per W, and 2N per 4W (tighter in the long run).
            let limits: Vec<RateLimit> = counts.iter().map(|&count| RateLimit::new(vec![
                crate::units::Rate { count, per: Duration::from_millis(window_ms) },
                crate::units::Rate { count: count * 2, per: Duration::from_millis(window_ms * 4) },
            ]).unwrap()).collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum::<usize>() * 4;
            let scenario = Scenario { processes, ..Scenario::plain(tasks, total, Duration::from_millis(window_ms / 10)) };
            let per_credential = arrivals(limits.clone(), None, scenario);
            for (times, limit) in per_credential.iter().zip(&limits) {
                assert_every_window_holds(times, limit)?;
            }
        }
    }

    #[test]
    fn the_first_window_is_not_a_double_burst() {
        let times = arrivals(
            vec![one("100/min")],
            None,
            Scenario::plain(50, 300, Duration::ZERO),
        )
        .remove(0);
        let start = times[0];
        let in_first_minute = times
            .iter()
            .filter(|&&t| t - start < Duration::from_secs(60))
            .count();
        assert_eq!(in_first_minute, 100);
    }

    #[test]
    fn steady_state_throughput_is_within_a_few_percent_of_the_quota() {
        for (text, tasks, processes) in [
            ("100/min", 50, 1),
            ("50/s", 8, 1),
            ("250/s", 32, 1),
            ("7/10s", 3, 1),
            ("50/s", 8, 2),
            ("100/min", 20, 3),
        ] {
            let limit = one(text);
            let rate = limit.tightest();
            let windows = 20;
            let scenario = Scenario {
                processes,
                ..Scenario::plain(tasks, rate.count as usize * windows, Duration::ZERO)
            };
            let times = arrivals(vec![limit.clone()], None, scenario).remove(0);
            // The opening burst goes at once; every later request needed a slot to free up, so
            // the steady rate is the requests after the first window over the time they took.
            let elapsed = *times.last().unwrap() - times[0];
            let achieved = (times.len() - rate.count as usize) as f64 / elapsed.as_secs_f64();
            let ratio = achieved / rate.per_second();
            assert!(
                (0.97..=1.0).contains(&ratio),
                "{text} over {processes} processes: achieved {ratio:.4} of the quota"
            );
        }
    }

    #[test]
    fn a_burst_of_one_spaces_requests_evenly() {
        let times = arrivals(
            vec![one("20/s")],
            Some(1),
            Scenario::plain(8, 200, Duration::from_millis(2)),
        )
        .remove(0);
        let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let even = gaps
            .iter()
            .filter(|&&gap| gap >= Duration::from_millis(49))
            .count();
        // Every gap is the even 50 ms but for adversarial arrivals (a request arriving at
        // its answer rather than its departure) shifting pairs by the 2 ms round trip.
        assert!(
            even * 10 >= gaps.len() * 4,
            "{even} of {} gaps even",
            gaps.len()
        );
        let elapsed = *times.last().unwrap() - times[0];
        let ratio = (times.len() - 1) as f64 / elapsed.as_secs_f64() / 20.0;
        assert!((0.97..=1.0).contains(&ratio), "{ratio:.4} of the quota");
    }

    #[test]
    fn credentials_share_the_load_and_add_up() {
        let per_credential = arrivals(
            vec![one("10/s"); 4],
            None,
            Scenario::plain(16, 400, Duration::from_millis(20)),
        );
        for times in &per_credential {
            assert_eq!(times.len(), 100);
            assert!(busiest_window(times, Duration::from_secs(1)) <= 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_process_sees_the_first_ones_requests() {
        let ledger = Ledger::in_memory();
        let clock = simulated_clock();
        let first = RateLimiter::simulated(&quotas(&[one("2/s")], None), &ledger, clock);
        let second = RateLimiter::simulated(&quotas(&[one("2/s")], None), &ledger, clock);
        let before = Instant::now();
        first.acquire().await.answered();
        first.acquire().await.answered();
        first.close().await;
        // The second process starts inside the first one's window: it waits for it to pass.
        second.acquire().await.answered();
        assert_eq!(Instant::now() - before, Duration::from_millis(1_010));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_process_holds_its_slot_for_twice_the_timeout() {
        let ledger = Ledger::in_memory();
        let clock = simulated_clock();
        let dead = RateLimiter::simulated(&quotas(&[one("1/s")], None), &ledger, clock);
        let before = Instant::now();
        std::mem::forget(dead.acquire().await);
        drop(dead);
        let next = RateLimiter::simulated(&quotas(&[one("1/s")], None), &ledger, clock);
        next.acquire().await.answered();
        // Lease use (1 s) + twice the timeout (10 s) + the window and its margin (1.01 s).
        assert_eq!(Instant::now() - before, Duration::from_millis(12_010));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_request_keeps_its_slot_one_more_timeout() {
        let limiter = single("1/s");
        let before = Instant::now();
        let slot = limiter.acquire().await;
        tokio::time::sleep(TIMEOUT).await;
        slot.timed_out();
        limiter.acquire().await.answered();
        assert_eq!(
            Instant::now() - before,
            TIMEOUT * 2 + Duration::from_millis(1_010)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_takes_no_slot() {
        let limiter = single("1/s");
        let first = limiter.acquire_within(Duration::from_millis(1)).await;
        let first = first.map(|slot| {
            let credential = slot.credential();
            slot.answered();
            credential
        });
        assert_eq!(first, Some(0));
        assert!(
            limiter
                .acquire_within(Duration::from_millis(500))
                .await
                .is_none()
        );
        let before = Instant::now();
        let _slot = limiter.acquire().await;
        // One second (plus the 1 % margin) after the first slot, not after the abandoned one.
        assert_eq!(Instant::now() - before, Duration::from_millis(510));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_slot_does_not_count() {
        // A burst of 2, so the pacer lets the second go at once: only the ledger decides.
        let limiter = RateLimiter::simulated(
            &quotas(&[one("1/s")], Some(2)),
            &Ledger::in_memory(),
            simulated_clock(),
        );
        limiter.acquire().await.unused();
        let before = Instant::now();
        let _slot = limiter.acquire().await;
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_counts_from_when_its_answer_came_back() {
        let limiter = Arc::new(single("1/s"));
        let start = Instant::now();
        let slow = limiter.acquire().await;
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let _slot = limiter.acquire().await;
                Instant::now()
            }
        });
        // The first request takes 3 s to answer: the next may not go before it is back + 1 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        slow.answered();
        let second = waiter.await.unwrap();
        assert_eq!(second - start, Duration::from_millis(4_010));
    }

    /// The allowance the ledger holds, after this process wrote back what it saw.
    async fn allowance(limiter: &RateLimiter) -> u32 {
        limiter.write_back(0).await;
        let local = &limiter.lock()[0];
        local.quota.allowance(&local.pace)
    }

    /// How many slots can be taken right now, all given back answered.
    async fn takeable_now(limiter: &RateLimiter) -> usize {
        let mut slots = Vec::new();
        while let Some(slot) = limiter.acquire_within(Duration::from_millis(1)).await {
            slots.push(slot);
        }
        let taken = slots.len();
        slots.into_iter().for_each(Slot::answered);
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_cuts_the_pace_to_what_the_provider_took_and_clean_windows_raise_it() {
        let limiter = single("20/s");
        let mut slots = Vec::new();
        for _ in 0..20 {
            slots.push(limiter.acquire().await);
        }
        // The provider took 12 and refused 8: one cut (the 8 answers belong to one window),
        // to the 12 it took, more than half the allowance.
        for (i, slot) in slots.into_iter().enumerate() {
            if i < 12 {
                slot.answered();
            } else {
                slot.rate_limited(None);
            }
        }
        assert_eq!(allowance(&limiter).await, 12);
        tokio::time::advance(Duration::from_millis(1_010)).await;
        // A window after the cut the first step back (5 % of 20 = 1) is already due.
        assert_eq!(takeable_now(&limiter).await, 13);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(takeable_now(&limiter).await, 18);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(takeable_now(&limiter).await, 20, "never above the quota");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cut_is_shared_with_the_next_process() {
        let ledger = Ledger::in_memory();
        let clock = simulated_clock();
        let first = RateLimiter::simulated(&quotas(&[one("100/min")], None), &ledger, clock);
        first.acquire().await.rate_limited(None);
        first.close().await;
        let next = RateLimiter::simulated(&quotas(&[one("100/min")], None), &ledger, clock);
        assert_eq!(allowance(&next).await, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn without_accepted_requests_a_429_halves_the_pace() {
        let limiter = single("100/min");
        limiter.acquire().await.rate_limited(None);
        assert_eq!(allowance(&limiter).await, 50);
        // A second 429 within the same window does not cut again...
        limiter.acquire().await.rate_limited(None);
        assert_eq!(allowance(&limiter).await, 50);
        // ...one a window later does, from the allowance that clean window raised (50 + 5).
        tokio::time::advance(Duration::from_secs(60)).await;
        limiter.acquire().await.rate_limited(None);
        assert_eq!(allowance(&limiter).await, 27);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_credential() {
        let limiter = RateLimiter::simulated(
            &quotas(&[one("10/s"), one("10/s")], None),
            &Ledger::in_memory(),
            simulated_clock(),
        );
        let first = limiter.acquire_for(0).await;
        first.rate_limited(Some(Duration::from_secs(3)));
        let before = Instant::now();
        // The other credential is not paused...
        assert_eq!(limiter.acquire().await.credential(), 1);
        assert_eq!(Instant::now(), before);
        // ...this one is, for the 3 s the provider asked.
        let _slot = limiter.acquire_for(0).await;
        assert_eq!(Instant::now() - before, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_retry_after_saturates_instead_of_panicking() {
        let limiter = RateLimiter::simulated(
            &quotas(&[one("10/s"), one("10/s")], None),
            &Ledger::in_memory(),
            simulated_clock(),
        );
        limiter
            .acquire_for(0)
            .await
            .rate_limited(Some(Duration::MAX));
        // The other credential still serves, once each: no slot was released twice.
        assert_eq!(limiter.acquire().await.credential(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_day_window_is_said_at_once_not_waited_for() {
        let limit =
            RateLimit::new(vec!["100/s".parse().unwrap(), "3/day".parse().unwrap()]).unwrap();
        let limiter = RateLimiter::simulated(
            &quotas(&[limit], None),
            &Ledger::in_memory(),
            simulated_clock(),
        );
        let horizon = Duration::from_secs(600);
        for _ in 0..3 {
            let slot = limiter.acquire_within_horizon(horizon).await;
            assert!(slot.is_ok(), "{slot:?}");
        }
        let before = Instant::now();
        let spent = limiter.acquire_within_horizon(horizon).await.unwrap_err();
        assert_eq!(Instant::now(), before, "said at once");
        assert!(spent.0 > limiter.clock.now() + micros(Duration::from_secs(3_600)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_that_waited_too_long_moves_its_worst_case() {
        let ledger = Ledger::in_memory();
        let clock = simulated_clock();
        let limiter = RateLimiter::simulated(&quotas(&[one("1/s")], None), &ledger, clock);
        let slot = limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        slot.refresh().await;
        let rows = ledger
            .visit("credential-0", |entry| entry.rows().to_vec())
            .await
            .unwrap();
        let now = clock.now();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].arrived_by >= now + 2 * micros(TIMEOUT), "{rows:?}");
        std::mem::forget(slot);
    }
}
