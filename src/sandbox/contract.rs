//! The provider contract's message requests as the sandbox reads them, strictly (SPEC
//! section 4): KakaoTalk's JSON body, SMS's phone in the query and form body, phones already
//! normalised, an SMS text as the carriers take it (KS X 1001, at most 2,000 EUC-KR bytes;
//! SPEC section 10), the optional `Idempotency-Key`, and the body of an accepted answer.

use axum::http::{HeaderMap, header};

use super::idempotency::MAX_KEY_LEN;
use crate::phone::Phone;
use crate::provider::ProviderKind;
use crate::sms_length::{self, DEFAULT_MAX_MESSAGE_BYTES, NotRepresentable};

/// The header a client names a request's idempotency key in.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header a replayed answer carries (`true`).
pub(super) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A message request's phone and text, or why it is answered 400.
pub(super) fn parse_message(
    kind: ProviderKind,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(String, String), &'static str> {
    let (phone, text) = match kind {
        ProviderKind::KakaoTalk => parse_kakaotalk(headers, body)?,
        ProviderKind::Sms => parse_sms(headers, query, body)?,
    };
    // Before the character limit, so that a message over both is refused for its bytes (with
    // two bytes at most a character, 2,000 bytes are more than 1,000 characters).
    if kind == ProviderKind::Sms {
        check_sms_bytes(&text)?;
    }
    // As strict as the real providers: a message over their length limit is refused.
    let limit = crate::provider::DEFAULT_MAX_MESSAGE_LENGTH as usize;
    if text.chars().count() > limit {
        return Err("message too long");
    }
    Ok((phone, text))
}

/// The reason a message over [`DEFAULT_MAX_MESSAGE_BYTES`] is refused by SMS.
const TOO_MANY_SMS_BYTES: &str = "message too long: over 2000 EUC-KR bytes";

/// An SMS as the carriers take it (SPEC section 10): KS X 1001 characters only, at most
/// [`DEFAULT_MAX_MESSAGE_BYTES`] of them in EUC-KR.
fn check_sms_bytes(text: &str) -> Result<(), &'static str> {
    let length = sms_length::measure(text).map_err(|_| NotRepresentable::REASON)?;
    if length.bytes > DEFAULT_MAX_MESSAGE_BYTES {
        return Err(TOO_MANY_SMS_BYTES);
    }
    Ok(())
}

/// The body of the answer to an accepted message.
pub(super) fn accepted_body(kind: ProviderKind, id: &str) -> serde_json::Value {
    match kind {
        ProviderKind::KakaoTalk => serde_json::json!({ "messageId": id }),
        ProviderKind::Sms => serde_json::json!({ "result": "OK", "smsId": id }),
    }
}

/// The request's idempotency key, if it carries one, or why it is answered 400: one header,
/// at most [`MAX_KEY_LEN`] bytes, not empty, visible ASCII (what `HeaderValue::to_str` reads).
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Idempotency-Key header");
    }
    if value.len() > MAX_KEY_LEN {
        return Err("Idempotency-Key is longer than 256 bytes");
    }
    let key = value
        .to_str()
        .map_err(|_| "Idempotency-Key must be visible ASCII")?;
    if key.is_empty() {
        return Err("Idempotency-Key is empty");
    }
    Ok(Some(key))
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(expected))
}

/// A phone as the contract sends it: already normalised.
fn strict_phone(text: &str) -> Result<String, &'static str> {
    match Phone::parse(text) {
        Ok(phone) if phone.as_str() == text => Ok(text.to_string()),
        _ => Err("phone is not a normalised Korean mobile number (010-1234-5678)"),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KakaoTalkBody {
    phone: String,
    message: String,
}

fn parse_kakaotalk(headers: &HeaderMap, body: &[u8]) -> Result<(String, String), &'static str> {
    if !content_type_is(headers, "application/json") {
        return Err("Content-Type must be application/json");
    }
    let body: KakaoTalkBody = serde_json::from_slice(body)
        .map_err(|_| "body must be {\"phone\": ..., \"message\": ...}")?;
    if body.message.is_empty() {
        return Err("message is empty");
    }
    Ok((strict_phone(&body.phone)?, body.message))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsQuery {
    phone: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsBody {
    message: String,
}

fn parse_sms(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(String, String), &'static str> {
    let query: SmsQuery = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| "query must be ?phone=...")?;
    if !content_type_is(headers, "application/x-www-form-urlencoded") {
        return Err("Content-Type must be application/x-www-form-urlencoded");
    }
    let body: SmsBody =
        serde_urlencoded::from_bytes(body).map_err(|_| "body must be message=...")?;
    if body.message.is_empty() {
        return Err("message is empty");
    }
    Ok((strict_phone(&query.phone)?, body.message))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(keys: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for key in keys {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(key).unwrap());
        }
        headers
    }

    #[test]
    fn an_sms_is_checked_in_euc_kr_bytes_and_the_reason_says_so() {
        assert_eq!(check_sms_bytes(&"가".repeat(1000)), Ok(()));
        assert_eq!(check_sms_bytes("똠"), Err("not representable in EUC-KR"));
        assert_eq!(check_sms_bytes("😀"), Err("not representable in EUC-KR"));
        let over = format!("{}a", "가".repeat(1000));
        assert_eq!(check_sms_bytes(&over), Err(TOO_MANY_SMS_BYTES));
        assert!(TOO_MANY_SMS_BYTES.contains(&DEFAULT_MAX_MESSAGE_BYTES.to_string()));
    }

    #[test]
    fn an_idempotency_key_is_one_header_of_visible_ascii_up_to_256_bytes() {
        assert_eq!(idempotency_key(&headers(&[])), Ok(None));
        assert_eq!(
            idempotency_key(&headers(&[b"job-1:ab12"])),
            Ok(Some("job-1:ab12"))
        );
        let longest = "k".repeat(MAX_KEY_LEN);
        assert_eq!(
            idempotency_key(&headers(&[longest.as_bytes()])),
            Ok(Some(longest.as_str()))
        );
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        let refused: [&[&[u8]]; 4] = [
            &[too_long.as_bytes()],
            &[b"a", b"b"],
            &[b""],
            &[b"caf\xc3\xa9"],
        ];
        for keys in refused {
            assert!(idempotency_key(&headers(keys)).is_err(), "{keys:?}");
        }
    }
}
