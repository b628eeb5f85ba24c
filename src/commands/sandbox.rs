//! `msgsend sandbox`: serves the simulated providers until Ctrl-C / SIGTERM.

use std::collections::HashSet;
use std::future::Future;

use crate::cli::{FaultTarget, SandboxArgs, UserPass};
use crate::error::{ExitStatus, UsageError};
use crate::phone::Phone;
use crate::sandbox::{Faults, ProviderSimConfig, Sandbox, SandboxConfig};

pub async fn run(
    args: SandboxArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ExitStatus> {
    let config = config_from(args)?;
    let sandbox = Sandbox::start(config.clone()).await?;
    let describe = |sim: &crate::sandbox::ProviderSim, config: &ProviderSimConfig| {
        let users: Vec<&str> = config
            .credentials
            .iter()
            .map(|(user, _)| user.as_str())
            .collect();
        eprintln!(
            "{:<9} sandbox on {}  (credentials: {}; limit {} per credential)",
            sim.kind.name(),
            sim.base_url(),
            users.join(", "),
            config.rate
        );
    };
    describe(&sandbox.kakaotalk, &config.kakaotalk);
    describe(&sandbox.sms, &config.sms);
    if let Some(record) = &config.record {
        eprintln!("recording accepted messages to {}", record.display());
    }
    eprintln!("press Ctrl-C to stop");
    shutdown.await;
    sandbox.shutdown().await;
    Ok(ExitStatus::Success)
}

fn config_from(args: SandboxArgs) -> Result<SandboxConfig, UsageError> {
    let mut config = SandboxConfig::spec_defaults();
    config.kakaotalk.addr = args.kakaotalk_addr;
    config.sms.addr = args.sms_addr;
    config.kakaotalk.rate = args.kakaotalk_rate;
    config.sms.rate = args.sms_rate;
    let credentials = |own: &[UserPass], defaults: &mut Vec<(String, String)>| {
        let given: Vec<(String, String)> = own
            .iter()
            .chain(&args.credential)
            .map(|c| (c.user.clone(), c.password.clone()))
            .collect();
        if !given.is_empty() {
            *defaults = given;
        }
    };
    credentials(
        &args.kakaotalk_credential,
        &mut config.kakaotalk.credentials,
    );
    credentials(&args.sms_credential, &mut config.sms.credentials);

    let reject_phones = args
        .reject_phone
        .iter()
        .map(|text| {
            Phone::parse(text)
                .map(|p| p.as_str().to_string())
                .map_err(|e| UsageError(format!("--reject-phone {text}: {e}")))
        })
        .collect::<Result<HashSet<_>, _>>()?;
    // Either flag alone would hold nothing back: surely a mistake in a test's setup.
    let stalls_some = args.stall_rate > 0.0;
    let stalls_for_some_time = !args.stall_for.is_zero();
    if stalls_some != stalls_for_some_time {
        return Err(UsageError(
            "--stall-rate P and --stall-for DURATION go together: give both (P above 0)".into(),
        ));
    }
    let faults = Faults {
        fail_rate: args.fail_rate,
        latency: args.latency,
        outage_for: args.outage_for,
        fail_first: args.fail_first,
        reject_phones: HashSet::new(),
        reset_rate: args.reset_rate,
        garbage_rate: args.garbage_rate,
        storm_for: args.storm_for,
        storm_without_retry_after: args.storm_without_retry_after,
        stall_rate: args.stall_rate,
        stall_for: args.stall_for,
    };
    if matches!(args.faults_on, FaultTarget::Both | FaultTarget::Kakaotalk) {
        config.kakaotalk.faults = faults.clone();
    }
    if matches!(args.faults_on, FaultTarget::Both | FaultTarget::Sms) {
        config.sms.faults = faults;
    }
    config.kakaotalk.faults.reject_phones = reject_phones;
    config.record = args.record;
    Ok(config)
}
