//! Error types that cross module boundaries, and the mapping from an outcome to the exit codes of
//! SPEC section 6. Inside the library errors are typed (thiserror); `anyhow` appears only at the
//! edge, where `exit_code_for` looks through the chain for the one error that decides the code.

use std::process::ExitCode;

use crate::config::ConfigError;

/// What a command reports when it ran to its end. Errors that stop a command early travel as
/// `anyhow::Error` and are mapped by [`exit_code_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done: every message was delivered, every provider healthy.
    Success,
    /// `send` could not deliver, or a campaign finished with failed recipients.
    NotDelivered,
    /// `health` found at least one provider unhealthy.
    Unhealthy,
    /// A campaign stopped at quiet hours (or would have started inside them); resumable.
    Paused,
    /// A campaign stopped by Ctrl-C / SIGTERM; resumable.
    Interrupted,
    /// A campaign stopped by a runtime condition (every provider unusable, the source or the
    /// journal failing) after recording what it could; resumable. Exit 1, like other runtime
    /// errors.
    Stopped,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::NotDelivered => 3,
            ExitStatus::Unhealthy => 4,
            ExitStatus::Paused => 75,
            ExitStatus::Interrupted => 130,
            ExitStatus::Stopped => 1,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// A command line that parsed but makes no sense (for example `send` with a `{name}` header and
/// no `--name`). Exit code 2, like clap's own usage errors; nothing is sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit code for an error that stopped a command: 2 for usage and config errors (nothing was
/// sent), 1 for everything else (a runtime error).
pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    let is_usage = error
        .chain()
        .any(|cause| cause.is::<ConfigError>() || cause.is::<UsageError>());
    if is_usage { 2 } else { 1 }
}
