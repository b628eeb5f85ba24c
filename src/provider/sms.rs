//! SMS's wire format: `POST {base_url}/sms?phone=010-1234-5678` with the form body
//! `message=...`; success is `200` with `{"result": "OK"}`, maybe with `{"smsId": ...}`.

use reqwest::{RequestBuilder, Url};

use super::{Class, ProviderError, Receipt, id_text};
use crate::phone::Phone;

pub(super) const PATH: &str = "/sms";

pub(super) fn request(
    http: &reqwest::Client,
    url: &Url,
    phone: &Phone,
    message: &str,
) -> RequestBuilder {
    http.post(url.clone())
        .query(&[("phone", phone.as_str())])
        .form(&[("message", message)])
}

#[derive(serde::Deserialize)]
struct Answer {
    result: String,
    #[serde(rename = "smsId")]
    sms_id: Option<serde_json::Value>,
}

/// A `200` is an acceptance only with `{"result": "OK"}` (SPEC section 7). A `result` that
/// says otherwise is the provider's refusal: `rejected`, and the fallback may take the message.
/// A body that is missing, cut off or not that JSON confirms nothing either way: the provider
/// may have the message, so it is `answer_lost` — never retried without an idempotency key and
/// never handed to the fallback (either could deliver it twice).
pub(super) fn receipt(body: &[u8]) -> Result<Receipt, ProviderError> {
    match serde_json::from_slice::<Answer>(body) {
        Ok(answer) if answer.result == "OK" => Ok(Receipt {
            message_id: answer.sms_id.and_then(id_text),
        }),
        // The provider's word, not echoed: it is text from outside.
        Ok(_) => Err(unexpected(
            Class::Rejected,
            "HTTP 200 with a result other than OK",
        )),
        Err(_) => Err(unexpected(
            Class::AnswerLost,
            "HTTP 200 without {\"result\": \"OK\"}",
        )),
    }
}

fn unexpected(class: Class, detail: &str) -> ProviderError {
    ProviderError {
        class,
        status: Some(200),
        retry_after: None,
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_result_ok_is_an_acceptance() {
        assert_eq!(
            receipt(br#"{"result":"OK","smsId":"s-1"}"#)
                .unwrap()
                .message_id
                .as_deref(),
            Some("s-1")
        );
        assert_eq!(receipt(br#"{"result":"OK"}"#).unwrap().message_id, None);
        assert_eq!(
            receipt(br#"{"result":"FAIL"}"#).unwrap_err().class,
            Class::Rejected
        );
        for unconfirmed in [
            &b"not json"[..],
            b"",
            br#"{"result":1}"#,
            br#"{"smsId":"s-1"}"#,
        ] {
            assert_eq!(receipt(unconfirmed).unwrap_err().class, Class::AnswerLost);
        }
    }
}
