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

/// A `200` whose body is not `{"result": "OK"}` is not an acceptance. It is classed `rejected`
/// (not retried): the provider answered, and retrying something it may have taken risks sending
/// the message twice.
pub(super) fn receipt(body: &[u8]) -> Result<Receipt, ProviderError> {
    match serde_json::from_slice::<Answer>(body) {
        Ok(answer) if answer.result == "OK" => Ok(Receipt {
            message_id: answer.sms_id.and_then(id_text),
        }),
        Ok(answer) => Err(unexpected(format!(
            "HTTP 200 with result {:?}",
            answer.result
        ))),
        Err(_) => Err(unexpected(
            "HTTP 200 without {\"result\": \"OK\"}".to_string(),
        )),
    }
}

fn unexpected(detail: String) -> ProviderError {
    ProviderError {
        class: Class::Rejected,
        status: Some(200),
        retry_after: None,
        detail,
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
        assert_eq!(receipt(b"not json").unwrap_err().class, Class::Rejected);
    }
}
