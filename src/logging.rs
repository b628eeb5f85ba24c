//! Logging to stderr through tracing: `-v`/`-q` pick the level (`RUST_LOG` overrides),
//! `--log-format json` makes every line one JSON object, and colour is used only at a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(args: &GlobalArgs) {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Our own level for msgsend; the libraries below stay at warn unless asked.
    let default_filter = format!("warn,msgsend={level}");
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A second init (tests running commands in-process) keeps the first subscriber.
    drop(result);
}
