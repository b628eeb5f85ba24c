//! Configuration: the TOML file of SPEC section 5 turned into typed [`Settings`] once, at the
//! start of a command, before anything is sent. The raw serde layer lives in [`raw`], the
//! validation that builds domain values in [`resolve`]. Every error names the file, the line and
//! the key, and never quotes a secret.

pub mod print;
mod raw;
mod resolve;
pub mod security;
mod urls;

pub use resolve::MAX_CONCURRENCY;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::advert::MessageKind;
use crate::cost::Money;
use crate::policy::retry::RetryPolicy;
use crate::policy::strategy::Strategy;
use crate::provider::{ProviderKind, ProviderSettings};
use crate::schedule::QuietHours;
use crate::secret::Secret;
use crate::template::{Frame, Template};

/// The file msgsend reads when neither `--config` nor `$MSGSEND_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "msgsend.toml";

/// The resolved configuration. The core never sees raw TOML.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings were read from.
    pub file: PathBuf,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    pub state_dir: PathBuf,
    /// `state_database`: the journal, the locks and the quota ledger in PostgreSQL, shared by
    /// every host that names it; `state_dir` is then not used (SPEC section 9).
    pub state_database: Option<DatabaseUrl>,
    /// The configured providers, KakaoTalk first when present.
    pub providers: Vec<ProviderSettings>,
    pub routing: RoutingSettings,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    pub bulk: BulkSettings,
    pub message: MessageSettings,
    pub source: SourceSettings,
    pub quiet_hours: Option<QuietHours>,
    pub metrics: MetricsSettings,
    pub alerts: AlertSettings,
}

impl Settings {
    pub fn provider(&self, kind: ProviderKind) -> Option<&ProviderSettings> {
        self.providers.iter().find(|provider| provider.kind == kind)
    }

    /// A message no configured provider would take (longer than every `max_message_length`;
    /// for SMS also not representable in EUC-KR or over `max_message_bytes`) is refused before
    /// anything is sent; `when` says at which stage it was measured.
    pub fn check_message_length(&self, text: &str, when: &str) -> Result<(), String> {
        let when = if when.is_empty() {
            String::new()
        } else {
            format!(" {when}")
        };
        let length = text.chars().count();
        let why_not: Vec<String> = self
            .providers
            .iter()
            .filter_map(|p| why_not_taken(p, text, length).map(|why| format!("{}: {why}", p.kind)))
            .collect();
        if why_not.len() == self.providers.len() {
            return Err(format!(
                "no provider takes the message{when} ({})",
                why_not.join("; ")
            ));
        }
        Ok(())
    }
}

/// Why `provider` would not take `text` (`length` characters), if it would not.
fn why_not_taken(provider: &ProviderSettings, text: &str, length: usize) -> Option<String> {
    if length > provider.max_message_length {
        return Some(format!(
            "{length} characters, more than its max_message_length {}",
            provider.max_message_length
        ));
    }
    if provider.kind != ProviderKind::Sms {
        return None;
    }
    match crate::sms_length::measure(text) {
        Err(error) => Some(format!("{error} ({})", error.code_point())),
        Ok(size) if size.bytes > provider.max_message_bytes => Some(format!(
            "{} EUC-KR bytes, more than its max_message_bytes {}",
            size.bytes, provider.max_message_bytes
        )),
        Ok(_) => None,
    }
}

#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub primary: ProviderKind,
    pub fallback: Option<ProviderKind>,
    pub strategy: Strategy,
    pub acquire_timeout: Duration,
    /// Probe every provider a run may use before its first message (SPEC section 3).
    pub preflight: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_timeout: Duration,
    /// How long a campaign waits, once every channel is unusable (circuits open), for a
    /// half-open probe to bring one back before it stops.
    pub all_open_wait: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct BulkSettings {
    pub concurrency: usize,
    pub batch_size: usize,
    pub shutdown_grace: Duration,
    /// When every credential a send could use has its next free slot further away than this
    /// (a day window is spent), the campaign pauses (SPEC section 8).
    pub max_wait: Duration,
    /// The most a job may spend (`--max-cost` overrides it).
    pub max_cost: Option<Money>,
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub csv: Option<PathBuf>,
    pub database: Option<DatabaseUrl>,
    pub query: String,
    pub suppression: Option<PathBuf>,
    /// The column holding each recipient's advertising consent date (SPEC section 10).
    pub consent_column: String,
}

/// `[message]`: what every message is framed with.
#[derive(Debug, Clone)]
pub struct MessageSettings {
    /// The header line template, above the body.
    pub header: Option<Template>,
    /// What campaigns and sends are unless `--kind` says otherwise.
    pub kind: MessageKind,
    /// An ad's first and last lines, when `sender` and `opt_out` are set (required for ads).
    pub ad_frame: Option<Frame>,
    /// The currency prices and budgets are in (a label only).
    pub currency: String,
}

impl MessageSettings {
    /// The frame an ad needs, or the usage error that names the missing keys.
    pub fn ad_frame(&self) -> Result<&Frame, String> {
        self.ad_frame.as_ref().ok_or_else(|| {
            "an ad needs [message] sender and [message] opt_out (e.g. sender = \"현대오토에버\", opt_out = \"무료수신거부 080-123-4567\")".to_string()
        })
    }
}

/// A database URL, which may carry a password: it prints with the password redacted.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: Secret,
    redacted: String,
}

impl DatabaseUrl {
    /// `sqlite://PATH` or `postgres://...`; the error says what is wrong without the URL.
    pub fn parse(url: String) -> Result<DatabaseUrl, String> {
        urls::database_url(url)
    }

    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.expose().starts_with("sqlite:")
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub textfile: Option<PathBuf>,
    pub pushgateway: Option<reqwest::Url>,
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub webhook: Option<reqwest::Url>,
    pub min_success_rate: f64,
    pub max_queue: u64,
    pub max_response_time: Duration,
}

/// A config that cannot be used. Exit code 2; nothing has been sent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {reason}", file.display())]
    Unreadable { file: PathBuf, reason: String },
    #[error("{}{}: {}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
}

/// Where the config comes from: `--config`, else `$MSGSEND_CONFIG` (clap folds that in),
/// else `./msgsend.toml`.
pub fn config_path(from_cli: Option<&Path>) -> PathBuf {
    from_cli.map_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE), Path::to_path_buf)
}

/// Reads, parses and validates the config file, and logs what it exposes (see [`security`]).
pub fn load(file: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Unreadable {
        file: file.to_path_buf(),
        reason: match error.kind() {
            std::io::ErrorKind::NotFound => {
                "not found (name one with --config FILE or MSGSEND_CONFIG)".to_string()
            }
            _ => error.to_string(),
        },
    })?;
    let settings = parse(file, &text)?;
    for warning in security::warnings(&settings, file, &text) {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

/// Parses and validates config text; `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<Settings, ConfigError> {
    let locator = Locator::new(file, text)?;
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|error| locator.toml_error(None, &error))?;
    let raw: raw::RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        locator.toml_error(Some(path), error.inner())
    })?;
    resolve::resolve(raw, &locator)
}

/// Turns a key path or a byte offset into a line of the config file, for error messages.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    document: DeValue<'a>,
}

impl<'a> Locator<'a> {
    fn new(file: &'a Path, text: &'a str) -> Result<Self, ConfigError> {
        let document = DeTable::parse(text).map_err(|error| ConfigError::Invalid {
            file: file.to_path_buf(),
            line: error.span().map(|span| line_at(text, span.start)),
            key: None,
            message: error.message().to_string(),
        })?;
        Ok(Locator {
            file,
            text,
            document: DeValue::Table(document.into_inner()),
        })
    }

    fn toml_error(&self, path: Option<String>, error: &toml::de::Error) -> ConfigError {
        let key = path.filter(|path| !path.is_empty() && path != ".");
        let line = match (error.span(), &key) {
            (Some(span), _) => Some(line_at(self.text, span.start)),
            (None, Some(key)) => self.line_of(key),
            (None, None) => None,
        };
        // serde quotes the value it could not take ("invalid type: integer `98765432`"); a
        // password's value is never shown.
        let secret = key
            .as_deref()
            .is_some_and(|key| key.ends_with("password") || key.ends_with("database"));
        let message = if secret && error.message().starts_with("invalid") {
            "must be a string (the value is not shown: it may be a secret)".to_string()
        } else {
            error.message().to_string()
        };
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line,
            key,
            message,
        }
    }

    /// An error about the value at `key` (dotted, `providers.sms.credentials[0].username`).
    fn error(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.line_of(key),
            key: Some(key.to_string()),
            message: message.to_string(),
        }
    }

    /// The line of `key`, or of the nearest enclosing table that is in the file.
    fn line_of(&self, key: &str) -> Option<usize> {
        let mut value = &self.document;
        let mut offset = None;
        for segment in key.split('.') {
            let (name, index) = match segment.split_once('[') {
                Some((name, index)) => (name, index.trim_end_matches(']').parse::<usize>().ok()),
                None => (segment, None),
            };
            let Some(child) = value.get(name) else { break };
            offset = Some(child.span().start);
            value = child.get_ref();
            if let Some(index) = index {
                let Some(item) = value.get(index) else { break };
                offset = Some(item.span().start);
                value = item.get_ref();
            }
        }
        offset.map(|offset| line_at(self.text, offset))
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
