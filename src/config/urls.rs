//! The URLs a config names besides the providers': the source database (its password kept out
//! of every printout) and the monitoring endpoints (Pushgateway, webhook), checked at their key.

use super::raw::Expanded;
use super::{ConfigError, DatabaseUrl, Locator};
use crate::secret::Secret;

/// `sqlite://PATH` or `postgres://...`; the password, if any, is kept out of every printout.
pub(super) fn database_url(url: String) -> Result<DatabaseUrl, String> {
    let redacted = match url.split_once("://") {
        // A query or user info on a SQLite URL is shown redacted like any other.
        Some(("sqlite", _)) => match reqwest::Url::parse(&url) {
            Ok(parsed) => crate::secret::redacted_url(&parsed, false),
            Err(_) => url.split('?').next().unwrap_or_default().to_string(),
        },
        Some(("postgres" | "postgresql", _)) => match reqwest::Url::parse(&url) {
            Ok(parsed) => crate::secret::redacted_url(&parsed, false),
            Err(_) => return Err("is not a valid postgres:// URL".to_string()),
        },
        _ => return Err("must start with sqlite:// or postgres://".to_string()),
    };
    Ok(DatabaseUrl {
        url: Secret::new(url),
        redacted,
    })
}

/// A monitoring URL (`[metrics] pushgateway`, `[alerts] webhook`): http or https with a host.
pub(super) fn monitoring_url(
    raw: Option<Expanded<String>>,
    key: &str,
    at: &Locator,
) -> Result<Option<reqwest::Url>, ConfigError> {
    let Some(Expanded(text)) = raw else {
        return Ok(None);
    };
    match reqwest::Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(Some(url))
        }
        // The text is not quoted: it may hold a token.
        _ => Err(at.error(key, "must be an http:// or https:// URL with a host")),
    }
}
