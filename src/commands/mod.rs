//! One module per subcommand. Each turns its arguments and the config into a result printed on
//! stdout and an [`ExitStatus`](crate::error::ExitStatus).

pub mod bulk;
pub mod config;
pub mod demo;
pub mod health;
pub mod jobs;
pub mod sandbox;
pub mod send;

use crate::cli::GlobalArgs;
use crate::config::{self as settings, ConfigError, Settings};

/// Loads the config the global options name.
pub fn load_settings(global: &GlobalArgs) -> Result<Settings, ConfigError> {
    settings::load(&settings::config_path(global.config.as_deref()))
}

/// A progress bar only at a terminal, and not with `--no-progress`, `-q` or JSON logs (where
/// every stderr line must be one JSON object).
pub fn progress_bar_wanted(global: &GlobalArgs) -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal()
        && !global.no_progress
        && !global.quiet
        && global.log_format == crate::cli::LogFormat::Text
}

/// A message body with nothing to say is a usage error: every provider would answer 400.
pub fn non_empty_message(text: String) -> Result<String, crate::error::UsageError> {
    if text.trim().is_empty() {
        return Err(crate::error::UsageError(
            "the message is empty: give the text to send".into(),
        ));
    }
    Ok(text)
}
