//! Turns criu-proto's descriptor set into static tables (`schema_table.rs`
//! in `OUT_DIR`): every message with its fields, their types and their
//! `(criu)` display options, and every enum with its values. `crit` reads
//! them at no start-up cost instead of building a descriptor pool at run
//! time.

use std::fmt::Write as _;
use std::path::PathBuf;

use prost_reflect::{Cardinality, DescriptorPool, Kind, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = DescriptorPool::decode(criu_proto::FILE_DESCRIPTOR_SET)?;
    let ext = pool.get_extension_by_name("criu.images.criu");
    let mut enums: Vec<String> = pool.all_enums().map(|e| e.full_name().to_owned()).collect();
    enums.sort();
    let mut msgs: Vec<_> = pool
        .all_messages()
        .filter(|m| m.package_name().starts_with("criu."))
        .collect();
    msgs.sort_by(|a, b| a.full_name().cmp(b.full_name()));

    let mut s = String::from("pub(crate) static ENUMS: &[&[(i32, &str)]] = &[\n");
    for name in &enums {
        let e = pool.get_enum_by_name(name).ok_or("enum vanished")?;
        let values: Vec<String> = e
            .values()
            .map(|v| format!("({}, {:?})", v.number(), v.name()))
            .collect();
        writeln!(s, "    &[{}],", values.join(", "))?;
    }
    s.push_str("];\n\npub(crate) static MESSAGES: &[StaticMessage] = &[\n");
    for m in msgs {
        writeln!(
            s,
            "    StaticMessage {{ name: {:?}, short: {:?}, fields: &[",
            m.full_name(),
            m.name()
        )?;
        let mut fields: Vec<_> = m.fields().collect();
        fields.sort_by_key(|f| f.number());
        for f in fields {
            let kind = match f.kind() {
                Kind::Enum(e) => format!(
                    "StaticKind::Enum({})",
                    enums
                        .binary_search(&e.full_name().to_owned())
                        .map_err(|_| "enum index")?
                ),
                Kind::Message(sub) => format!("StaticKind::Message({:?})", sub.full_name()),
                Kind::Double => "StaticKind::Double".to_owned(),
                Kind::Float => "StaticKind::Float".to_owned(),
                Kind::Int32 => "StaticKind::Int32".to_owned(),
                Kind::Int64 => "StaticKind::Int64".to_owned(),
                Kind::Uint32 => "StaticKind::Uint32".to_owned(),
                Kind::Uint64 => "StaticKind::Uint64".to_owned(),
                Kind::Sint32 => "StaticKind::Sint32".to_owned(),
                Kind::Sint64 => "StaticKind::Sint64".to_owned(),
                Kind::Fixed32 => "StaticKind::Fixed32".to_owned(),
                Kind::Fixed64 => "StaticKind::Fixed64".to_owned(),
                Kind::Sfixed32 => "StaticKind::Sfixed32".to_owned(),
                Kind::Sfixed64 => "StaticKind::Sfixed64".to_owned(),
                Kind::Bool => "StaticKind::Bool".to_owned(),
                Kind::String => "StaticKind::String".to_owned(),
                Kind::Bytes => "StaticKind::Bytes".to_owned(),
            };
            let label = if f.is_list() {
                "Repeated"
            } else if f.cardinality() == Cardinality::Required {
                "Required"
            } else {
                "Optional"
            };
            let (mut hex, mut ipadd, mut dev, mut odev) = (false, false, false, false);
            let (mut flags, mut dict, mut conv) = (None, None, None);
            if let Some(ext) = &ext {
                let options = f.options();
                if options.has_extension(ext) {
                    if let Value::Message(o) = &*options.get_extension(ext) {
                        let b = |n: &str| {
                            o.has_field_by_name(n)
                                && o.get_field_by_name(n).and_then(|v| v.as_bool()) == Some(true)
                        };
                        let t = |n: &str| {
                            o.has_field_by_name(n)
                                .then(|| o.get_field_by_name(n))
                                .flatten()
                                .and_then(|v| v.as_str().map(str::to_owned))
                        };
                        (hex, ipadd, dev, odev) = (b("hex"), b("ipadd"), b("dev"), b("odev"));
                        (flags, dict, conv) = (t("flags"), t("dict"), t("conv"));
                    }
                }
            }
            writeln!(
                s,
                "        StaticField {{ name: {:?}, number: {}, kind: {kind}, label: Label::{label}, \
                 hex: {hex}, ipadd: {ipadd}, dev: {dev}, odev: {odev}, flags: {flags:?}, dict: {dict:?}, conv: {conv:?} }},",
                f.name(),
                f.number(),
            )?;
        }
        s.push_str("    ] },\n");
    }
    s.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("schema_table.rs"), s)?;
    Ok(())
}
