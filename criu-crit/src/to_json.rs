//! Protobuf bytes to `crit` JSON (the `pb2dict` half of CRIU's
//! `lib/pycriu/images/pb2dict.py`), decoding the wire format directly
//! against the schema plans.
//!
//! Fields appear in field-number order, only when set (optional scalars
//! that are present, non-empty repeated fields); a singular field seen twice
//! keeps its last value, a singular message seen twice is merged, repeated
//! scalars are accepted packed or not, and unknown fields are skipped. Bytes
//! are base64 (or quoted-printable for unix socket names), enums are value
//! names, and enum values outside the schema are left out as Python
//! protobuf drops them. With `pretty`, integers follow the field's `(criu)`
//! option in this order: `hex` (own or inherited from an enclosing message
//! field), `dev`, `flags`, `dict`; repeated `ipadd` fields collapse into one
//! address.

use crate::json::Json;
use crate::schema::{Field, Flags, MessagePlan, Schema, WireKind};
use crate::{base64, number, quopri, tables};

/// Deepest message nesting accepted.
const MAX_DEPTH: usize = 100;

/// Why bytes are not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToJsonError {
    /// The data ends inside a field.
    #[error("field {field} is cut short at byte {at}")]
    Truncated {
        /// Field number (0 while reading a key).
        field: u32,
        /// Offset in the message.
        at: usize,
    },
    /// A varint longer than ten bytes.
    #[error("overlong varint at byte {at}")]
    Varint {
        /// Offset in the message.
        at: usize,
    },
    /// A wire type that is invalid or unusable for the field.
    #[error("field {field} has wire type {wire_type}, which does not fit its type")]
    WireType {
        /// Field number.
        field: u32,
        /// The wire type found.
        wire_type: u8,
    },
    /// A string field holds invalid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    Utf8 {
        /// Field number.
        field: u32,
    },
    /// Field number zero.
    #[error("field number 0 at byte {at}")]
    ZeroField {
        /// Offset in the message.
        at: usize,
    },
    /// Messages nested too deeply.
    #[error("messages nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// The schema has no plan for a nested message.
    #[error("no schema for message {0}")]
    NoSchema(String),
}

/// One field occurrence as found on the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ToJsonError> {
    let start = *pos;
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(ToJsonError::Truncated {
                field: 0,
                at: start,
            });
        };
        *pos += 1;
        value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ToJsonError::Varint { at: start })
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, len: u64, field: u32) -> Result<&'a [u8], ToJsonError> {
    let at = *pos;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or(ToJsonError::Truncated { field, at })?;
    *pos = end;
    Ok(&buf[at..end])
}

/// Decodes `data` as the message `plan` and renders it; `hex` is set when an
/// enclosing field carries `(criu).hex`.
pub fn message_to_json(
    plan: &MessagePlan,
    data: &[u8],
    pretty: bool,
    hex: bool,
) -> Result<Json, ToJsonError> {
    decode(plan, data, pretty, hex, 0)
}

fn decode(
    plan: &MessagePlan,
    data: &[u8],
    pretty: bool,
    hex: bool,
    depth: usize,
) -> Result<Json, ToJsonError> {
    if depth > MAX_DEPTH {
        return Err(ToJsonError::TooDeep);
    }
    // Occurrences by field index; encoders write fields in order, so the
    // stable sort below rarely moves anything.
    let mut found: Vec<(usize, Raw<'_>)> = Vec::with_capacity(plan.fields.len());
    let mut pos = 0;
    while pos < data.len() {
        let at = pos;
        let key = varint(data, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| ToJsonError::ZeroField { at })?;
        if number == 0 {
            return Err(ToJsonError::ZeroField { at });
        }
        let raw = match key & 7 {
            0 => Raw::Varint(varint(data, &mut pos).map_err(|e| match e {
                ToJsonError::Truncated { at, .. } => ToJsonError::Truncated { field: number, at },
                e => e,
            })?),
            1 => {
                let b = take(data, &mut pos, 8, number)?;
                Raw::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            5 => {
                let b = take(data, &mut pos, 4, number)?;
                Raw::Fixed32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
            }
            2 => {
                let len = varint(data, &mut pos)?;
                Raw::Len(take(data, &mut pos, len, number)?)
            }
            wt => {
                return Err(ToJsonError::WireType {
                    field: number,
                    wire_type: wt as u8,
                })
            }
        };
        if let Some(i) = plan.index_of(number) {
            found.push((i, raw));
        }
    }
    let mut members = Vec::with_capacity(plan.fields.len());
    if !found.is_sorted_by_key(|(i, _)| *i) {
        found.sort_by_key(|(i, _)| *i);
    }
    let raws_of: Vec<Raw<'_>> = found.iter().map(|(_, r)| *r).collect();
    let mut start = 0;
    while start < found.len() {
        let index = found[start].0;
        let end = start
            + found[start..]
                .iter()
                .take_while(|(i, _)| *i == index)
                .count();
        let field = &plan.fields[index];
        let raws = &raws_of[start..end];
        start = end;
        let hex = hex || field.style.hex;
        let json = if field.repeated {
            let mut items = Vec::with_capacity(raws.len());
            let mut words = Vec::new();
            for raw in raws {
                match (raw, &field.kind) {
                    (Raw::Len(bytes), kind) if packable(kind) => {
                        let mut p = 0;
                        while p < bytes.len() {
                            let raw = match kind {
                                WireKind::Fixed32 | WireKind::Sfixed32 | WireKind::Float => {
                                    let b = take(bytes, &mut p, 4, field.number)?;
                                    Raw::Fixed32(u32::from_le_bytes(b.try_into().expect("4")))
                                }
                                WireKind::Fixed64 | WireKind::Sfixed64 | WireKind::Double => {
                                    let b = take(bytes, &mut p, 8, field.number)?;
                                    Raw::Fixed64(u64::from_le_bytes(b.try_into().expect("8")))
                                }
                                _ => Raw::Varint(varint(bytes, &mut p)?),
                            };
                            push_value(&mut items, &mut words, raw, field, pretty, hex, depth)?;
                        }
                    }
                    _ => push_value(&mut items, &mut words, *raw, field, pretty, hex, depth)?,
                }
            }
            if pretty && field.style.ipadd {
                if let Some(ip) = number::words_to_ip(&words) {
                    items = vec![Json::Str(ip)];
                }
            }
            if items.is_empty() {
                continue;
            }
            Json::Array(items)
        } else {
            let raw = match (&field.kind, raws.len()) {
                (WireKind::Message(_), n) if n > 1 => {
                    // Protobuf merges repeated occurrences of a singular
                    // message, which is what decoding their concatenation does.
                    let mut joined = Vec::new();
                    for r in raws {
                        match r {
                            Raw::Len(b) => joined.extend_from_slice(b),
                            _ => return Err(wire_type(field, r)),
                        }
                    }
                    let json = value(Raw::Len(&joined), field, pretty, hex, depth)?;
                    if let Some(json) = json {
                        members.push((field.name.clone(), json));
                    }
                    continue;
                }
                _ => raws[raws.len() - 1],
            };
            match value(raw, field, pretty, hex, depth)? {
                Some(json) => json,
                None => continue,
            }
        };
        members.push((field.name.clone(), json));
    }
    Ok(Json::Object(members))
}

fn packable(kind: &WireKind) -> bool {
    !matches!(
        kind,
        WireKind::String | WireKind::Bytes | WireKind::Message(_)
    )
}

fn push_value(
    items: &mut Vec<Json>,
    words: &mut Vec<u32>,
    raw: Raw<'_>,
    field: &Field,
    pretty: bool,
    hex: bool,
    depth: usize,
) -> Result<(), ToJsonError> {
    if field.style.ipadd {
        if let (Raw::Varint(v), WireKind::Uint32) = (raw, &field.kind) {
            words.push(v as u32);
        }
    }
    if let Some(json) = value(raw, field, pretty, hex, depth)? {
        items.push(json);
    }
    Ok(())
}

fn wire_type(field: &Field, raw: &Raw<'_>) -> ToJsonError {
    let wire_type = match raw {
        Raw::Varint(_) => 0,
        Raw::Fixed64(_) => 1,
        Raw::Len(_) => 2,
        Raw::Fixed32(_) => 5,
    };
    ToJsonError::WireType {
        field: field.number,
        wire_type,
    }
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// One value of `field`; `None` for an enum number the schema lacks.
fn value(
    raw: Raw<'_>,
    field: &Field,
    pretty: bool,
    hex: bool,
    depth: usize,
) -> Result<Option<Json>, ToJsonError> {
    let int = |v: i128| Ok(Some(int_to_json(v, field, pretty, hex)));
    match (&field.kind, raw) {
        (WireKind::Bool, Raw::Varint(v)) => Ok(Some(Json::Bool(v != 0))),
        (WireKind::Int32, Raw::Varint(v)) => int(i128::from(v as i32)),
        (WireKind::Int64, Raw::Varint(v)) => int(i128::from(v as i64)),
        (WireKind::Uint32, Raw::Varint(v)) => int(i128::from(v as u32)),
        (WireKind::Uint64, Raw::Varint(v)) => int(i128::from(v)),
        (WireKind::Sint32, Raw::Varint(v)) => int(i128::from(zigzag(v) as i32)),
        (WireKind::Sint64, Raw::Varint(v)) => int(i128::from(zigzag(v))),
        (WireKind::Fixed32, Raw::Fixed32(v)) => int(i128::from(v)),
        (WireKind::Sfixed32, Raw::Fixed32(v)) => int(i128::from(v as i32)),
        (WireKind::Fixed64, Raw::Fixed64(v)) => int(i128::from(v)),
        (WireKind::Sfixed64, Raw::Fixed64(v)) => int(i128::from(v as i64)),
        // No CRIU image has floating point fields; show them as text.
        (WireKind::Float, Raw::Fixed32(v)) => Ok(Some(Json::Str(f32::from_bits(v).to_string()))),
        (WireKind::Double, Raw::Fixed64(v)) => Ok(Some(Json::Str(f64::from_bits(v).to_string()))),
        (WireKind::String, Raw::Len(b)) => match std::str::from_utf8(b) {
            Ok(s) => Ok(Some(Json::Str(s.to_owned()))),
            Err(_) => Err(ToJsonError::Utf8 {
                field: field.number,
            }),
        },
        (WireKind::Bytes, Raw::Len(b)) => Ok(Some(Json::Str(if field.style.unix_name {
            quopri::encode(b)
        } else {
            base64::encode(b)
        }))),
        (WireKind::Enum(values), Raw::Varint(v)) => {
            let n = v as i32;
            Ok(values
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, name)| Json::Str((*name).to_owned())))
        }
        (WireKind::Message(name), Raw::Len(b)) => {
            let plan = Schema::get()
                .plan(name)
                .ok_or_else(|| ToJsonError::NoSchema(name.to_string()))?;
            decode(&plan, b, pretty, hex, depth + 1).map(Some)
        }
        (_, raw) => Err(wire_type(field, &raw)),
    }
}

fn int_to_json(value: i128, field: &Field, pretty: bool, hex: bool) -> Json {
    if !pretty {
        return Json::Int(value);
    }
    let style = &field.style;
    if hex {
        return Json::Str(number::hex(value));
    }
    if style.dev {
        return Json::Str(number::dev_to_string(value as u64, style.odev));
    }
    match style.flags {
        Some(Flags::Table(table)) => {
            return Json::Str(tables::flags_to_string(value as u64, table));
        }
        Some(Flags::Unknown) => return Json::Str(number::hex(value)),
        None => {}
    }
    if let Some(dict) = style.dict {
        if let Some((_, name)) = u64::try_from(value)
            .ok()
            .and_then(|v| dict.iter().find(|(k, _)| *k == v))
        {
            return Json::Str((*name).to_owned());
        }
    }
    Json::Int(value)
}

/// An unsigned member of a message rendered without `pretty`, or 0.
pub fn uint_member(json: &Json, name: &str) -> u64 {
    match json.get(name) {
        Some(Json::Int(v)) => u64::try_from(*v).unwrap_or(0),
        Some(Json::Bool(b)) => u64::from(*b),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(short: &str) -> std::sync::Arc<MessagePlan> {
        Schema::get().image_message(short).expect("plan")
    }

    #[test]
    fn decodes_pstree() {
        let bytes = [
            0x08, 0xc4, 0x7b, 0x10, 0x00, 0x18, 0xc4, 0x7b, 0x20, 0xc4, 0x7b, 0x28, 0xc4, 0x7b,
        ];
        let json = message_to_json(&plan("pstree_entry"), &bytes, false, false).unwrap();
        assert_eq!(
            json.to_text(false),
            r#"{"pid": 15812, "ppid": 0, "pgid": 15812, "sid": 15812, "threads": [15812]}"#
        );
    }

    #[test]
    fn packed_last_wins_and_errors() {
        // threads packed [1, 2], pid twice (last wins), unknown field 99.
        let bytes = [
            0x2a, 0x02, 0x01, 0x02, 0x08, 0x05, 0x08, 0x07, 0x98, 0x06, 0x01,
        ];
        let json = message_to_json(&plan("pstree_entry"), &bytes, false, false).unwrap();
        assert_eq!(json.to_text(false), r#"{"pid": 7, "threads": [1, 2]}"#);
        assert_eq!(
            message_to_json(&plan("pstree_entry"), &[0x08], false, false),
            Err(ToJsonError::Truncated { field: 1, at: 1 })
        );
        assert!(matches!(
            message_to_json(&plan("pstree_entry"), &[0x0a, 0x00], false, false),
            Err(ToJsonError::WireType {
                field: 1,
                wire_type: 2
            })
        ));
        assert!(matches!(
            message_to_json(&plan("pstree_entry"), &[0x00], false, false),
            Err(ToJsonError::ZeroField { at: 0 })
        ));
    }
}
