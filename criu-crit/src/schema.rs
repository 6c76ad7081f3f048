//! The image schemas as `crit` needs them: for every message, its fields in
//! field-number order with their types and the `(criu)` display options
//! that `crit --pretty` honours (CRIU's `images/opts.proto`).
//!
//! The tables are generated at build time from
//! [`criu_proto::FILE_DESCRIPTOR_SET`] (see `build.rs`), so nothing is parsed
//! at start-up; a message's [`MessagePlan`] is built on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::tables::{self, DictTable, FlagTable};

/// Package of the image messages.
pub const IMAGES_PACKAGE: &str = "criu.images";

/// Field label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// `required`.
    Required,
    /// `optional`.
    Optional,
    /// `repeated`.
    Repeated,
}

/// Field type in the generated tables.
#[derive(Debug, Clone, Copy)]
pub enum StaticKind {
    /// `double`.
    Double,
    /// `float`.
    Float,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `uint32`.
    Uint32,
    /// `uint64`.
    Uint64,
    /// `sint32`.
    Sint32,
    /// `sint64`.
    Sint64,
    /// `fixed32`.
    Fixed32,
    /// `fixed64`.
    Fixed64,
    /// `sfixed32`.
    Sfixed32,
    /// `sfixed64`.
    Sfixed64,
    /// `bool`.
    Bool,
    /// `string`.
    String,
    /// `bytes`.
    Bytes,
    /// An enum, by index in the enum table.
    Enum(usize),
    /// A message, by full name.
    Message(&'static str),
}

/// One field in the generated tables.
#[derive(Debug)]
pub struct StaticField {
    /// Name.
    pub name: &'static str,
    /// Number.
    pub number: u32,
    /// Type.
    pub kind: StaticKind,
    /// Label.
    pub label: Label,
    /// `(criu).hex`.
    pub hex: bool,
    /// `(criu).ipadd`.
    pub ipadd: bool,
    /// `(criu).dev`.
    pub dev: bool,
    /// `(criu).odev`.
    pub odev: bool,
    /// `(criu).flags`.
    pub flags: Option<&'static str>,
    /// `(criu).dict`.
    pub dict: Option<&'static str>,
    /// `(criu).conv`.
    pub conv: Option<&'static str>,
}

/// One message in the generated tables.
#[derive(Debug)]
pub struct StaticMessage {
    /// Full name (`criu.images.pstree_entry`).
    pub name: &'static str,
    /// Short name (`pstree_entry`).
    pub short: &'static str,
    /// Fields by ascending number.
    pub fields: &'static [StaticField],
}

include!(concat!(env!("OUT_DIR"), "/schema_table.rs"));

/// How a `(criu).flags` field prints.
#[derive(Debug, Clone, Copy)]
pub enum Flags {
    /// Bit names from a table.
    Table(FlagTable),
    /// A table name `crit` does not know: printed in hex.
    Unknown,
}

/// The `(criu)` options of one field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// `(criu).hex`: integers as `0x..`, inherited by sub-messages.
    pub hex: bool,
    /// `(criu).ipadd`: repeated words shown as one IP address.
    pub ipadd: bool,
    /// `(criu).dev`: a device number shown as `major:minor`.
    pub dev: bool,
    /// `(criu).odev`: the device number uses glibc's old layout.
    pub odev: bool,
    /// `(criu).flags`.
    pub flags: Option<Flags>,
    /// `(criu).dict`: the value-name table, if `crit` has one for the field.
    pub dict: Option<DictTable>,
    /// `(criu).conv = "unix_name"`: bytes as quoted-printable text.
    pub unix_name: bool,
}

/// The protobuf type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    /// `bool`.
    Bool,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `uint32`.
    Uint32,
    /// `uint64`.
    Uint64,
    /// `sint32` (zigzag).
    Sint32,
    /// `sint64` (zigzag).
    Sint64,
    /// `fixed32`.
    Fixed32,
    /// `fixed64`.
    Fixed64,
    /// `sfixed32`.
    Sfixed32,
    /// `sfixed64`.
    Sfixed64,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `string`.
    String,
    /// `bytes`.
    Bytes,
    /// An enum: its values and names.
    Enum(&'static [(i32, &'static str)]),
    /// A message: its full name.
    Message(&'static str),
}

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its name, shared by every JSON object that uses it.
    pub name: Arc<str>,
    /// Its number.
    pub number: u32,
    /// Its type.
    pub kind: WireKind,
    /// Declared `repeated`.
    pub repeated: bool,
    /// Declared `required`.
    pub required: bool,
    /// Display options.
    pub style: Style,
}

/// The fields of one message, by ascending field number.
#[derive(Debug)]
pub struct MessagePlan {
    /// Full name (`criu.images.pstree_entry`).
    pub name: &'static str,
    /// Short name (`pstree_entry`).
    pub short: &'static str,
    /// Its fields.
    pub fields: Vec<Field>,
    /// Index into `fields` by field number (`u16::MAX`: no such field), for
    /// numbers below [`DIRECT_NUMBERS`].
    by_number: Vec<u16>,
}

/// Field numbers looked up through a table; larger ones are searched.
const DIRECT_NUMBERS: u32 = 256;

impl MessagePlan {
    /// The index in `fields` of field `number`.
    pub fn index_of(&self, number: u32) -> Option<usize> {
        if number < DIRECT_NUMBERS {
            let i = *self.by_number.get(number as usize)?;
            (i != u16::MAX).then_some(usize::from(i))
        } else {
            self.fields.iter().position(|f| f.number == number)
        }
    }
}

/// The messages, each planned on first use.
#[derive(Debug, Default)]
pub struct Schema {
    plans: Mutex<HashMap<&'static str, Arc<MessagePlan>>>,
}

impl Schema {
    /// The schema of the compiled-in image protos.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(Schema::default)
    }

    /// The plan of the message with full name `name`
    /// (`criu.images.pstree_entry`).
    pub fn plan(&self, name: &str) -> Option<Arc<MessagePlan>> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = plans.get(name) {
            return Some(plan.clone());
        }
        let i = MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok()?;
        let m = &MESSAGES[i];
        let fields: Vec<Field> = m.fields.iter().map(plan_field).collect();
        let mut by_number = vec![u16::MAX; DIRECT_NUMBERS as usize];
        for (i, f) in fields.iter().enumerate() {
            if f.number < DIRECT_NUMBERS {
                by_number[f.number as usize] = i as u16;
            }
        }
        let plan = Arc::new(MessagePlan {
            name: m.name,
            short: m.short,
            fields,
            by_number,
        });
        plans.insert(m.name, plan.clone());
        Some(plan)
    }

    /// The plan of an image message given its short name (`pstree_entry`).
    pub fn image_message(&self, short: &str) -> Option<Arc<MessagePlan>> {
        self.plan(&format!("{IMAGES_PACKAGE}.{short}"))
    }
}

fn plan_field(f: &'static StaticField) -> Field {
    let style = Style {
        hex: f.hex,
        ipadd: f.ipadd,
        dev: f.dev,
        odev: f.odev,
        flags: f
            .flags
            .filter(|t| !t.is_empty())
            .map(|t| tables::flag_table(t).map_or(Flags::Unknown, Flags::Table)),
        dict: f
            .dict
            .filter(|d| !d.is_empty())
            .and_then(|d| tables::dict_table(d, f.name)),
        unix_name: f.conv == Some("unix_name"),
    };
    let kind = match f.kind {
        StaticKind::Bool => WireKind::Bool,
        StaticKind::Int32 => WireKind::Int32,
        StaticKind::Int64 => WireKind::Int64,
        StaticKind::Uint32 => WireKind::Uint32,
        StaticKind::Uint64 => WireKind::Uint64,
        StaticKind::Sint32 => WireKind::Sint32,
        StaticKind::Sint64 => WireKind::Sint64,
        StaticKind::Fixed32 => WireKind::Fixed32,
        StaticKind::Fixed64 => WireKind::Fixed64,
        StaticKind::Sfixed32 => WireKind::Sfixed32,
        StaticKind::Sfixed64 => WireKind::Sfixed64,
        StaticKind::Float => WireKind::Float,
        StaticKind::Double => WireKind::Double,
        StaticKind::String => WireKind::String,
        StaticKind::Bytes => WireKind::Bytes,
        StaticKind::Enum(i) => WireKind::Enum(ENUMS[i]),
        StaticKind::Message(m) => WireKind::Message(m),
    };
    Field {
        name: Arc::from(f.name),
        number: f.number,
        kind,
        repeated: f.label == Label::Repeated,
        required: f.label == Label::Required,
        style,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(plan: &'a MessagePlan, name: &str) -> &'a Field {
        plan.fields
            .iter()
            .find(|f| &*f.name == name)
            .expect("field")
    }

    #[test]
    fn options_are_read() {
        let schema = Schema::get();
        assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        let vma = schema.image_message("vma_entry").unwrap();
        let start = field(&vma, "start");
        assert!(start.style.hex && start.required);
        assert!(matches!(
            field(&vma, "prot").style.flags,
            Some(Flags::Table(_))
        ));
        let unix = schema.image_message("unix_sk_entry").unwrap();
        assert!(unix.fields.iter().any(|f| f.style.unix_name));
        let ghost = schema.image_message("ghost_file_entry").unwrap();
        let rdev = field(&ghost, "rdev");
        assert!(rdev.style.dev && rdev.style.odev);
        let tc = schema.image_message("task_core_entry").unwrap();
        assert!(tc.fields[0].style.dict.is_some());
        let core = schema.image_message("core_entry").unwrap();
        let numbers: Vec<u32> = core.fields.iter().map(|f| f.number).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(core.index_of(numbers[3]), Some(3));
        assert_eq!(core.index_of(1000), None);
        let fdinfo = schema.image_message("fdinfo_entry").unwrap();
        assert!(
            matches!(field(&fdinfo, "type").kind, WireKind::Enum(v) if v.contains(&(1, "REG")))
        );
        assert!(schema.plan("criu.images.nope").is_none());
    }
}
