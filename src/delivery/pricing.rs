//! What one message costs on each channel (SPEC section 10): the providers' `price`, an SMS
//! priced by its size in EUC-KR bytes (short up to 90, long beyond). A message is charged once,
//! at the price of the provider that accepted it; the budget reserves the price of the channel
//! a request is about to use.

use crate::cost::{Money, Price};
use crate::provider::{ProviderKind, ProviderSettings};
use crate::sms_length::{self, SmsClass};

/// The configured prices, per provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pricing {
    kakaotalk: Option<Price>,
    sms: Option<Price>,
}

impl Pricing {
    pub fn new(providers: &[ProviderSettings]) -> Pricing {
        let price = |kind: ProviderKind| {
            providers
                .iter()
                .find(|p| p.kind == kind)
                .and_then(|p| p.price)
        };
        Pricing {
            kakaotalk: price(ProviderKind::KakaoTalk),
            sms: price(ProviderKind::Sms),
        }
    }

    /// Whether `kind` has a price (a budget needs one for every channel a run may use).
    pub fn is_priced(&self, kind: ProviderKind) -> bool {
        self.price(kind).is_some()
    }

    fn price(&self, kind: ProviderKind) -> Option<Price> {
        match kind {
            ProviderKind::KakaoTalk => self.kakaotalk,
            ProviderKind::Sms => self.sms,
        }
    }

    /// The prices of one rendered message, measured once.
    pub fn of(&self, text: &str) -> MessagePrice {
        let sms_class = sms_length::measure(text).ok().map(|length| length.class());
        MessagePrice {
            kakaotalk: self.kakaotalk.map_or(Money::ZERO, |p| p.of(false)),
            sms: self
                .sms
                // A message SMS cannot carry is never sent (nor charged) by SMS; an estimate
                // of "all by SMS" prices it as a long one, the upper bound.
                .map_or(Money::ZERO, |p| p.of(sms_class != Some(SmsClass::Short))),
            sms_class,
        }
    }
}

/// What one rendered message costs on each channel, and its SMS size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePrice {
    kakaotalk: Money,
    sms: Money,
    /// `None`: not representable in EUC-KR (it cannot go by SMS).
    pub sms_class: Option<SmsClass>,
}

impl MessagePrice {
    pub fn on(&self, kind: ProviderKind) -> Money {
        match kind {
            ProviderKind::KakaoTalk => self.kakaotalk,
            ProviderKind::Sms => self.sms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pricing() -> Pricing {
        Pricing {
            kakaotalk: Some(Price::Flat("8.4".parse().unwrap())),
            sms: Some(Price::BySize {
                short: "9.9".parse().unwrap(),
                long: "29.7".parse().unwrap(),
            }),
        }
    }

    #[test]
    fn an_sms_is_priced_by_its_size_in_euc_kr_bytes() {
        let short = pricing().of(&"가".repeat(45)); // 90 bytes
        assert_eq!(short.sms_class, Some(SmsClass::Short));
        assert_eq!(short.on(ProviderKind::Sms), "9.9".parse().unwrap());
        assert_eq!(short.on(ProviderKind::KakaoTalk), "8.4".parse().unwrap());
        let long = pricing().of(&format!("{}a", "가".repeat(45))); // 91 bytes
        assert_eq!(long.sms_class, Some(SmsClass::Long));
        assert_eq!(long.on(ProviderKind::Sms), "29.7".parse().unwrap());
        let emoji = pricing().of("hi 😀");
        assert_eq!(emoji.sms_class, None);
    }

    #[test]
    fn an_unpriced_provider_costs_nothing() {
        let none = Pricing::default();
        assert!(!none.is_priced(ProviderKind::Sms));
        assert_eq!(none.of("hi").on(ProviderKind::Sms), Money::ZERO);
    }
}
