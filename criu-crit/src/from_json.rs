//! `crit` JSON back to a protobuf message (the `dict2pb` half of CRIU's
//! `lib/pycriu/images/pb2dict.py`).
//!
//! Plain and pretty JSON are both accepted: integers may be numbers or text
//! (`"0x1f"`, `"8:3"` for device fields, `"PROT_READ | PROT_WRITE"` for
//! flag fields, `"Alive"` for dictionary fields), IP address fields may be one
//! address string, bytes are base64 (quoted-printable for unix socket names),
//! enums are names (numbers are accepted too). Members that are not fields
//! are ignored, as `crit` does. Every required field must be present.

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};
use serde_json::Value as J;

use crate::schema::{Field, Flags, Schema};
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
}

/// Builds a message of type `desc` from the JSON object `json`; `path` names
/// it in errors.
pub fn json_to_message(
    json: &J,
    desc: &MessageDescriptor,
    path: &str,
) -> Result<DynamicMessage, FromJsonError> {
    let schema = Schema::get();
    let Some(obj) = json.as_object() else {
        return Err(type_error(path, "an object", json));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    let Some(plan) = schema.plan(desc.full_name()) else {
        return Ok(msg);
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
        let converted = if field.repeated {
            let Some(items) = value.as_array() else {
                return Err(type_error(&fpath, "an array", value));
            };
            match (items.first(), field.style.ipadd) {
                (Some(J::String(ip)), true) => {
                    let words =
                        number::ip_to_words(ip).ok_or_else(|| value_error(&fpath, value))?;
                    Value::List(words.into_iter().map(Value::U32).collect())
                }
                _ => Value::List(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| element(v, field, &format!("{fpath}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
            }
        } else {
            element(value, field, &fpath)?
        };
        msg.set_field(&field.desc, converted);
    }
    Ok(msg)
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

/// Converts one (non-list) value for `field`.
fn element(value: &J, field: &Field, path: &str) -> Result<Value, FromJsonError> {
    let kind = field.desc.kind();
    match kind {
        Kind::Message(m) => json_to_message(value, &m, path).map(Value::Message),
        Kind::Bytes => {
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
            Ok(Value::Bytes(bytes.into()))
        }
        Kind::String => match value {
            J::String(s) => Ok(Value::String(s.clone())),
            J::Number(n) => Ok(Value::String(n.to_string())),
            _ => Err(type_error(path, "a string", value)),
        },
        Kind::Bool => match value {
            J::Bool(b) => Ok(Value::Bool(*b)),
            J::Number(n) => Ok(Value::Bool(n.as_f64() != Some(0.0))),
            _ => Err(type_error(path, "a boolean", value)),
        },
        Kind::Enum(e) => {
            let found = match value {
                J::String(name) => e.get_value_by_name(name),
                J::Number(n) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .and_then(|n| e.get_value(n)),
                _ => None,
            };
            found
                .map(|v| Value::EnumNumber(v.number()))
                .ok_or_else(|| value_error(path, value))
        }
        Kind::Double | Kind::Float => Err(type_error(path, "no floating point", value)),
        _ => {
            let n = integer(value, field).ok_or_else(|| value_error(path, value))?;
            fit(n, &kind).ok_or_else(|| value_error(path, value))
        }
    }
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

fn fit(n: i128, kind: &Kind) -> Option<Value> {
    Some(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(i32::try_from(n).ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(i64::try_from(n).ok()?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(u32::try_from(n).ok()?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(u64::try_from(n).ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_json::message_to_json;
    use prost::Message;

    fn desc(short: &str) -> MessageDescriptor {
        Schema::get().image_message(short).unwrap().desc.clone()
    }

    #[test]
    fn pretty_and_plain_agree() {
        let plain = serde_json::json!({"start": 4096, "end": 8192, "pgoff": 0, "shmid": 0,
            "prot": 3, "flags": 34, "status": 513, "fd": -1});
        let pretty = serde_json::json!({"start": "0x1000", "end": "0x2000", "pgoff": 0, "shmid": 0,
            "prot": "PROT_READ | PROT_WRITE", "flags": "MAP_PRIVATE | MAP_ANON",
            "status": "VMA_AREA_REGULAR | VMA_ANON_PRIVATE", "fd": -1});
        let a = json_to_message(&plain, &desc("vma_entry"), "e").unwrap();
        let b = json_to_message(&pretty, &desc("vma_entry"), "e").unwrap();
        assert_eq!(a.encode_to_vec(), b.encode_to_vec());
        let plan = Schema::get().image_message("vma_entry").unwrap();
        let shown = message_to_json(&plan, &a.encode_to_vec(), true, false)
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
        let err = json_to_message(&missing, &desc("pstree_entry"), "entries[0]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "entries[0]: required field ppid is missing"
        );
        let bad = serde_json::json!({"pid": -1, "ppid": 0, "pgid": 0, "sid": 0});
        let err = json_to_message(&bad, &desc("pstree_entry"), "entries[0]").unwrap_err();
        assert_eq!(err.to_string(), "entries[0].pid: invalid value -1");
    }
}
