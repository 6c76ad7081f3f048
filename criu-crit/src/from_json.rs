//! `crit` JSON back to a protobuf message (the `dict2pb` half of CRIU's
//! `lib/pycriu/images/pb2dict.py`).
//!
//! Plain and pretty JSON are both accepted: integers may be numbers or text
//! (`"0x1f"`, `"8:3"` for device fields, `"PROT_READ | PROT_WRITE"` for
//! flag fields, `"Alive"` for dictionary fields), IP address fields may be one
//! address string, bytes are base64 (quoted-printable for unix socket names),
//! enums are names (numbers are accepted too). Members that are not fields
//! are ignored, as `crit` does. Every required field must be present.

use serde_json::Value as J;

use crate::schema::{Field, Flags, MessagePlan, Schema, WireKind};
use crate::{base64, number, quopri, tables};

/// Why a JSON value cannot become a message.
#[derive(Debug, thiserror::Error)]
pub enum FromJsonError {
    /// A member has a JSON type the field cannot take.
    #[error("{path}: expected {expected}, found {found}")]
    Type {
        /// Dotted path of the member.
        path: String,
        /// What the field takes.
        expected: &'static str,
        /// The JSON found.
        found: String,
    },
    /// A value is out of the field's range or unparsable.
    #[error("{path}: invalid value {value}")]
    Value {
        /// Dotted path of the member.
        path: String,
        /// The JSON found.
        value: String,
    },
    /// A required field is missing.
    #[error("{path}: required field {field} is missing")]
    MissingRequired {
        /// Dotted path of the message.
        path: String,
        /// Name of the missing field.
        field: String,
    },
    /// Base64 text is malformed.
    #[error("{path}: bad base64")]
    Base64 {
        /// Dotted path of the member.
        path: String,
        /// Cause.
        #[source]
        source: base64::Base64Error,
    },
    /// The schema lacks a nested message.
    #[error("{path}: no schema for message {message}")]
    NoSchema {
        /// Dotted path of the member.
        path: String,
        /// Message name.
        message: String,
    },
}

/// Encodes the JSON object `json` as the message `plan`, fields in
/// ascending number order, repeated scalars unpacked (as protobuf-c and
/// Python protobuf write proto2); `path` names it in errors.
pub fn json_to_message(json: &J, plan: &MessagePlan, path: &str) -> Result<Vec<u8>, FromJsonError> {
    let mut out = Vec::new();
    encode_message(json, plan, path, &mut out)?;
    Ok(out)
}

fn encode_message(
    json: &J,
    plan: &MessagePlan,
    path: &str,
    out: &mut Vec<u8>,
) -> Result<(), FromJsonError> {
    let Some(obj) = json.as_object() else {
        return Err(type_error(path, "an object", json));
    };
    for field in &plan.fields {
        let fpath = format!("{path}.{}", field.name);
        let Some(value) = obj.get(&*field.name) else {
            if field.required {
                return Err(FromJsonError::MissingRequired {
                    path: path.to_owned(),
                    field: field.name.to_string(),
                });
            }
            continue;
        };
        if !field.repeated {
            element(value, field, &fpath, out)?;
            continue;
        }
        let Some(items) = value.as_array() else {
            return Err(type_error(&fpath, "an array", value));
        };
        match (items.first(), field.style.ipadd) {
            (Some(J::String(ip)), true) => {
                let words = number::ip_to_words(ip).ok_or_else(|| value_error(&fpath, value))?;
                for w in words {
                    put_varint(out, u64::from(field.number) << 3);
                    put_varint(out, w.into());
                }
            }
            _ => {
                for (i, v) in items.iter().enumerate() {
                    element(v, field, &format!("{fpath}[{i}]"), out)?;
                }
            }
        }
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, number: u32, data: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn type_error(path: &str, expected: &'static str, found: &J) -> FromJsonError {
    FromJsonError::Type {
        path: path.to_owned(),
        expected,
        found: short(found),
    }
}

fn value_error(path: &str, found: &J) -> FromJsonError {
    FromJsonError::Value {
        path: path.to_owned(),
        value: short(found),
    }
}

fn short(v: &J) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// Encodes one (non-list) value of `field` with its tag.
fn element(value: &J, field: &Field, path: &str, out: &mut Vec<u8>) -> Result<(), FromJsonError> {
    let number = field.number;
    let varint_tag = u64::from(number) << 3;
    match field.kind {
        WireKind::Message(name) => {
            let plan = Schema::get()
                .plan(name)
                .ok_or_else(|| FromJsonError::NoSchema {
                    path: path.to_owned(),
                    message: name.to_owned(),
                })?;
            let mut body = Vec::new();
            encode_message(value, &plan, path, &mut body)?;
            put_len(out, number, &body);
        }
        WireKind::Bytes => {
            let Some(text) = value.as_str() else {
                return Err(type_error(path, "a string", value));
            };
            let bytes = if field.style.unix_name {
                quopri::decode(text)
            } else {
                base64::decode(text).map_err(|source| FromJsonError::Base64 {
                    path: path.to_owned(),
                    source,
                })?
            };
            put_len(out, number, &bytes);
        }
        WireKind::String => match value {
            J::String(s) => put_len(out, number, s.as_bytes()),
            J::Number(n) => put_len(out, number, n.to_string().as_bytes()),
            _ => return Err(type_error(path, "a string", value)),
        },
        WireKind::Bool => {
            let b = match value {
                J::Bool(b) => *b,
                J::Number(n) => n.as_f64() != Some(0.0),
                _ => return Err(type_error(path, "a boolean", value)),
            };
            put_varint(out, varint_tag);
            put_varint(out, u64::from(b));
        }
        WireKind::Enum(values) => {
            let found = match value {
                J::String(name) => values.iter().find(|(_, n)| n == name),
                J::Number(n) => n
                    .as_i64()
                    .and_then(|n| values.iter().find(|(v, _)| i64::from(*v) == n)),
                _ => None,
            };
            let (v, _) = found.ok_or_else(|| value_error(path, value))?;
            put_varint(out, varint_tag);
            put_varint(out, i64::from(*v) as u64);
        }
        WireKind::Float | WireKind::Double => {
            return Err(type_error(path, "no floating point", value))
        }
        kind => {
            let n = integer(value, field).ok_or_else(|| value_error(path, value))?;
            let bad = || value_error(path, value);
            match kind {
                WireKind::Int32 => {
                    let v = i32::try_from(n).map_err(|_| bad())?;
                    put_varint(out, varint_tag);
                    put_varint(out, i64::from(v) as u64);
                }
                WireKind::Int64 => {
                    let v = i64::try_from(n).map_err(|_| bad())?;
                    put_varint(out, varint_tag);
                    put_varint(out, v as u64);
                }
                WireKind::Uint32 => {
                    let v = u32::try_from(n).map_err(|_| bad())?;
                    put_varint(out, varint_tag);
                    put_varint(out, v.into());
                }
                WireKind::Uint64 => {
                    let v = u64::try_from(n).map_err(|_| bad())?;
                    put_varint(out, varint_tag);
                    put_varint(out, v);
                }
                WireKind::Sint32 => {
                    let v = i32::try_from(n).map_err(|_| bad())?;
                    put_varint(out, varint_tag);
                    put_varint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
                }
                WireKind::Sint64 => {
                    let v = i64::try_from(n).map_err(|_| bad())?;
                    put_varint(out, varint_tag);
                    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
                }
                WireKind::Fixed32 | WireKind::Sfixed32 => {
                    let v = if kind == WireKind::Fixed32 {
                        u32::try_from(n).map_err(|_| bad())?
                    } else {
                        i32::try_from(n).map_err(|_| bad())? as u32
                    };
                    put_varint(out, varint_tag | 5);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                _ => {
                    let v = if kind == WireKind::Fixed64 {
                        u64::try_from(n).map_err(|_| bad())?
                    } else {
                        i64::try_from(n).map_err(|_| bad())? as u64
                    };
                    put_varint(out, varint_tag | 1);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Ok(())
}

/// Reads an integer field's value from a number or from any of the text
/// forms `crit --pretty` prints.
fn integer(value: &J, field: &Field) -> Option<i128> {
    match value {
        J::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        J::Bool(b) => Some(i128::from(*b)),
        J::String(text) => {
            let style = &field.style;
            if style.dev {
                return number::dev_from_string(text, style.odev);
            }
            if let Some(Flags::Table(table)) = style.flags {
                return tables::flags_from_string(text, table);
            }
            if let Some(dict) = style.dict {
                if let Some((v, _)) = dict.iter().find(|(_, name)| name == text) {
                    return Some(i128::from(*v));
                }
            }
            number::parse_int(text)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_json::message_to_json;

    fn plan(short: &str) -> std::sync::Arc<MessagePlan> {
        Schema::get().image_message(short).unwrap()
    }

    #[test]
    fn pretty_and_plain_agree() {
        let plain = serde_json::json!({"start": 4096, "end": 8192, "pgoff": 0, "shmid": 0,
            "prot": 3, "flags": 34, "status": 513, "fd": -1});
        let pretty = serde_json::json!({"start": "0x1000", "end": "0x2000", "pgoff": 0, "shmid": 0,
            "prot": "PROT_READ | PROT_WRITE", "flags": "MAP_PRIVATE | MAP_ANON",
            "status": "VMA_AREA_REGULAR | VMA_ANON_PRIVATE", "fd": -1});
        let vma = plan("vma_entry");
        let a = json_to_message(&plain, &vma, "e").unwrap();
        let b = json_to_message(&pretty, &vma, "e").unwrap();
        assert_eq!(a, b);
        // fd is sint64: -1 is the zigzag byte 01 after tag 0x40.
        assert!(a.ends_with(&[0x40, 0x01]), "{a:?}");
        let shown = message_to_json(&vma, &a, true, false)
            .unwrap()
            .to_text(false);
        assert!(
            shown.contains(r#""prot": "PROT_READ | PROT_WRITE""#),
            "{shown}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let missing = serde_json::json!({"pid": 1});
        let err = json_to_message(&missing, &plan("pstree_entry"), "entries[0]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "entries[0]: required field ppid is missing"
        );
        let bad = serde_json::json!({"pid": -1, "ppid": 0, "pgid": 0, "sid": 0});
        let err = json_to_message(&bad, &plan("pstree_entry"), "entries[0]").unwrap_err();
        assert_eq!(err.to_string(), "entries[0].pid: invalid value -1");
    }
}
