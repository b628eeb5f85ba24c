//! Warnings about how a config exposes its secrets (issue: security). They never stop a run:
//! a loopback sandbox over plain http is normal, and file modes are the operator's business,
//! but both deserve a line in the log.
//!
//! - A provider `base_url` (or the alert webhook, or the Pushgateway) over plain `http` to a
//!   host that is not loopback: Basic-auth passwords and phone numbers would cross the network
//!   in clear.
//! - A config file that holds a password literally (not `${VAR}`) and that other users can read.

use std::path::Path;

use super::Settings;

/// The warnings for `settings`, read from `file` whose text is `text`.
pub fn warnings(settings: &Settings, file: &Path, text: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let urls = settings
        .providers
        .iter()
        .map(|p| (format!("providers.{}.base_url", p.kind), p.base_url.clone()))
        .chain(
            settings
                .alerts
                .webhook
                .clone()
                .map(|u| ("alerts.webhook".to_string(), u)),
        )
        .chain(
            settings
                .metrics
                .pushgateway
                .clone()
                .map(|u| ("metrics.pushgateway".to_string(), u)),
        );
    // The proxy plain-http requests would go through, named (host only) in the warning.
    let proxy = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .and_then(|text| reqwest::Url::parse(&text).ok())
        .and_then(|url| {
            url.host_str()
                .map(|host| format!(" and through the proxy at {host}"))
        })
        .unwrap_or_default();
    for (key, url) in urls {
        if url.scheme() == "http" && !is_loopback(&url) {
            warnings.push(format!(
                "{}: {key} uses plain http to {}{proxy}: passwords and phone numbers would travel in clear; use https",
                file.display(),
                url.host_str().unwrap_or("?")
            ));
        }
    }
    if holds_literal_password(text) && readable_by_others(file) {
        warnings.push(format!(
            "{}: holds a password in clear and other users can read it: use password = \"${{VAR}}\" or chmod 600",
            file.display()
        ));
    }
    warnings
}

/// Whether `url` names this machine, however spelled (see [`crate::provider::is_this_machine`]).
pub fn is_loopback(url: &reqwest::Url) -> bool {
    url.host().is_some() && crate::provider::is_this_machine(url)
}

/// Whether any `password` key in the file has a value that is not a `${VAR}` reference.
fn holds_literal_password(text: &str) -> bool {
    fn walk(value: &toml::Value) -> bool {
        match value {
            toml::Value::Table(table) => table.iter().any(|(key, value)| match value {
                toml::Value::String(text) if key == "password" => !text.contains("${"),
                other => walk(other),
            }),
            toml::Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    text.parse::<toml::Table>()
        .is_ok_and(|table| walk(&toml::Value::Table(table)))
}

#[cfg(unix)]
fn readable_by_others(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_file: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_passwords_are_found_anywhere_and_references_are_not() {
        assert!(holds_literal_password(
            "[providers.sms]\npassword = \"5678\"\n"
        ));
        assert!(holds_literal_password(
            "[providers.sms]\ncredentials = [{ username = \"a\", password = \"x\" }]\n"
        ));
        assert!(!holds_literal_password(
            "[providers.sms]\npassword = \"${SMS_PW}\"\n"
        ));
    }

    #[test]
    fn only_plain_http_off_loopback_is_a_risk() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(is_loopback(&url("http://127.0.0.1:8081")));
        assert!(is_loopback(&url("http://localhost:8081")));
        assert!(is_loopback(&url("http://[::1]:8081")));
        assert!(!is_loopback(&url("http://api.example.com")));
    }
}
