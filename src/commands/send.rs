//! `msgsend send`: one message through the routing of SPEC section 3, with the result on stdout
//! (channel, the provider's message id, every attempt). Exit 0 when delivered, fallback
//! included; 3 when not.

use std::io::Write;

use anyhow::Context as _;

use crate::advert::{self, AD_NIGHT, MessageKind};
use crate::cli::{GlobalArgs, SendArgs};
use crate::config::{RoutingSettings, Settings};
use crate::delivery::{Delivery, DeliveryOutcome, MessageKey, Router};
use crate::error::{ExitStatus, UsageError};
use crate::phone::Phone;
use crate::provider::{ProviderKind, http_client_for};
use crate::report::printable;
use crate::schedule::Clock;
use crate::template::{MessageTemplate, Template};

pub async fn run(global: &GlobalArgs, args: SendArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    send(&settings, args, Clock::system()).await
}

/// Sends the message `args` describe with settings already loaded and wall time from `clock`
/// (the night rule of ads).
pub async fn send(settings: &Settings, args: SendArgs, clock: Clock) -> anyhow::Result<ExitStatus> {
    let phone = Phone::parse(&args.to).map_err(|error| UsageError(format!("--to: {error}")))?;
    let body = super::non_empty_message(args.message)?;
    advert::check_unmarked("--message", &body).map_err(UsageError)?;
    let kind = args.kind.unwrap_or(settings.message.kind);
    let template = MessageTemplate {
        header: settings.message.header.clone(),
        body: Template::parse(&body).map_err(|error| UsageError(format!("--message: {error}")))?,
        frame: match kind {
            MessageKind::Ad => Some(settings.message.ad_frame().map_err(UsageError)?.clone()),
            MessageKind::Info => None,
        },
    };
    template
        .check_fields(&["name", "phone"])
        .map_err(|error| UsageError(format!("the message or [message] header: {error}")))?;
    let uses_name = template
        .header
        .iter()
        .chain([&template.body])
        .any(|t| t.fields().any(|f| f == "name"));
    if uses_name && args.name.as_deref().is_none_or(str::is_empty) {
        return Err(UsageError(
            "the message or [message] header uses {name}: give --name".to_string(),
        )
        .into());
    }
    let name = args.name.unwrap_or_default();
    let value = |field: &str| match field {
        "name" => Some(name.as_str()),
        "phone" => Some(phone.as_str()),
        _ => None,
    };
    let (text, marked) = template.render_checking(value, advert::starts_with_marker);
    if marked {
        return Err(UsageError(format!(
            "--name: the message would start with an advertising marker; {}",
            crate::advert::MARKER_REFUSED
        ))
        .into());
    }

    settings
        .check_message_length(&text, "")
        .map_err(UsageError)?;
    // Consent for a single message is the operator's; the hour is not (SPEC section 10).
    if kind == MessageKind::Ad {
        let now = clock.now_in(&settings.timezone);
        if AD_NIGHT.contains(now.time()) {
            let reason = format!(
                "ads are not sent {AD_NIGHT} ({}); nothing sent",
                settings.timezone_name
            );
            tracing::warn!("{reason}");
            let mut stdout = std::io::stdout().lock();
            if args.json {
                let result = serde_json::json!({
                    "delivered": false,
                    "phone": phone.as_str(),
                    "channel": null,
                    "fallback": false,
                    "message_id": null,
                    "attempts": [],
                    "reason": reason,
                });
                serde_json::to_writer_pretty(&mut stdout, &result)?;
                writeln!(stdout)?;
            } else {
                writeln!(stdout, "not sent to {phone}: {reason}")?;
            }
            return Ok(ExitStatus::Paused);
        }
    }
    let routing = routing_for_send(settings, args.channel, args.no_fallback);
    let ledger = crate::journal::State::open(settings)
        .await?
        .ledger()
        .await?;
    let router = Router::new(
        settings,
        &routing,
        http_client_for(&settings.providers),
        &ledger,
    )
    .map_err(UsageError)?
    .log_slot_waits();
    if settings.routing.preflight && !args.no_preflight {
        router.preflight().await;
    }
    let delivery = router.deliver(&phone, &text, &MessageKey::fresh()).await;
    router.close().await;
    if delivery.delivered() {
        tracing::info!(phone = %phone.masked(), channel = delivery.channel.map_or("none", |c| c.name()), "delivered");
    } else {
        tracing::warn!(phone = %phone.masked(), reason = %delivery.reason(), "not delivered");
    }

    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &json_result(&phone, &delivery))?;
        writeln!(stdout)?;
    } else {
        write_text(&mut stdout, &phone, &delivery)?;
    }
    stdout.flush().context("writing the result")?;
    Ok(if delivery.delivered() {
        ExitStatus::Success
    } else {
        ExitStatus::NotDelivered
    })
}

/// `--channel X` starts with X instead of `[routing] primary` (the other configured provider
/// becomes the fallback); `--no-fallback` uses one channel only.
fn routing_for_send(
    settings: &Settings,
    first: Option<ProviderKind>,
    no_fallback: bool,
) -> RoutingSettings {
    let mut routing = settings.routing.clone();
    if let Some(kind) = first.filter(|&kind| kind != routing.primary) {
        routing.primary = kind;
        routing.fallback = settings.provider(kind.other()).map(|p| p.kind);
    }
    if no_fallback {
        routing.fallback = None;
    }
    routing
}

fn json_result(phone: &Phone, delivery: &Delivery) -> serde_json::Value {
    let message_id = match &delivery.outcome {
        DeliveryOutcome::Sent { message_id } | DeliveryOutcome::Fallback { message_id } => {
            message_id.clone()
        }
        DeliveryOutcome::Failed | DeliveryOutcome::Uncertain => None,
    };
    serde_json::json!({
        "delivered": delivery.delivered(),
        "phone": phone.as_str(),
        "channel": delivery.channel,
        "fallback": matches!(delivery.outcome, DeliveryOutcome::Fallback { .. }),
        "message_id": message_id,
        "attempts": delivery.attempts,
        "reason": (!delivery.delivered()).then(|| delivery.reason()),
    })
}

fn write_text(out: &mut impl Write, phone: &Phone, delivery: &Delivery) -> std::io::Result<()> {
    let attempts = delivery.attempts.len();
    let plural = if attempts == 1 { "" } else { "s" };
    match (&delivery.outcome, delivery.channel) {
        (
            DeliveryOutcome::Sent { message_id } | DeliveryOutcome::Fallback { message_id },
            Some(channel),
        ) => {
            let fallback = if matches!(delivery.outcome, DeliveryOutcome::Fallback { .. }) {
                " (fallback)"
            } else {
                ""
            };
            writeln!(
                out,
                "delivered to {phone} via {channel}{fallback}, message id {}, {attempts} attempt{plural}",
                message_id
                    .as_deref()
                    .map_or("(none given)".into(), |id| printable(id, false))
            )?;
        }
        _ => writeln!(
            out,
            "not delivered to {phone}: {} ({attempts} attempt{plural})",
            delivery.reason()
        )?,
    }
    for attempt in &delivery.attempts {
        let detail = if attempt.detail.is_empty() {
            String::new()
        } else {
            format!(" {}", attempt.detail)
        };
        writeln!(
            out,
            "  {} #{}: {}{detail} ({} ms)",
            attempt.channel, attempt.number, attempt.outcome, attempt.latency_ms
        )?;
    }
    Ok(())
}
