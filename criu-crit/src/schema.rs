//! The image schemas seen through reflection: the descriptor pool built from
//! [`criu_proto::FILE_DESCRIPTOR_SET`] and, for every message, the list of
//! its fields in field-number order with the `(criu)` display options that
//! `crit --pretty` honours (CRIU's `images/opts.proto`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use prost_reflect::{
    Cardinality, DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    Value,
};

use crate::tables::{self, DictTable, FlagTable};

/// Full name of the extension carrying the display options.
const OPTIONS_EXTENSION: &str = "criu.images.criu";
/// Package of the image messages.
pub const IMAGES_PACKAGE: &str = "criu.images";

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

/// The protobuf type of a field, as the wire decoder needs it.
#[derive(Debug, Clone)]
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
    Enum(Arc<[(i32, String)]>),
    /// A message: its full name.
    Message(Arc<str>),
}

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// The reflected field.
    pub desc: FieldDescriptor,
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
    /// The reflected message.
    pub desc: MessageDescriptor,
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

/// The messages of the pool, each planned on first use.
#[derive(Debug)]
pub struct Schema {
    pool: DescriptorPool,
    ext: Option<ExtensionDescriptor>,
    plans: Mutex<HashMap<String, Arc<MessagePlan>>>,
}

impl Schema {
    /// The schema of the compiled-in image protos, built once.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(Schema::build)
    }

    fn build() -> Schema {
        let pool = DescriptorPool::decode(criu_proto::FILE_DESCRIPTOR_SET)
            .expect("criu-proto's descriptor set is valid");
        let ext = pool.get_extension_by_name(OPTIONS_EXTENSION);
        Schema {
            pool,
            ext,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The plan of the message with full name `name`
    /// (`criu.images.pstree_entry`).
    pub fn plan(&self, name: &str) -> Option<Arc<MessagePlan>> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = plans.get(name) {
            return Some(plan.clone());
        }
        let desc = self.pool.get_message_by_name(name)?;
        let mut fields: Vec<Field> = desc
            .fields()
            .map(|f| plan_field(f, self.ext.as_ref()))
            .collect();
        fields.sort_by_key(|f| f.number);
        let mut by_number = vec![u16::MAX; DIRECT_NUMBERS as usize];
        for (i, f) in fields.iter().enumerate() {
            if f.number < DIRECT_NUMBERS {
                by_number[f.number as usize] = i as u16;
            }
        }
        let plan = Arc::new(MessagePlan {
            desc,
            fields,
            by_number,
        });
        plans.insert(name.to_owned(), plan.clone());
        Some(plan)
    }

    /// The plan of an image message given its short name (`pstree_entry`).
    pub fn image_message(&self, short: &str) -> Option<Arc<MessagePlan>> {
        self.plan(&format!("{IMAGES_PACKAGE}.{short}"))
    }

    /// The descriptor pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }
}

fn plan_field(desc: FieldDescriptor, ext: Option<&ExtensionDescriptor>) -> Field {
    let mut style = Style::default();
    if let Some(ext) = ext {
        let options = desc.options();
        if options.has_extension(ext) {
            if let Value::Message(opts) = &*options.get_extension(ext) {
                let flag = |name: &str| {
                    matches!(
                        opts.get_field_by_name(name).as_deref(),
                        Some(Value::Bool(true))
                    )
                };
                let text = |name: &str| {
                    opts.has_field_by_name(name)
                        .then(|| opts.get_field_by_name(name))
                        .flatten()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .filter(|s| !s.is_empty())
                };
                style.hex = flag("hex");
                style.ipadd = flag("ipadd");
                style.dev = flag("dev");
                style.odev = flag("odev");
                style.flags = text("flags").map(|t| match tables::flag_table(&t) {
                    Some(table) => Flags::Table(table),
                    None => Flags::Unknown,
                });
                style.dict = text("dict").and_then(|d| tables::dict_table(&d, desc.name()));
                style.unix_name = text("conv").as_deref() == Some("unix_name");
            }
        }
    }
    let kind = match desc.kind() {
        Kind::Bool => WireKind::Bool,
        Kind::Int32 => WireKind::Int32,
        Kind::Int64 => WireKind::Int64,
        Kind::Uint32 => WireKind::Uint32,
        Kind::Uint64 => WireKind::Uint64,
        Kind::Sint32 => WireKind::Sint32,
        Kind::Sint64 => WireKind::Sint64,
        Kind::Fixed32 => WireKind::Fixed32,
        Kind::Fixed64 => WireKind::Fixed64,
        Kind::Sfixed32 => WireKind::Sfixed32,
        Kind::Sfixed64 => WireKind::Sfixed64,
        Kind::Float => WireKind::Float,
        Kind::Double => WireKind::Double,
        Kind::String => WireKind::String,
        Kind::Bytes => WireKind::Bytes,
        Kind::Enum(e) => WireKind::Enum(
            e.values()
                .map(|v| (v.number(), v.name().to_owned()))
                .collect(),
        ),
        Kind::Message(m) => WireKind::Message(Arc::from(m.full_name())),
    };
    Field {
        name: Arc::from(desc.name()),
        number: desc.number(),
        kind,
        repeated: desc.is_list(),
        required: desc.cardinality() == Cardinality::Required,
        style,
        desc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read() {
        let schema = Schema::get();
        let vma = schema.image_message("vma_entry").unwrap();
        let start = vma.fields.iter().find(|f| &*f.name == "start").unwrap();
        assert!(start.style.hex && start.required);
        let prot = vma.fields.iter().find(|f| &*f.name == "prot").unwrap();
        assert!(matches!(prot.style.flags, Some(Flags::Table(_))));
        let unix = schema.image_message("unix_sk_entry").unwrap();
        assert!(unix.fields.iter().any(|f| f.style.unix_name));
        let ghost = schema.image_message("ghost_file_entry").unwrap();
        let rdev = ghost.fields.iter().find(|f| &*f.name == "rdev").unwrap();
        assert!(rdev.style.dev && rdev.style.odev);
        let tc = schema.image_message("task_core_entry").unwrap();
        assert!(tc.fields[0].style.dict.is_some());
        let core = schema.image_message("core_entry").unwrap();
        let numbers: Vec<u32> = core.fields.iter().map(|f| f.number).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(core.index_of(numbers[3]), Some(3));
        assert_eq!(core.index_of(1000), None);
    }
}
