//! Protobuf message to `crit` JSON (the `pb2dict` half of CRIU's
//! `lib/pycriu/images/pb2dict.py`).
//!
//! Fields appear in field-number order, only when set (optional scalars
//! that are present, non-empty repeated fields). Bytes are base64 (or
//! quoted-printable for unix socket names), enums are value names, and
//! enum values outside the schema are left out as Python protobuf drops
//! them. With `pretty`, integers follow the field's `(criu)` option in this
//! order: `hex` (own or inherited from an enclosing message field), `dev`,
//! `flags`, `dict`; repeated `ipadd` fields collapse into one address.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::json::Json;
use crate::schema::{Field, Flags, Schema};
use crate::{base64, number, quopri, tables};

/// Converts `msg` to a JSON object; `hex` is set when an enclosing field
/// carries `(criu).hex`.
pub fn message_to_json(msg: &DynamicMessage, pretty: bool, hex: bool) -> Json {
    let schema = Schema::get();
    let Some(plan) = schema.plan(msg.descriptor().full_name()) else {
        return Json::Object(Vec::new());
    };
    let mut members = Vec::with_capacity(plan.fields.len());
    for field in &plan.fields {
        if !msg.has_field(&field.desc) {
            continue;
        }
        let value = msg.get_field(&field.desc);
        let hex = hex || field.style.hex;
        let json = if let Value::List(items) = &*value {
            if pretty && field.style.ipadd {
                let words: Vec<u32> = items.iter().filter_map(Value::as_u32).collect();
                match number::words_to_ip(&words) {
                    Some(ip) => Json::Array(vec![Json::Str(ip)]),
                    None => list(items, field, pretty, hex),
                }
            } else {
                list(items, field, pretty, hex)
            }
        } else {
            match scalar(&value, field, pretty, hex) {
                Some(json) => json,
                None => continue,
            }
        };
        members.push((field.name.clone(), json));
    }
    Json::Object(members)
}

fn list(items: &[Value], field: &Field, pretty: bool, hex: bool) -> Json {
    Json::Array(
        items
            .iter()
            .filter_map(|v| scalar(v, field, pretty, hex))
            .collect(),
    )
}

/// One value; `None` for an enum number the schema does not define.
fn scalar(value: &Value, field: &Field, pretty: bool, hex: bool) -> Option<Json> {
    let int = |v: i128| Some(int_to_json(v, field, pretty, hex));
    match value {
        Value::Bool(b) => Some(Json::Bool(*b)),
        Value::I32(v) => int((*v).into()),
        Value::I64(v) => int((*v).into()),
        Value::U32(v) => int((*v).into()),
        Value::U64(v) => int((*v).into()),
        Value::String(s) => Some(Json::Str(s.clone())),
        Value::Bytes(b) => Some(Json::Str(if field.style.unix_name {
            quopri::encode(b)
        } else {
            base64::encode(b)
        })),
        Value::EnumNumber(n) => {
            let prost_reflect::Kind::Enum(e) = field.desc.kind() else {
                return None;
            };
            e.get_value(*n).map(|v| Json::Str(v.name().to_owned()))
        }
        Value::Message(m) => Some(message_to_json(m, pretty, hex)),
        // No CRIU image uses floats or maps; show them plainly anyway.
        Value::F32(v) => Some(Json::Str(v.to_string())),
        Value::F64(v) => Some(Json::Str(v.to_string())),
        Value::List(items) => Some(list(items, field, pretty, hex)),
        Value::Map(_) => Some(Json::Object(Vec::new())),
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
