//! KakaoTalk's wire format: `POST {base_url}/kakaotalk-messages` with the JSON body
//! `{"phone": ..., "message": ...}` and nothing else; `200` means accepted, with a body that is
//! empty or `{"messageId": ...}`.

use reqwest::{RequestBuilder, Url};

use super::{Receipt, id_text};
use crate::phone::Phone;

pub(super) const PATH: &str = "/kakaotalk-messages";

#[derive(serde::Serialize)]
struct Body<'a> {
    phone: &'a str,
    message: &'a str,
}

pub(super) fn request(
    http: &reqwest::Client,
    url: &Url,
    phone: &Phone,
    message: &str,
) -> RequestBuilder {
    http.post(url.clone()).json(&Body {
        phone: phone.as_str(),
        message,
    })
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "messageId")]
    message_id: Option<serde_json::Value>,
}

/// A `200` is an acceptance whatever its body says; the id is taken when there is one.
pub(super) fn receipt(body: &[u8]) -> Receipt {
    let message_id = serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|answer| id_text(answer.message_id?));
    Receipt { message_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_optional() {
        assert_eq!(
            receipt(br#"{"messageId":"kt-1"}"#).message_id.as_deref(),
            Some("kt-1")
        );
        assert_eq!(
            receipt(br#"{"messageId":42}"#).message_id.as_deref(),
            Some("42")
        );
        assert_eq!(receipt(b"").message_id, None);
        assert_eq!(receipt(b"<html>ok</html>").message_id, None);
    }
}
