//! Shaping of outgoing `criu_resp` messages: the protocol-error reply and the
//! size limit that keeps every response readable by 1024-byte clients.
//!
//! CRIU counterpart: `send_criu_err()` in `criu/cr-service.c` and the fixed
//! error-message buffer of `criu/cr-errno.c`.

use criu_proto::rpc::{CriuReqType, CriuResp};
use criu_proto::Message;

/// Largest encoded response we send: CRIU's own test clients read responses
/// with `recv(1024)` (rpc-protocol.md 1.2).
pub const MAX_RESPONSE: usize = 1024;

/// Cap on the bytes of `cr_errmsg` text, whatever else the response holds.
pub const MAX_ERRMSG: usize = 900;

/// `{type: EMPTY, success: false, cr_errmsg}`: the reply to a request the loop
/// cannot serve (undecodable, EMPTY, NOTIFY, unknown type, bad sequence).
pub fn protocol_error(msg: &str) -> CriuResp {
    CriuResp {
        r#type: CriuReqType::Empty as i32,
        success: false,
        cr_errmsg: Some(msg.to_owned()),
        ..Default::default()
    }
}

/// Shortens `cr_errmsg` (on a UTF-8 character boundary) to at most
/// [`MAX_ERRMSG`] bytes and so that the encoded response fits in
/// [`MAX_RESPONSE`] bytes. Returns false if the response is still too large
/// (its other fields alone exceed the limit).
pub fn fit(resp: &mut CriuResp) -> bool {
    if let Some(msg) = resp.cr_errmsg.as_mut() {
        truncate_at_boundary(msg, MAX_ERRMSG);
    }
    loop {
        let len = resp.encoded_len();
        if len <= MAX_RESPONSE {
            return true;
        }
        let Some(msg) = resp.cr_errmsg.as_mut().filter(|m| !m.is_empty()) else {
            return false;
        };
        let excess = len - MAX_RESPONSE;
        truncate_at_boundary(msg, msg.len().saturating_sub(excess));
    }
}

/// Truncates `s` to at most `max` bytes, backing off to a character boundary.
fn truncate_at_boundary(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

#[cfg(test)]
mod tests {
    use criu_proto::rpc::{CriuPageServerInfo, CriuReqType, CriuResp};
    use criu_proto::Message;

    use super::{fit, protocol_error, MAX_ERRMSG, MAX_RESPONSE};

    #[test]
    fn short_message_is_untouched() {
        let mut resp = protocol_error("bad request");
        assert!(fit(&mut resp));
        assert_eq!(resp.cr_errmsg.as_deref(), Some("bad request"));
        assert_eq!(resp.r#type, CriuReqType::Empty as i32);
        assert!(!resp.success);
    }

    #[test]
    fn long_ascii_message_is_capped() {
        let mut resp = protocol_error(&"x".repeat(5000));
        assert!(fit(&mut resp));
        assert_eq!(resp.cr_errmsg.as_ref().map(String::len), Some(MAX_ERRMSG));
        assert!(resp.encode_to_vec().len() <= MAX_RESPONSE);
    }

    #[test]
    fn multibyte_message_is_cut_on_a_boundary() {
        // 3-byte characters: 900 is a multiple of 3, so use 4-byte ones.
        let mut resp = protocol_error(&"\u{1F600}".repeat(1000));
        assert!(fit(&mut resp));
        let msg = resp.cr_errmsg.clone().expect("message kept");
        assert!(msg.len() <= MAX_ERRMSG && msg.len() > MAX_ERRMSG - 4);
        assert!(msg.chars().all(|c| c == '\u{1F600}'));
    }

    #[test]
    fn other_fields_push_the_message_shorter() {
        let mut resp = CriuResp {
            r#type: CriuReqType::PageServer as i32,
            success: false,
            ps: Some(CriuPageServerInfo {
                address: Some("a".repeat(400)),
                ..Default::default()
            }),
            cr_errmsg: Some("é".repeat(800)),
            ..Default::default()
        };
        assert!(fit(&mut resp));
        let bytes = resp.encode_to_vec();
        assert!(bytes.len() <= MAX_RESPONSE, "{} bytes", bytes.len());
        assert!(resp
            .cr_errmsg
            .as_ref()
            .is_some_and(|m| m.len() < MAX_ERRMSG));
        let back = CriuResp::decode(bytes.as_slice()).expect("still decodes");
        assert_eq!(back, resp);
    }

    #[test]
    fn oversized_without_message_is_reported() {
        let mut resp = CriuResp {
            r#type: CriuReqType::PageServer as i32,
            success: true,
            ps: Some(CriuPageServerInfo {
                address: Some("a".repeat(2000)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!fit(&mut resp));
    }
}
