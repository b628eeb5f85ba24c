//! Passwords live in [`Secret`], whose `Debug` and `Display` print `(redacted)`; the text comes
//! out only through [`Secret::expose`], called where the Basic auth header is built. URLs are
//! printed and stored only through [`redacted_url`], which leaves out what may be a secret.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(SecretString::from(text.into()))
    }

    /// The secret text. Call it only to build a credential, never to print.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// A URL as msgsend prints or stores it: the password of its user info, and the value of any
/// query parameter whose name looks like a secret (`password`, `sslpassword`, `token`, `key`,
/// `secret`, `signature`, `auth`…), replaced by `(redacted)`. With `path_is_secret` (a webhook,
/// whose path is often its token) only the scheme, host and port are shown, then `/(redacted)`.
pub fn redacted_url(url: &reqwest::Url, path_is_secret: bool) -> String {
    const REDACTED: &str = "(redacted)";
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some(REDACTED));
    }
    if path_is_secret {
        let mut text = format!("{}://", shown.scheme());
        if !shown.username().is_empty() {
            text.push_str(&format!("{}:{REDACTED}@", shown.username()));
        }
        text.push_str(shown.host_str().unwrap_or(""));
        if let Some(port) = shown.port() {
            text.push_str(&format!(":{port}"));
        }
        if shown.path() != "/" || shown.query().is_some() {
            text.push_str("/(redacted)");
        }
        return text;
    }
    let secret_name = |name: &str| {
        let name = name.to_ascii_lowercase();
        [
            "pass",
            "pwd",
            "token",
            "key",
            "secret",
            "sig",
            "auth",
            "credential",
        ]
        .iter()
        .any(|word| name.contains(word))
    };
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret_name(&name) {
                    REDACTED.to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // Parentheses read better than their percent-encoding.
    shown.as_str().replace("%28redacted%29", REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let url = |text: &str| reqwest::Url::parse(text).unwrap();
        assert_eq!(
            redacted_url(
                &url("postgres://app:hunter2@db:5432/crm?sslmode=require&password=pw2"),
                false
            ),
            "postgres://app:(redacted)@db:5432/crm?sslmode=require&password=(redacted)"
        );
        assert_eq!(
            redacted_url(&url("http://pgw:s3cret@127.0.0.1:9091/"), false),
            "http://pgw:(redacted)@127.0.0.1:9091/"
        );
        assert_eq!(
            redacted_url(&url("https://hooks.example.com/T1/abc?token=xyz"), true),
            "https://hooks.example.com/(redacted)"
        );
        assert_eq!(
            redacted_url(&url("https://hooks.example.com:8443/"), true),
            "https://hooks.example.com:8443"
        );
        assert_eq!(
            redacted_url(&url("http://127.0.0.1:8081/?api_key=1&x=2"), false),
            "http://127.0.0.1:8081/?api_key=(redacted)&x=2"
        );
    }

    #[test]
    fn a_secret_never_prints_its_text() {
        let secret = Secret::new("hunter2");
        assert_eq!(
            format!("{secret} {secret:?} {secret:#?}"),
            "(redacted) (redacted) (redacted)"
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
