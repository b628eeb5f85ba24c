//! The config file: the documented example loads, and every kind of mistake is refused with the
//! file, the line and the key, before anything could be sent.

use std::path::Path;
use std::time::Duration;

use msgsend::config::{self, ConfigError};
use msgsend::provider::ProviderKind;

const MINIMAL: &str = r#"
[providers.kakaotalk]
base_url = "http://127.0.0.1:8081"
username = "autoever"
password = "1234"
"#;

fn parse(text: &str) -> Result<config::Settings, ConfigError> {
    config::parse(Path::new("msgsend.toml"), text)
}

fn error_of(text: &str) -> (Option<usize>, Option<String>, String) {
    match parse(text).expect_err("the config should be refused") {
        ConfigError::Invalid {
            line, key, message, ..
        } => (line, key, message),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn the_example_config_loads_with_its_variables_set() {
    // SAFETY: no other test in this binary reads these variables.
    unsafe {
        std::env::set_var("KAKAOTALK_PASSWORD", "example-kakao");
        std::env::set_var("SMS_PASSWORD", "example-sms");
    }
    let settings = config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config.example.toml"
    )))
    .unwrap();
    assert_eq!(settings.timezone_name, "Asia/Seoul");
    assert_eq!(settings.providers.len(), 2);
    let kakaotalk = settings.provider(ProviderKind::KakaoTalk).unwrap();
    assert_eq!(kakaotalk.credentials[0].password.expose(), "example-kakao");
    assert_eq!(kakaotalk.credentials[0].rate_limit.to_string(), "100/min");
    assert_eq!(settings.routing.primary, ProviderKind::KakaoTalk);
    assert_eq!(settings.routing.fallback, Some(ProviderKind::Sms));
    assert_eq!(settings.retry.max_attempts, 3);
    assert_eq!(settings.breaker.open_timeout, Duration::from_secs(30));
    assert_eq!(settings.bulk.concurrency, 50);
    assert!(settings.message.header.is_some());
}

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let settings = parse(MINIMAL).unwrap();
    let kakaotalk = settings.provider(ProviderKind::KakaoTalk).unwrap();
    assert_eq!(kakaotalk.timeout, Duration::from_secs(5));
    assert_eq!(kakaotalk.health_path, "/health");
    assert_eq!(kakaotalk.credentials[0].rate_limit.to_string(), "100/min");
    assert_eq!(settings.routing.fallback, None);
    assert_eq!(settings.retry.initial_delay, Duration::from_secs(1));
    assert!(settings.retry.jitter);
    assert_eq!(settings.breaker.failure_threshold, 5);
    assert_eq!(
        settings.source.query,
        "SELECT name, phone, birth_date FROM users"
    );
}

#[test]
fn several_credentials_each_get_a_quota() {
    let settings = parse(
        r#"
[providers.kakaotalk]
base_url = "http://127.0.0.1:8081"
rate_limit = "100/min"
credentials = [
  { username = "a", password = "1" },
  { username = "b", password = "2", rate_limit = "50/s" },
]
"#,
    )
    .unwrap();
    let credentials = &settings
        .provider(ProviderKind::KakaoTalk)
        .unwrap()
        .credentials;
    assert_eq!(credentials.len(), 2);
    assert_eq!(credentials[0].rate_limit.to_string(), "100/min");
    assert_eq!(credentials[1].rate_limit.to_string(), "50/s");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let (line, key, message) = error_of(&format!("{MINIMAL}timout = \"5s\"\n"));
    assert_eq!(line, Some(6));
    assert!(message.contains("unknown field `timout`"), "{message}");
    assert_eq!(
        key.as_deref(),
        Some("providers.kakaotalk.timout"),
        "{message}"
    );
}

#[test]
fn an_unknown_section_is_refused() {
    let (line, _key, message) = error_of(&format!("{MINIMAL}[retries]\nmax_attempts = 3\n"));
    assert_eq!(line, Some(6));
    assert!(message.contains("unknown field `retries`"), "{message}");
}

#[test]
fn a_wrong_type_is_named_with_its_line_and_key() {
    let (line, key, message) = error_of(&format!("{MINIMAL}[retry]\nmax_attempts = \"three\"\n"));
    assert_eq!(
        (line, key.as_deref()),
        (Some(7), Some("retry.max_attempts"))
    );
    assert!(message.contains("invalid type"), "{message}");
    let (line, key, _) = error_of(&format!("{MINIMAL}[retry]\ninitial_delay = 5\n"));
    assert_eq!(
        (line, key.as_deref()),
        (Some(7), Some("retry.initial_delay"))
    );
}

#[test]
fn a_bad_duration_or_rate_is_named_with_its_line_and_key() {
    let (line, key, message) = error_of(&MINIMAL.replace(
        "password = \"1234\"",
        "password = \"1234\"\ntimeout = \"5 seconds\"",
    ));
    assert_eq!(
        (line, key.as_deref()),
        (Some(6), Some("providers.kakaotalk.timeout"))
    );
    assert!(message.contains("5 seconds"), "{message}");
    let (line, key, _) = error_of(&MINIMAL.replace(
        "password = \"1234\"",
        "password = \"1234\"\nrate_limit = \"100/week\"",
    ));
    assert_eq!(
        (line, key.as_deref()),
        (Some(6), Some("providers.kakaotalk.rate_limit"))
    );
    for zero_or_negative in ["0/s", "-5/s", "5/0s", "5/-1s"] {
        let (_, key, message) = error_of(&MINIMAL.replace(
            "password = \"1234\"",
            &format!("password = \"1234\"\nrate_limit = \"{zero_or_negative}\""),
        ));
        assert_eq!(
            key.as_deref(),
            Some("providers.kakaotalk.rate_limit"),
            "{zero_or_negative}: {message}"
        );
    }
}

#[test]
fn a_missing_environment_variable_is_named_and_the_value_is_not_quoted() {
    let text = MINIMAL.replace(
        "password = \"1234\"",
        "password = \"${MSGSEND_TEST_SURELY_UNSET}\"",
    );
    let (line, key, message) = error_of(&text);
    assert_eq!(
        (line, key.as_deref()),
        (Some(5), Some("providers.kakaotalk.password"))
    );
    assert_eq!(
        message,
        "environment variable MSGSEND_TEST_SURELY_UNSET is not set"
    );
}

#[test]
fn out_of_range_values_are_refused_at_their_key() {
    let cases = [
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts", 7),
        ("[retry]\nmultiplier = 0.5\n", "retry.multiplier", 7),
        (
            "[circuit_breaker]\nfailure_threshold = 0\n",
            "circuit_breaker.failure_threshold",
            7,
        ),
        ("[bulk]\nconcurrency = 0\n", "bulk.concurrency", 7),
        ("[bulk]\nconcurrency = 4000000000\n", "bulk.concurrency", 7),
        ("[bulk]\nbatch_size = 4000000000\n", "bulk.batch_size", 7),
        (
            "[alerts]\nmin_success_rate = 1.5\n",
            "alerts.min_success_rate",
            7,
        ),
        (
            "[routing]\nstrategy = \"roundrobin\"\n",
            "routing.strategy",
            7,
        ),
        ("[routing]\nfallback = \"sms\"\n", "routing.fallback", 7),
        (
            "[schedule]\nquiet_hours = \"9pm-8am\"\n",
            "schedule.quiet_hours",
            7,
        ),
        ("[message]\nheader = \"{name\"\n", "message.header", 7),
        ("[source]\ndatabase = \"mysql://x\"\n", "source.database", 7),
        ("timezone = \"Mars/Olympus\"\n", "timezone", 6),
        ("[message]\nkind = \"promo\"\n", "message.kind", 7),
        ("[message]\nkind = \"ad\"\n", "message.kind", 7),
        ("[message]\nsender = \"오토에버\"\n", "message.sender", 7),
        (
            "[message]\nsender = \"a\"\nopt_out = \"수신거부 080-12\"\n",
            "message.opt_out",
            8,
        ),
        (
            "[message]\nheader = \"(광 고) {name}\"\n",
            "message.header",
            7,
        ),
        ("[message]\ncurrency = \"\"\n", "message.currency", 7),
        ("[bulk]\nmax_cost = -1\n", "bulk.max_cost", 7),
        ("[bulk]\nmax_cost = nan\n", "bulk.max_cost", 7),
        (
            "[source]\nconsent_column = \" \"\n",
            "source.consent_column",
            7,
        ),
    ];
    for (extra, expected_key, expected_line) in cases {
        // Top-level keys must come before the first table.
        let text = if extra.starts_with('[') {
            format!("{MINIMAL}{extra}")
        } else {
            format!("{extra}{MINIMAL}")
        };
        let (line, key, message) = error_of(&text);
        assert_eq!(key.as_deref(), Some(expected_key), "{extra}: {message}");
        let expected_line = if extra.starts_with('[') {
            expected_line
        } else {
            1
        };
        assert_eq!(line, Some(expected_line), "{extra}: {message}");
    }
}

#[test]
fn prices_and_sms_bytes_are_checked_per_provider() {
    let sms = "[providers.sms]\nbase_url = \"http://127.0.0.1:8082\"\nusername = \"a\"\npassword = \"b\"\n";
    let cases = [
        (
            format!("{MINIMAL}price = -8.4\n"),
            "providers.kakaotalk.price",
        ),
        (
            format!("{MINIMAL}price = inf\n"),
            "providers.kakaotalk.price",
        ),
        (
            format!("{MINIMAL}price = {{ short = 1, long = 2 }}\n"),
            "providers.kakaotalk.price",
        ),
        (
            format!("{MINIMAL}max_message_bytes = 90\n"),
            "providers.kakaotalk.max_message_bytes",
        ),
        (
            format!("{MINIMAL}{sms}max_message_bytes = 0\n"),
            "providers.sms.max_message_bytes",
        ),
        (
            format!("{MINIMAL}{sms}price = {{ short = 9.9, long = -1 }}\n"),
            "providers.sms.price.long",
        ),
    ];
    for (text, expected_key) in cases {
        let (_, key, message) = error_of(&text);
        assert_eq!(key.as_deref(), Some(expected_key), "{text}: {message}");
    }
    let settings = parse(&format!(
        "{MINIMAL}price = 8\n{sms}price = {{ short = 9.9, long = 29.7 }}\nmax_message_bytes = 90\n"
    ))
    .unwrap();
    let sms = settings
        .provider(msgsend::provider::ProviderKind::Sms)
        .unwrap();
    assert_eq!(sms.max_message_bytes, 90);
    assert!(sms.price.is_some());
    assert!(settings.providers[0].price.is_some());
}

#[test]
fn a_bad_base_url_is_refused() {
    let (line, key, _) = error_of(&MINIMAL.replace("http://127.0.0.1:8081", "not a url"));
    assert_eq!(
        (line, key.as_deref()),
        (Some(3), Some("providers.kakaotalk.base_url"))
    );
    let (_, key, _) = error_of(&MINIMAL.replace("http://127.0.0.1:8081", "ftp://example.com"));
    assert_eq!(key.as_deref(), Some("providers.kakaotalk.base_url"));
}

#[test]
fn credentials_must_be_complete_and_unambiguous() {
    let (_, key, _) = error_of(&MINIMAL.replace("password = \"1234\"\n", ""));
    assert_eq!(key.as_deref(), Some("providers.kakaotalk.username"));
    let both = format!("{MINIMAL}credentials = [{{ username = \"a\", password = \"b\" }}]\n");
    let (_, key, _) = error_of(&both);
    assert_eq!(key.as_deref(), Some("providers.kakaotalk.credentials"));
}

#[test]
fn text_that_is_not_toml_or_repeats_a_key_is_refused_with_its_line() {
    let (line, _, _) = error_of("[providers.kakaotalk\nbase_url = 1\n");
    assert_eq!(line, Some(1));
    let (line, _, message) = error_of(&format!("{MINIMAL}username = \"again\"\n"));
    assert_eq!(line, Some(6), "{message}");
}

#[test]
fn no_provider_at_all_is_refused() {
    let (_, key, _) = error_of("timezone = \"Asia/Seoul\"\n");
    assert_eq!(key.as_deref(), Some("providers"));
}

#[test]
fn errors_name_the_file() {
    let error = config::parse(
        Path::new("/etc/msgsend/prod.toml"),
        "[retry]\nmax_attempts = 0\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().starts_with("/etc/msgsend/prod.toml:"),
        "{error}"
    );
    let missing = config::load(Path::new("/nonexistent/msgsend.toml")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/msgsend.toml"),
        "{missing}"
    );
}

#[test]
fn a_password_of_the_wrong_type_is_refused_without_quoting_it() {
    let (line, key, message) =
        error_of(&MINIMAL.replacen("password = \"1234\"", "password = 98765432", 1));
    assert_eq!(
        key.as_deref(),
        Some("providers.kakaotalk.password"),
        "{message}"
    );
    assert!(line.is_some());
    assert!(!message.contains("98765432"), "{message}");
}

#[test]
fn a_base_url_with_credentials_in_it_is_refused_without_quoting_them() {
    let (_, key, message) = error_of(&MINIMAL.replace(
        "http://127.0.0.1:8081",
        "http://buser:url-secret-4@127.0.0.1:8081",
    ));
    assert_eq!(
        key.as_deref(),
        Some("providers.kakaotalk.base_url"),
        "{message}"
    );
    assert!(!message.contains("url-secret-4"), "{message}");
}
