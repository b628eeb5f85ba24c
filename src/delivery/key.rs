//! Idempotency keys (SPEC section 8): every message request carries one, the same for every
//! attempt of one recipient of one job on one provider — across retries, runs, resumes and
//! `--resend-uncertain` — so a provider that honours keys delivers it at most once, and an
//! ambiguous request may be retried there. `send` draws a fresh one per invocation.
//!
//! A key holds no phone or name in clear: the job id and a hash of the job and the phone
//! (SHA-256, the first 16 bytes). The job id is in it so an operator can match a provider's
//! records to a job; the phone is hashed with the job, so two jobs' keys for one person share
//! nothing.

use sha2::Digest as _;

use crate::phone::Phone;
use crate::provider::ProviderKind;

/// One recipient's key, before the provider is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageKey(String);

impl MessageKey {
    /// The key of `phone` in job `job_id`: stable for as long as the job lives.
    pub fn for_recipient(job_id: &str, phone: &Phone) -> Self {
        let digest = sha2::Sha256::digest(format!("{job_id}\n{}", phone.as_str()).as_bytes());
        MessageKey(format!(
            "{}-{}",
            header_safe(job_id),
            hex::encode(&digest[..16])
        ))
    }

    /// A key no other request has: one `send`.
    pub fn fresh() -> Self {
        let bytes: [u8; 16] = rand::random();
        MessageKey(format!("send-{}", hex::encode(bytes)))
    }

    /// The header value for `provider`: another provider gets another key.
    pub fn for_provider(&self, provider: ProviderKind) -> String {
        format!("{}-{}", self.0, provider.name())
    }
}

/// The job id as it may stand in a header value that every provider takes: a job id is free
/// text (`--job-id 봄-캠페인`), a key is visible ASCII of bounded length. Letters, digits, `-`,
/// `_` and `.` stay; anything else is `_`; at most [`MAX_JOB_PREFIX`] characters. The hash
/// beside it is of the whole job id, so two jobs' keys still differ.
fn header_safe(job_id: &str) -> String {
    job_id
        .chars()
        .take(MAX_JOB_PREFIX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The most characters of the job id a key carries (the key stays far below the 256 bytes
/// providers commonly accept).
const MAX_JOB_PREFIX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(text: &str) -> Phone {
        Phone::parse(text).unwrap()
    }

    #[test]
    fn a_key_is_stable_and_tells_jobs_recipients_and_providers_apart() {
        let key = MessageKey::for_recipient("job-1", &phone("010-1234-5678"));
        assert_eq!(
            key,
            MessageKey::for_recipient("job-1", &phone("01012345678"))
        );
        assert_ne!(
            key,
            MessageKey::for_recipient("job-2", &phone("010-1234-5678"))
        );
        assert_ne!(
            key,
            MessageKey::for_recipient("job-1", &phone("010-1234-5679"))
        );
        assert_ne!(
            key.for_provider(ProviderKind::KakaoTalk),
            key.for_provider(ProviderKind::Sms)
        );
        let header = key.for_provider(ProviderKind::Sms);
        assert!(
            !header.contains("1234") && !header.contains("5678"),
            "{header}"
        );
        assert!(header.starts_with("job-1-"));
        assert_ne!(MessageKey::fresh(), MessageKey::fresh());
    }

    #[test]
    fn a_key_is_a_short_visible_ascii_header_value_whatever_the_job_id() {
        let long = "x".repeat(1_000);
        for job in ["봄-캠페인", "a b\tc\"d", long.as_str(), "job\r\nX-Evil: 1"] {
            let key = MessageKey::for_recipient(job, &phone("010-1234-5678"))
                .for_provider(ProviderKind::KakaoTalk);
            assert!(key.len() <= 128, "{key}");
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{key}"
            );
            assert!(reqwest::header::HeaderValue::from_str(&key).is_ok());
        }
        assert_ne!(
            MessageKey::for_recipient("봄", &phone("010-1234-5678")),
            MessageKey::for_recipient("꽃", &phone("010-1234-5678")),
            "two jobs whose ids read alike in a key still differ"
        );
    }
}
