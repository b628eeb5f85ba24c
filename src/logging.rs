//! Logging to stderr through tracing: `-v`/`-q` pick the level (`RUST_LOG` overrides),
//! `--log-format json` makes every line one JSON object, and colour is used only at a terminal.
//! While a progress bar is drawn, each log line is written with the bar hidden
//! ([`set_progress_bar`]), so lines and bar never tear each other.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::ProgressBar;

use tracing_subscriber::EnvFilter;

/// `--log-format`: how each line on stderr is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `verbose` is the count of `-v`, `quiet` is `-q`. Call once,
/// before anything logs.
pub fn init(verbose: u8, quiet: bool, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Our own level for msgsend; the libraries below stay at warn unless asked.
    // sqlx warns about connect parameters it ignores by quoting them (`sslpassword`, ...):
    // only its errors are let through.
    let default_filter = format!("warn,sqlx=error,msgsend={level}");
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| BarAwareStderr)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A second init (tests running commands in-process) keeps the first subscriber.
    drop(result);
}

/// The bar being drawn on stderr, if any.
static PROGRESS_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Tells the log writer which bar to hide while it writes (`None` when the bar is gone).
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    *PROGRESS_BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

/// stderr, with the progress bar suspended around each write. The fmt layer writes each event
/// in one call, so a line is never split by a redraw. A log line that cannot be written (stderr
/// closed, a full disk, a reader that went away) is dropped: logging never stops a campaign.
struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = PROGRESS_BAR
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
