//! What messages cost (SPEC section 10): an amount of money in any currency ([`Money`]), a
//! provider's [`Price`] (SMS may price short and long messages apart), and a job's [`Budget`]
//! (`--max-cost`), which a send reserves from before its request leaves so that concurrent
//! sends can never together pass it.
//!
//! Amounts are held in ten-thousandths of the currency's unit, as integers: prices such as
//! 8.4 and 9.9 add up exactly, and "stop exactly before the budget would be passed" does not
//! depend on floating-point rounding.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// How many of [`Money`]'s units make one unit of the currency.
const SCALE: u64 = 10_000;

/// An amount of money, never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(u64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// `amount` in the currency's units, to four decimals; `None` for a negative, not finite
    /// or absurdly large amount.
    pub fn from_f64(amount: f64) -> Option<Money> {
        let scaled = (amount * SCALE as f64).round();
        // Far below u64::MAX: sums of millions of prices stay exact and cannot overflow.
        (amount.is_finite() && (0.0..=1e15).contains(&scaled)).then_some(Money(scaled as u64))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// The stored form (ten-thousandths), for the journal.
    pub fn units(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    pub fn from_units(units: i64) -> Money {
        Money(u64::try_from(units).unwrap_or(0))
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    pub fn saturating_mul(self, count: u64) -> Money {
        Money(self.0.saturating_mul(count))
    }
}

/// Written with as many decimals as it needs: `8.4`, `12`, `0.0125`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / SCALE;
        let fraction = self.0 % SCALE;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:04}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// In JSON, a number (`8.4`).
impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl<'de> serde::Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let amount = f64::deserialize(deserializer)?;
        Money::from_f64(amount)
            .ok_or_else(|| serde::de::Error::custom(format!("{amount} is not an amount")))
    }
}

impl FromStr for Money {
    type Err = String;

    /// `120`, `99.5`: a plain decimal amount, at most four decimals.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not an amount (a number such as 5000 or 99.5)");
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 4 {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let fraction: u64 = format!("{fraction:0<4}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(fraction))
            .filter(|&units| units <= 1_000_000_000_000_000)
            .map(Money)
            .ok_or_else(bad)
    }
}

/// What one accepted message costs at a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Price {
    /// One price per message.
    Flat(Money),
    /// SMS: a short message (up to 90 EUC-KR bytes) and a long one (LMS).
    BySize { short: Money, long: Money },
}

impl Price {
    /// The price of a message; `long` says whether it is a long SMS (ignored by a flat price).
    pub fn of(self, long: bool) -> Money {
        match self {
            Price::Flat(price) => price,
            Price::BySize { short, long: l } => {
                if long {
                    l
                } else {
                    short
                }
            }
        }
    }
}

/// A job's spending limit (`--max-cost`): what earlier runs spent, what this run's accepted
/// messages spent, and what the sends in flight have reserved. A send reserves its price
/// before its request leaves and either turns the reservation into spending (the provider
/// accepted) or gives it back; a reservation that would pass the limit is refused, and the
/// campaign stops there. Spending never passes the limit, whatever the concurrency.
#[derive(Debug)]
pub struct Budget {
    limit: Money,
    state: Mutex<Spending>,
    /// Wakes the sends waiting for reservations to settle ([`Budget::reserve_or_settle`]).
    settled: tokio::sync::Notify,
}

/// What [`Budget::reserve_or_settle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved: the request may leave.
    Reserved,
    /// Nothing is reserved any more and the price still does not fit: the budget is spent.
    Spent,
}

#[derive(Debug, Default, Clone, Copy)]
struct Spending {
    spent: Money,
    reserved: Money,
}

impl Budget {
    /// A budget of `limit` of which `spent` is already spent (earlier runs of the job).
    pub fn new(limit: Money, spent: Money) -> Budget {
        Budget {
            limit,
            state: Mutex::new(Spending {
                spent,
                reserved: Money::ZERO,
            }),
            settled: tokio::sync::Notify::new(),
        }
    }

    pub fn limit(&self) -> Money {
        self.limit
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Spending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `price` for a request about to leave; `false` if that could pass the limit.
    pub fn reserve(&self, price: Money) -> bool {
        let mut state = self.state();
        let after = state
            .spent
            .saturating_add(state.reserved)
            .saturating_add(price);
        if after > self.limit {
            return false;
        }
        state.reserved = state.reserved.saturating_add(price);
        true
    }

    /// Reserves `price`, or waits while other sends hold reservations: one that is given back
    /// (its message failed) may make room. Only when nothing is reserved and `price` still does
    /// not fit is the budget spent. So a campaign stops exactly before the send that would pass
    /// the limit, whatever the concurrency, and never for a reservation that was given back.
    pub async fn reserve_or_settle(&self, price: Money) -> Reservation {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.reserve(price) {
                return Reservation::Reserved;
            }
            if self.state().reserved == Money::ZERO {
                return Reservation::Spent;
            }
            settled.await;
        }
    }

    /// Gives a reservation back: the message was not accepted.
    pub fn release(&self, price: Money) {
        let mut state = self.state();
        state.reserved = state.reserved.saturating_sub(price);
        drop(state);
        self.settled.notify_waiters();
    }

    /// Turns a reservation into spending: the provider accepted the message.
    pub fn charge(&self, price: Money) {
        let mut state = self.state();
        state.reserved = state.reserved.saturating_sub(price);
        state.spent = state.spent.saturating_add(price);
        drop(state);
        self.settled.notify_waiters();
    }

    pub fn spent(&self) -> Money {
        self.state().spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_read_and_print_as_decimals() {
        for (text, printed) in [
            ("120", "120"),
            ("99.5", "99.5"),
            ("8.40", "8.4"),
            ("0.0125", "0.0125"),
            ("0", "0"),
        ] {
            assert_eq!(text.parse::<Money>().unwrap().to_string(), printed);
        }
        for bad in [
            "",
            "-1",
            "1.23456",
            "1e3",
            "abc",
            "1.2.3",
            ".5",
            "99999999999999999",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Money::from_f64(8.4).unwrap().to_string(), "8.4");
        assert_eq!(Money::from_f64(9.9).unwrap().to_string(), "9.9");
        assert!(Money::from_f64(-0.5).is_none());
        assert!(Money::from_f64(f64::NAN).is_none());
        assert!(Money::from_f64(f64::INFINITY).is_none());
        assert!(Money::from_f64(1e300).is_none());
    }

    #[test]
    fn prices_add_up_exactly() {
        let price = Money::from_f64(8.4).unwrap();
        let ten = (0..10).fold(Money::ZERO, |sum, _| sum.saturating_add(price));
        assert_eq!(ten, "84".parse().unwrap());
        assert_eq!(price.saturating_mul(10), ten);
    }

    #[test]
    fn an_sms_price_depends_on_the_size() {
        let short = Money::from_f64(9.9).unwrap();
        let long = Money::from_f64(29.7).unwrap();
        let sms = Price::BySize { short, long };
        assert_eq!(sms.of(false), short);
        assert_eq!(sms.of(true), long);
        assert_eq!(Price::Flat(short).of(true), short);
    }

    #[test]
    fn a_budget_refuses_the_reservation_that_would_pass_it() {
        let price: Money = "10".parse().unwrap();
        let budget = Budget::new("35".parse().unwrap(), Money::ZERO);
        assert!(budget.reserve(price));
        assert!(budget.reserve(price));
        assert!(budget.reserve(price));
        // 30 reserved: a fourth would make 40.
        assert!(!budget.reserve(price));
        budget.release(price);
        assert!(budget.reserve(price), "a released reservation frees room");
        budget.charge(price);
        budget.charge(price);
        budget.charge(price);
        assert_eq!(budget.spent(), "30".parse().unwrap());
        assert!(!budget.reserve(price));
        assert!(
            budget.reserve("5".parse().unwrap()),
            "exactly the limit is allowed"
        );
    }

    #[tokio::test]
    async fn a_refused_reservation_waits_for_the_others_to_settle() {
        let price: Money = "10".parse().unwrap();
        let budget = std::sync::Arc::new(Budget::new("25".parse().unwrap(), Money::ZERO));
        assert!(budget.reserve(price));
        assert!(budget.reserve(price));
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve_or_settle(price).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // One message failed: its reservation makes room for the waiting one.
        budget.release(price);
        assert_eq!(waiting.await.unwrap(), Reservation::Reserved);
        budget.charge(price);
        budget.charge(price);
        // 20 spent, nothing reserved: 10 more would pass 25.
        assert_eq!(budget.reserve_or_settle(price).await, Reservation::Spent);
    }

    #[test]
    fn a_budget_counts_what_earlier_runs_spent() {
        let budget = Budget::new("100".parse().unwrap(), "95".parse().unwrap());
        assert!(!budget.reserve("10".parse().unwrap()));
        assert!(budget.reserve("5".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn spending_never_passes_the_limit(
            limit in 0u64..1_000,
            steps in proptest::collection::vec((1u64..50, 0u8..3), 0..200),
        ) {
            let budget = Budget::new(Money(limit), Money::ZERO);
            let mut held = Vec::new();
            for (price, action) in steps {
                if budget.reserve(Money(price)) {
                    held.push(Money(price));
                }
                if let Some(price) = held.pop() {
                    match action {
                        0 => budget.charge(price),
                        1 => budget.release(price),
                        _ => held.push(price),
                    }
                }
                let state = *budget.state();
                prop_assert!(state.spent.saturating_add(state.reserved) <= Money(limit));
            }
        }

        #[test]
        fn any_text_parses_or_errs_and_round_trips(text in "[0-9.]{0,12}") {
            if let Ok(money) = text.parse::<Money>() {
                prop_assert_eq!(money.to_string().parse::<Money>(), Ok(money));
            }
        }
    }
}
