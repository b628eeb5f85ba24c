//! `msgsend config check`: loads and validates the config, then prints it resolved (defaults
//! filled in, `${VARS}` substituted) as TOML, with every secret redacted.

use std::io::Write;

use crate::cli::GlobalArgs;
use crate::config::print::to_toml;
use crate::error::ExitStatus;

pub fn check(global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let text = to_toml(&settings)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "# {}: valid", settings.file.display())?;
    write!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(ExitStatus::Success)
}
