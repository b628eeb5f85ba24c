//! The `msgsend` binary: parse the command line, build the runtime, run, map the outcome to an
//! exit code (SPEC section 6). Everything else lives in the library so tests can drive it too.

use std::io::Write as _;

use clap::Parser;
use msgsend::cli::Cli;
use msgsend::error::exit_code_for;

fn main() -> std::process::ExitCode {
    // Ctrl-C and SIGTERM wait (blocked, kept pending) until their handler is installed below:
    // a signal in the first milliseconds stops the command like any other (exit 130), never
    // the process by the default action (exit 143, a job left `RUNNING`). The runtime's threads
    // keep them blocked; this thread takes them once the handler is there.
    let unblock = block_stop_signals();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {error}"
            );
            return std::process::ExitCode::from(1);
        }
    };
    let shutdown = {
        let _inside = runtime.enter();
        msgsend::shutdown_signal()
    };
    unblock();
    let cli = Cli::parse();
    msgsend::logging::init(cli.global.verbose, cli.global.quiet, cli.global.log_format);
    let result = runtime.block_on(msgsend::run(cli, shutdown));
    // Not a waiting drop: a blocking read that cannot end (a FIFO nobody writes to) must not
    // keep a finished command from exiting.
    runtime.shutdown_background();
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            std::process::ExitCode::from(exit_code_for(&error))
        }
    }
}

/// Blocks SIGINT and SIGTERM on this thread (and the threads it starts); the returned
/// function restores this thread's mask, delivering what arrived meanwhile. Hand-written over
/// `libc`: no signal crate offers "hold until the handler exists" for the process's first
/// moments, and it is two calls.
#[cfg(unix)]
fn block_stop_signals() -> impl FnOnce() {
    // SAFETY: `sigset_t` values are initialised by `sigemptyset` before use, and
    // `pthread_sigmask` only changes this thread's mask.
    unsafe {
        let mut stop: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut stop);
        libc::sigaddset(&mut stop, libc::SIGINT);
        libc::sigaddset(&mut stop, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &stop, &mut previous);
        move || {
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        }
    }
}

#[cfg(not(unix))]
fn block_stop_signals() -> impl FnOnce() {
    || {}
}
