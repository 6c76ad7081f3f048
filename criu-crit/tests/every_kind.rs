//! Every decodable image kind survives `decode | encode` byte for byte,
//! plain and `--pretty`, with every field of its messages set and with the
//! extra payloads its kind carries.
//!
//! The images are synthesised by reflection: each field gets a value
//! derived from its number (repeated fields two or four values, nested
//! messages filled recursively), and the length fields that size extra
//! payloads are set to match the bytes appended. Set `CRIT_SYNTH_DIR` to
//! keep the images (for comparing with another `crit` by hand).

use std::path::Path;

use criu_crit::schema::Schema;
use criu_crit::{decode_image, encode_image, DecodeOptions};
use criu_proto::img::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use criu_proto::img::{Entries, Extra, ImageKind, Layout};
use prost::Message;
use prost_reflect::{Cardinality, DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};

fn pool() -> &'static DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(criu_proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
    })
}

fn desc(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("no schema for {name}"))
}

/// A value for one element of `field`, varied by `seed`.
fn value(kind: &Kind, number: u32, seed: u64, depth: usize, ipadd: bool) -> Value {
    let n = u64::from(number) * 7 + seed;
    match kind {
        Kind::Bool => Value::Bool(n % 2 == 1),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(if n % 3 == 0 { -(n as i32) } else { n as i32 })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(if n % 3 == 0 {
            -(n as i64)
        } else {
            (n as i64) << 33
        }),
        Kind::Uint32 | Kind::Fixed32 if ipadd => Value::U32(0x0100_007f + n as u32),
        Kind::Uint32 | Kind::Fixed32 => Value::U32((n as u32).wrapping_mul(0x0101_0101) | 1),
        Kind::Uint64 | Kind::Fixed64 => Value::U64((n << 40) | 0xabc),
        Kind::String => Value::String(format!("name-{n}/é")),
        Kind::Bytes => Value::Bytes(vec![0, b'/', b'x', n as u8, 0xff, b'=', b' '].into()),
        Kind::Enum(e) => {
            let values: Vec<_> = e.values().collect();
            Value::EnumNumber(values[(n as usize) % values.len()].number())
        }
        Kind::Message(m) => Value::Message(fill(m, seed, depth + 1)),
        Kind::Float | Kind::Double => unreachable!("CRIU images have no floating point fields"),
    }
}

/// A message of type `desc` with every field set.
fn fill(desc: &MessageDescriptor, seed: u64, depth: usize) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    let plan = Schema::get().plan(desc.full_name()).expect("plan");
    for field in desc.fields() {
        let kind = field.kind();
        let required = field.cardinality() == Cardinality::Required;
        if depth > 8 && matches!(kind, Kind::Message(_)) && !required {
            continue;
        }
        let ipadd = plan
            .fields
            .iter()
            .any(|f| f.number == field.number() && f.style.ipadd);
        let v = if field.is_list() {
            let count = if ipadd { 4 } else { 2 };
            Value::List(
                (0..count)
                    .map(|i| value(&kind, field.number(), seed + i, depth, ipadd))
                    .collect(),
            )
        } else {
            value(&kind, field.number(), seed, depth, ipadd)
        };
        msg.set_field(&field, v);
    }
    msg
}

fn set_u32(msg: &mut DynamicMessage, name: &str, v: u32) {
    msg.set_field_by_name(name, Value::U32(v));
}

fn set_u64(msg: &mut DynamicMessage, name: &str, v: u64) {
    msg.set_field_by_name(name, Value::U64(v));
}

fn push_entry(out: &mut Vec<u8>, msg: &DynamicMessage) {
    let payload = msg.encode_to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Appends entry `i` of `kind` and its extra payload.
fn push_with_extra(out: &mut Vec<u8>, kind: ImageKind, name: &str, seed: u64) {
    let mut msg = fill(&desc(name), seed, 0);
    let mut extra: Vec<u8> = Vec::new();
    match kind.desc().extra {
        Extra::None => {}
        Extra::PipeData => {
            set_u32(&mut msg, "bytes", 9);
            extra.extend_from_slice(b"pipedata!");
        }
        Extra::SkQueue => {
            set_u32(&mut msg, "length", 7);
            extra.extend_from_slice(b"sockmsg");
        }
        Extra::TcpStream => {
            set_u32(&mut msg, "inq_len", 3);
            set_u32(&mut msg, "outq_len", 70);
            extra.extend_from_slice(b"in!");
            extra.extend((0..70u8).map(|b| b.wrapping_mul(37)));
        }
        Extra::BpfmapData => {
            set_u32(&mut msg, "keys_bytes", 4);
            set_u32(&mut msg, "values_bytes", 8);
            extra.extend(1..=12u8);
        }
        Extra::IpcSem => {
            set_u32(&mut msg, "nsems", 3);
            extra.extend_from_slice(&[1, 0, 2, 0, 0xff, 0xff, 0, 0]);
        }
        Extra::IpcShm => {
            msg.set_field_by_name("in_pagemaps", Value::Bool(seed % 2 == 0));
            if seed % 2 == 1 {
                set_u64(&mut msg, "size", 5);
                extra.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
            }
        }
        Extra::IpcMsg => {
            set_u32(&mut msg, "qnum", 2);
            for len in [3u32, 8] {
                let mut m = fill(&desc("criu.images.ipc_msg"), seed, 0);
                set_u32(&mut m, "msize", len);
                let mut body = Vec::new();
                push_entry(&mut body, &m);
                extra.extend_from_slice(&body);
                extra.extend((0..len).map(|b| b as u8 + b'a'));
                extra.extend(std::iter::repeat_n(
                    0u8,
                    (len.div_ceil(8) * 8 - len) as usize,
                ));
            }
        }
    }
    push_entry(out, &msg);
    out.extend_from_slice(&extra);
}

fn header(kind: ImageKind) -> Vec<u8> {
    let mut out = Vec::new();
    match kind.layout() {
        Layout::Regular => out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes()),
        Layout::Service => out.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes()),
        Layout::Inventory | Layout::Raw => {}
    }
    out.extend_from_slice(&kind.magic().to_le_bytes());
    out
}

/// The synthetic images: one per decodable kind that `crit` reports by its
/// magic, plus both ghost file shapes.
fn images() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ImageKind::all() {
        if kind.desc().entries == Entries::Opaque
            || ImageKind::from_magic(kind.magic()) != Some(kind)
        {
            continue;
        }
        let mut bytes = header(kind);
        match kind.desc().entries {
            Entries::GhostFile => {
                let mut head = fill(&desc("criu.images.ghost_file_entry"), 1, 0);
                head.set_field_by_name("chunks", Value::Bool(false));
                let mut plain = bytes.clone();
                push_entry(&mut plain, &head);
                plain.extend_from_slice(b"ghost contents\n");
                out.push(("ghost-file-plain".to_owned(), plain));
                head.set_field_by_name("chunks", Value::Bool(true));
                push_entry(&mut bytes, &head);
                for (seed, data) in [(2u64, &b"chunk one"[..]), (3, &b"2"[..])] {
                    let mut chunk = fill(&desc("criu.images.ghost_chunk_entry"), seed, 0);
                    set_u64(&mut chunk, "len", data.len() as u64);
                    push_entry(&mut bytes, &chunk);
                    bytes.extend_from_slice(data);
                }
            }
            _ => {
                for seed in 0..3u64 {
                    let name = kind.entry_message(seed).expect("message");
                    push_with_extra(&mut bytes, kind, name, seed);
                }
            }
        }
        out.push((kind.name().to_lowercase(), bytes));
    }
    out
}

#[test]
fn every_kind_round_trips() {
    let keep = std::env::var_os("CRIT_SYNTH_DIR");
    let images = images();
    assert!(images.len() > 60, "only {} kinds", images.len());
    for (name, bytes) in &images {
        if let Some(dir) = &keep {
            std::fs::write(Path::new(dir).join(format!("{name}.img")), bytes).expect("keep image");
        }
        for pretty in [false, true] {
            let opts = DecodeOptions {
                pretty,
                nopl: false,
            };
            let json = decode_image(bytes, Path::new(name), opts)
                .unwrap_or_else(|e| panic!("{name}: decode: {e}"))
                .to_text(pretty);
            let again = encode_image(json.as_bytes(), Path::new(name))
                .unwrap_or_else(|e| panic!("{name} (pretty {pretty}): encode: {e}\n{json}"));
            assert!(
                again == *bytes,
                "{name} (pretty {pretty}) differs after the round trip"
            );
        }
    }
}

#[test]
fn nopl_hides_payloads() {
    for (name, bytes) in images() {
        let opts = DecodeOptions {
            pretty: true,
            nopl: true,
        };
        let text = decode_image(&bytes, Path::new(&name), opts)
            .expect("decode")
            .to_text(true);
        match name.as_str() {
            "pipes_data" => assert!(text.contains(r#""extra": "... <9B>""#), "{text}"),
            "tcp_stream" => assert!(text.contains(r#""extra": "... <73B>""#), "{text}"),
            "ipcns_sem" => assert!(text.contains(r#""extra": "... <6B>""#), "{text}"),
            "ghost-file-plain" | "ghost_file" => assert!(!text.contains("extra"), "{text}"),
            _ => {}
        }
        let err = encode_image(text.as_bytes(), Path::new(&name));
        if text.contains("\"... <") {
            let msg = err.expect_err("nopl output cannot be encoded").to_string();
            assert!(msg.contains("extra"), "{msg}");
        }
    }
}
