//! The raw layer of the config: serde structs that mirror the TOML file key for key
//! (`deny_unknown_fields` everywhere, so a misspelt key is an error, not a silent default).
//! Every string value goes through [`Expanded`], which substitutes `${ENV_VAR}` and parses the
//! result, so a bad duration or a missing variable is reported at its own line and key.
//!
//! The same structs write the resolved config back (`config check`, [`super::print`]): a value
//! is written as the file would hold it (see [`ConfigText`]), a secret as `(redacted)`, and an
//! absent key (`None`) not at all.

use std::fmt::Display;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::secret::Secret;
use crate::units::{Rate, RateLimit, parse_duration};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub timezone: Option<Expanded<String>>,
    pub state_dir: Option<Expanded<PathBuf>>,
    /// `postgres://...`: the whole state there instead of `state_dir` (SPEC section 9).
    pub state_database: Option<Expanded<String>>,
    #[serde(default)]
    pub providers: RawProviders,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub circuit_breaker: RawCircuitBreaker,
    #[serde(default)]
    pub bulk: RawBulk,
    #[serde(default)]
    pub message: RawMessage,
    #[serde(default)]
    pub source: RawSource,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub alerts: RawAlerts,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviders {
    pub kakaotalk: Option<RawProvider>,
    pub sms: Option<RawProvider>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub base_url: Expanded<reqwest::Url>,
    pub username: Option<Expanded<String>>,
    pub password: Option<Expanded<Secret>>,
    pub credentials: Option<Vec<RawCredential>>,
    pub rate_limit: Option<RawRateLimit>,
    pub burst: Option<u32>,
    pub idempotency_header: Option<Expanded<String>>,
    pub timeout: Option<Expanded<Dur>>,
    pub health_path: Option<Expanded<String>>,
    pub max_message_length: Option<u32>,
    /// SMS only: the longest message in EUC-KR bytes (SPEC section 10).
    pub max_message_bytes: Option<u32>,
    pub price: Option<RawPrice>,
}

/// `price = 8.4`, or for SMS `price = { short = 9.9, long = 29.7 }` (SPEC section 10).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RawPrice {
    Flat(f64),
    BySize { short: f64, long: f64 },
}

/// Read by hand rather than `untagged`, whose error ("data did not match any variant") would
/// not say what a price looks like.
impl<'de> Deserialize<'de> for RawPrice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct BySize {
            short: f64,
            long: f64,
        }
        const EXPECTED: &str =
            "a price is a number (price = 8.4) or, for SMS, { short = 9.9, long = 29.7 }";
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Float(price) => Ok(RawPrice::Flat(price)),
            toml::Value::Integer(price) => Ok(RawPrice::Flat(price as f64)),
            toml::Value::Table(table) => {
                let BySize { short, long } =
                    BySize::deserialize(table).map_err(|_| de::Error::custom(EXPECTED))?;
                Ok(RawPrice::BySize { short, long })
            }
            _ => Err(de::Error::custom(EXPECTED)),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub username: Expanded<String>,
    pub password: Expanded<Secret>,
    pub rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub primary: Option<Expanded<String>>,
    pub fallback: Option<Expanded<String>>,
    pub strategy: Option<Expanded<String>>,
    pub acquire_timeout: Option<Expanded<Dur>>,
    pub preflight: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub initial_delay: Option<Expanded<Dur>>,
    pub multiplier: Option<f64>,
    pub max_delay: Option<Expanded<Dur>>,
    pub jitter: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    pub failure_threshold: Option<u32>,
    pub open_timeout: Option<Expanded<Dur>>,
    pub all_open_wait: Option<Expanded<Dur>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBulk {
    pub concurrency: Option<u32>,
    pub batch_size: Option<u32>,
    pub shutdown_grace: Option<Expanded<Dur>>,
    pub max_wait: Option<Expanded<Dur>>,
    /// The most a job may spend (`--max-cost`), in `[message] currency`.
    pub max_cost: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub header: Option<Expanded<String>>,
    /// `"info"` (default) or `"ad"` (SPEC section 10).
    pub kind: Option<Expanded<String>>,
    /// The advertiser's name on an ad's first line, after `(광고)`.
    pub sender: Option<Expanded<String>>,
    /// An ad's last line: the free opt-out number.
    pub opt_out: Option<Expanded<String>>,
    pub currency: Option<Expanded<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub csv: Option<Expanded<PathBuf>>,
    pub database: Option<Expanded<String>>,
    pub query: Option<Expanded<String>>,
    pub suppression: Option<Expanded<PathBuf>>,
    /// The column holding the date of each recipient's advertising consent.
    pub consent_column: Option<Expanded<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub quiet_hours: Option<Expanded<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub textfile: Option<Expanded<PathBuf>>,
    /// A string here, parsed in `resolve`: a bad URL is reported without quoting it.
    pub pushgateway: Option<Expanded<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// A string here, parsed in `resolve`: a bad URL is reported without quoting it.
    pub webhook: Option<Expanded<String>>,
    pub min_success_rate: Option<f64>,
    pub max_queue: Option<u64>,
    pub max_response_time: Option<Expanded<Dur>>,
}

/// A duration as SPEC section 7 writes it (`"5s"`), for use inside [`Expanded`].
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = crate::units::UnitError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration(text).map(Dur)
    }
}

/// A string value with `${ENV_VAR}` substituted, then parsed into `T`.
#[derive(Debug, Clone)]
pub struct Expanded<T>(pub T);

impl<'de, T> Deserialize<'de> for Expanded<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = deserializer.deserialize_str(StringVisitor(PhantomData::<T>))?;
        parse_expanded(&raw).map(Expanded)
    }
}

impl<T: ConfigText> Serialize for Expanded<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.config_text())
    }
}

/// `rate_limit`: one rate (`"100/min"`) or a list of windows (`["20/s", "10000/day"]`), each
/// string expanded and parsed like any [`Expanded`] value.
#[derive(Debug, Clone)]
pub struct RawRateLimit(pub RateLimit);

impl<'de> Deserialize<'de> for RawRateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;
        impl<'de> de::Visitor<'de> for LimitVisitor {
            type Value = RateLimit;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a rate such as \"100/min\" or a list of them")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RateLimit, E> {
                Ok(RateLimit::from(parse_expanded::<Rate, E>(value)?))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RateLimit, A::Error> {
                let mut windows = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    windows.push(parse_expanded::<Rate, A::Error>(&text)?);
                }
                RateLimit::new(windows)
                    .ok_or_else(|| de::Error::custom("the list of rates is empty"))
            }
        }
        deserializer.deserialize_any(LimitVisitor).map(RawRateLimit)
    }
}

impl Serialize for RawRateLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.windows() {
            [one] => serializer.serialize_str(&one.to_string()),
            many => serializer.collect_seq(many.iter().map(Rate::to_string)),
        }
    }
}

/// `${ENV_VAR}` substituted in `raw`, then parsed into `T`.
fn parse_expanded<T, E>(raw: &str) -> Result<T, E>
where
    T: FromStr,
    T::Err: Display,
    E: de::Error,
{
    let expanded = expand_env(raw, |name| std::env::var(name).ok()).map_err(E::custom)?;
    expanded.parse().map_err(E::custom)
}

/// A value as the config file writes it, `$` escaped as `$$` so that it reads back unchanged.
pub trait ConfigText {
    fn config_text(&self) -> String;
}

fn escaped(text: &str) -> String {
    text.replace('$', "$$")
}

impl ConfigText for String {
    fn config_text(&self) -> String {
        escaped(self)
    }
}

impl ConfigText for PathBuf {
    fn config_text(&self) -> String {
        escaped(&self.display().to_string())
    }
}

impl ConfigText for reqwest::Url {
    fn config_text(&self) -> String {
        escaped(&crate::secret::redacted_url(self, false))
    }
}

impl ConfigText for Rate {
    fn config_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigText for Dur {
    fn config_text(&self) -> String {
        crate::units::format_duration(self.0)
    }
}

/// Never the secret itself.
impl ConfigText for Secret {
    fn config_text(&self) -> String {
        "(redacted)".to_string()
    }
}

struct StringVisitor<T>(PhantomData<T>);

impl<T> de::Visitor<'_> for StringVisitor<T> {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("environment variable {0} is not set")]
    Missing(String),
    #[error("'${{' without a closing '}}' (write '$$' for a literal '$')")]
    Unclosed,
    #[error("'${{}}' names no environment variable")]
    Empty,
}

/// Substitutes `${NAME}` with `lookup(NAME)`; `$$` is a literal `$`, and a `$` before anything
/// else stays as it is.
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(inner) = after.strip_prefix('{') {
            let close = inner.find('}').ok_or(ExpandError::Unclosed)?;
            let name = inner[..close].trim();
            if name.is_empty() {
                return Err(ExpandError::Empty);
            }
            out.push_str(&lookup(name).ok_or_else(|| ExpandError::Missing(name.to_string()))?);
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cret".to_string())
    }

    #[test]
    fn variables_are_substituted_and_dollars_escaped() {
        assert_eq!(expand_env("${PW}", lookup), Ok("s3cret".into()));
        assert_eq!(expand_env("a-${PW}-b", lookup), Ok("a-s3cret-b".into()));
        assert_eq!(
            expand_env("cost $$5 or $5", lookup),
            Ok("cost $5 or $5".into())
        );
        assert_eq!(expand_env("plain", lookup), Ok("plain".into()));
    }

    #[test]
    fn missing_or_malformed_variables_are_errors() {
        assert_eq!(
            expand_env("${NOPE}", lookup),
            Err(ExpandError::Missing("NOPE".into()))
        );
        assert_eq!(expand_env("${PW", lookup), Err(ExpandError::Unclosed));
        assert_eq!(expand_env("${}", lookup), Err(ExpandError::Empty));
    }
}
