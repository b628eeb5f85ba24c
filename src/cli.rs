//! The command line (SPEC section 1), as clap derive types only. Turning these into settings is
//! the commands' job; nothing here does I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use crate::logging::LogFormat;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::advert::MessageKind;
use crate::cost::Money;
use crate::provider::ProviderKind;
use crate::units::{Rate, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "msgsend",
    version,
    about = "Send messages in bulk: KakaoTalk first, SMS as fallback, inside every provider's rate limit"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Config file [default: $MSGSEND_CONFIG, else ./msgsend.toml]
    #[arg(long, global = true, env = "MSGSEND_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log detail (-v debug, -vv trace)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Never draw a progress bar
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one message (primary channel, then the fallback)
    Send(SendArgs),
    /// Check every configured provider: reachable, credentials accepted, latency
    Health(HealthArgs),
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a campaign: everyone in the source whose age is in the range gets the message once
    Bulk(Box<BulkArgs>),
    /// List campaigns from the journal
    Jobs(JobsArgs),
    /// Show one campaign's counts and state
    Status(StatusArgs),
    /// Serve local simulated KakaoTalk and SMS APIs
    Sandbox(Box<SandboxArgs>),
    /// Show the whole tool: an in-process sandbox with faults and a campaign over fixtures/users.csv
    Demo,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("ages").args(["age_group", "age_range"])))]
#[command(group(clap::ArgGroup::new("text").args(["message", "message_file"])))]
#[command(group(clap::ArgGroup::new("source").args(["csv", "db"])))]
pub struct BulkArgs {
    /// The age group: 10s, 20s, … 90s (international age on the day of the run)
    #[arg(long, value_name = "GROUP")]
    pub age_group: Option<String>,
    /// An inclusive age range, e.g. 20-29
    #[arg(long, value_name = "A-B")]
    pub age_range: Option<String>,
    /// Recipients from this CSV file [default: [source] csv or database]
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Recipients from this database: sqlite://PATH or postgres://... A password written here
    /// is visible to other users in `ps`: give it in MSGSEND_DB, or as [source] database with
    /// ${VAR}
    #[arg(long, value_name = "URL", env = "MSGSEND_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// The query returning name, phone, birth_date [default: [source] query]
    #[arg(long, value_name = "SQL", requires = "db")]
    pub query: Option<String>,
    /// The message body ({name}, {phone}, any source column; {{ and }} are braces)
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Read the message body from this file
    #[arg(long, value_name = "FILE")]
    pub message_file: Option<PathBuf>,
    /// Resolve and validate recipients, print counts and samples, send nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Name the job [default: generated, e.g. 20261124-201500-3fa2]
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Continue an interrupted or paused job (alone: the newest one not done): send only to
    /// recipients not yet done; no other flags needed
    #[arg(long, value_name = "JOB_ID", num_args = 0..=1, default_missing_value = "", conflicts_with_all = ["ages", "text", "source", "query", "job_id", "retry_failed", "strategy", "concurrency", "max_failure_rate", "kind", "valid_until", "valid_for"])]
    pub resume: Option<String>,
    /// A new job for only the recipients that job recorded as failed
    #[arg(long, value_name = "JOB_ID", conflicts_with_all = ["ages", "text", "source", "query", "kind"])]
    pub retry_failed: Option<String>,
    /// With --resume: send again to recipients recorded uncertain (may duplicate them)
    #[arg(long)]
    pub resend_uncertain: bool,
    /// With --resume JOB_ID on a state_database: work the job beside its running run on another
    /// host, claiming queued recipients in batches (alone: as --resume)
    #[arg(long, requires = "resume")]
    pub join: bool,
    /// Write the summary as JSON to FILE (- for stdout, instead of the table)
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Write every recipient not delivered, with the reason, to this CSV
    #[arg(long, value_name = "FILE")]
    pub failed_csv: Option<PathBuf>,
    /// Write every source row refused by validation (line, field, reason; never the value) to
    /// this CSV
    #[arg(long, value_name = "FILE")]
    pub invalid_csv: Option<PathBuf>,
    /// Sends in flight at once [default: [bulk] concurrency]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_CONCURRENCY)))]
    pub concurrency: Option<u32>,
    /// failover or spillover [default: [routing] strategy]
    #[arg(long, value_enum)]
    pub strategy: Option<crate::policy::strategy::Strategy>,
    /// Abort once more than this share (0..1) of attempted recipients failed, after 100
    #[arg(long, value_name = "R", value_parser = parse_share)]
    pub max_failure_rate: Option<f64>,
    /// Start (and go on) inside [schedule] quiet_hours
    #[arg(long)]
    pub ignore_quiet_hours: bool,
    /// Send without probing the providers first [default: [routing] preflight]
    #[arg(long)]
    pub no_preflight: bool,
    /// info or ad: an ad starts with its marker and sender, ends with the opt-out line, goes
    /// only to recipients whose consent is under two years old, and never between 21:00 and
    /// 08:00 [default: [message] kind]
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<MessageKind>,
    /// Stop before a send would make the job's cost pass AMOUNT (in [message] currency); a
    /// resume may raise it [default: [bulk] max_cost]
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount)]
    pub max_cost: Option<Money>,
    /// Send nothing after TIME (RFC 3339, or "YYYY-MM-DD HH:MM" in the config's timezone); the
    /// job then ends EXPIRED
    #[arg(long, value_name = "TIME", conflicts_with = "valid_for")]
    pub valid_until: Option<String>,
    /// Send nothing once DURATION has passed since the job was created (e.g. 6h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub valid_for: Option<Duration>,
}

fn parse_kind(text: &str) -> Result<MessageKind, String> {
    text.parse()
}

fn parse_amount(text: &str) -> Result<Money, String> {
    text.parse()
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1 (e.g. 0.2)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job to show
    #[arg(value_name = "JOB_ID")]
    pub job_id: String,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The recipient's phone (01012345678, 010-1234-5678, +82 10-1234-5678, ...)
    #[arg(long, value_name = "PHONE")]
    pub to: String,
    /// The recipient's name, for {name} in the message and the header
    #[arg(long)]
    pub name: Option<String>,
    /// The message body ({name} and {phone} are replaced; {{ and }} are braces)
    #[arg(long, value_name = "TEXT")]
    pub message: String,
    /// Start with this channel instead of [routing] primary; the other one is the fallback
    #[arg(long, value_enum)]
    pub channel: Option<ProviderKind>,
    /// Do not fall back to the other channel
    #[arg(long)]
    pub no_fallback: bool,
    /// info or ad: an ad is composed with its marker, sender and opt-out line, and is not sent
    /// between 21:00 and 08:00 [default: [message] kind]
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<MessageKind>,
    /// Send without probing the providers first [default: [routing] preflight]
    #[arg(long)]
    pub no_preflight: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the config; print it resolved, secrets redacted
    Check,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address of the simulated KakaoTalk API
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub kakaotalk_addr: SocketAddr,
    /// Address of the simulated SMS API
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8082")]
    pub sms_addr: SocketAddr,
    /// KakaoTalk's quota per credential, enforced over a sliding window
    #[arg(long, value_name = "RATE", default_value = "100/min")]
    pub kakaotalk_rate: Rate,
    /// SMS's quota per credential, enforced over a sliding window
    #[arg(long, value_name = "RATE", default_value = "500/min")]
    pub sms_rate: Rate,
    /// A credential KakaoTalk accepts (repeatable) [default: autoever:1234]. A password on the
    /// command line is visible to other users in `ps`: the variable takes a comma-separated list
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "MSGSEND_SANDBOX_KAKAOTALK_CREDENTIALS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub kakaotalk_credential: Vec<UserPass>,
    /// A credential SMS accepts (repeatable) [default: autoever:5678]; see above for `ps`
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "MSGSEND_SANDBOX_SMS_CREDENTIALS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sms_credential: Vec<UserPass>,
    /// A credential both providers accept (repeatable); see above for `ps`
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "MSGSEND_SANDBOX_CREDENTIALS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub credential: Vec<UserPass>,
    /// Share of message requests answered 500, at random (0..1)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub fail_rate: f64,
    /// Delay before every answer
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub latency: Duration,
    /// Answer 503 to everything for this long after start
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub outage_for: Duration,
    /// Answer 500 to the first N message requests
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fail_first: u64,
    /// Share of accepted messages whose answer is cut off mid-body (0..1)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub reset_rate: f64,
    /// Share of accepted messages answered 200 with a body that is not JSON (0..1)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub garbage_rate: f64,
    /// Answer 429 to everything for this long after start
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub storm_for: Duration,
    /// During --storm-for, send no Retry-After header
    #[arg(long)]
    pub storm_without_retry_after: bool,
    /// Share of message requests held for --stall-for before they are counted, accepted and
    /// recorded, even if the client stops waiting: requests that reach the provider late (0..1)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub stall_rate: f64,
    /// How long --stall-rate holds a request
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub stall_for: Duration,
    /// Which provider the fault options above apply to
    #[arg(long, value_enum, default_value_t = FaultTarget::Both)]
    pub faults_on: FaultTarget,
    /// A phone KakaoTalk answers 400 (repeatable)
    #[arg(long, value_name = "PHONE")]
    pub reject_phone: Vec<String>,
    /// Append every accepted message to FILE as a JSON line
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultTarget {
    Both,
    Kakaotalk,
    Sms,
}

/// `user:pass` on the command line.
#[derive(Debug, Clone)]
pub struct UserPass {
    pub user: String,
    pub password: String,
}

impl FromStr for UserPass {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(UserPass {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err("expected USER:PASS".to_string()),
        }
    }
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err("expected a number from 0 to 1".to_string()),
    }
}
