//! The `msgsend` binary: parse the command line, build the runtime, run, map the outcome to an
//! exit code (SPEC section 6). Everything else lives in the library so tests can drive it too.

use clap::Parser;
use msgsend::cli::Cli;
use msgsend::error::exit_code_for;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    msgsend::logging::init(cli.global.verbose, cli.global.quiet, cli.global.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(msgsend::run(cli, msgsend::shutdown_signal())) {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(exit_code_for(&error))
        }
    }
}
