//! Whole image files to and from `crit` JSON (CRIU's
//! `lib/pycriu/images/images.py`).
//!
//! ```text
//! {"magic": "PSTREE", "entries": [ {..entry..}, ... ]}
//! ```
//!
//! The type is found from the magic words, never from the file name: a
//! first word of `IMG_COMMON_MAGIC` or `IMG_SERVICE_MAGIC` is followed by
//! the type magic, otherwise the first word is the type magic
//! (`inventory.img`). `magic` is CRIU's name of that value. Entries that
//! carry raw bytes after them get an `extra` member:
//!
//! | image | `extra` |
//! | --- | --- |
//! | pipes-data, fifo-data, sk-queues, bpfmap-data | base64 of the bytes |
//! | tcp-stream | `{"inq": base64, "outq": base64}` |
//! | ipcns-sem | list of the `u16` semaphore values |
//! | ipcns-msg | `[ipc_msg, base64 text, ipc_msg, base64 text, ...]` |
//! | ipcns-shm | base64 of the segment (absent when `in_pagemaps`) |
//! | ghost-file | base64 of the contents (whole file, or per chunk entry) |
//!
//! Pagemaps list their `pagemap_head` as the first entry. With `nopl` the
//! payloads are replaced by `"... <size>"` (ghost file contents are left
//! out).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criu_proto::img::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use criu_proto::img::{Entries, Extra, ImageKind, Layout};
use serde_json::Value as J;

use crate::base64;
use crate::from_json::{json_to_message, FromJsonError};
use crate::json::{object, Json};
use crate::schema::{MessagePlan, Schema, IMAGES_PACKAGE};
use crate::to_json::{message_to_json, uint_member, ToJsonError};

/// Why an image could not be decoded or encoded. Entry numbers count from
/// 0; offsets are byte offsets in the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file is too short to hold its magic.
    #[error("{path}: {len} bytes is too short for an image magic")]
    Short {
        /// File.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The type magic is not one CRIU uses.
    #[error(
        "{path}: unknown magic {magic:#x}; maybe this is an image with raw data (pages-*.img)?"
    )]
    UnknownMagic {
        /// File.
        path: PathBuf,
        /// The type magic found.
        magic: u32,
    },
    /// The kind holds no entries.
    #[error("{path}: {kind} images are raw data without entries")]
    Raw {
        /// File.
        path: PathBuf,
        /// The kind.
        kind: ImageKind,
    },
    /// The file ends inside an entry's size word.
    #[error("{path}: entry {entry} at offset {offset}: size word cut short ({got} of 4 bytes)")]
    TruncatedSize {
        /// File.
        path: PathBuf,
        /// Entry number.
        entry: usize,
        /// Offset of the size word.
        offset: usize,
        /// Bytes present.
        got: usize,
    },
    /// The file ends inside an entry.
    #[error("{path}: entry {entry} at offset {offset}: {what} needs {needed} bytes but only {got} remain")]
    Truncated {
        /// File.
        path: PathBuf,
        /// Entry number.
        entry: usize,
        /// Offset where the missing data starts.
        offset: usize,
        /// What was being read (`payload`, `extra payload`).
        what: &'static str,
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        got: usize,
    },
    /// An entry is not a valid encoding of its message.
    #[error("{path}: entry {entry} at offset {offset}: not a valid {message}")]
    Decode {
        /// File.
        path: PathBuf,
        /// Entry number.
        entry: usize,
        /// Offset of the size word.
        offset: usize,
        /// Message expected.
        message: String,
        /// Cause.
        #[source]
        source: ToJsonError,
    },
    /// The schema lacks a message the kind table names.
    #[error("{path}: no schema for message {message}")]
    NoSchema {
        /// File.
        path: PathBuf,
        /// Message name.
        message: String,
    },
    /// The input of `encode` is not JSON.
    #[error("{path}: not valid JSON (encode expects the JSON that decode prints)")]
    Json {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON lacks `magic` or `entries`, or they have the wrong type.
    #[error("{path}: {what}")]
    Layout {
        /// File.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// `magic` names no decodable image kind.
    #[error("{path}: unknown magic name {name:?}")]
    UnknownMagicName {
        /// File.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// An entry cannot be converted to its message.
    #[error("{path}: entry {entry} ({message})")]
    Entry {
        /// File.
        path: PathBuf,
        /// Entry number.
        entry: usize,
        /// Message of the entry.
        message: String,
        /// Cause.
        #[source]
        source: FromJsonError,
    },
    /// An `extra` payload does not fit its entry.
    #[error("{path}: entries[{entry}].extra: {what}")]
    Extra {
        /// File.
        path: PathBuf,
        /// Entry number.
        entry: usize,
        /// What is wrong.
        what: String,
    },
}

/// Options of [`decode_image`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// Human-oriented conversions (`crit --pretty`, `crit show`).
    pub pretty: bool,
    /// Replace payloads by their size (`crit show --nopl`).
    pub nopl: bool,
}

/// Finds the kind from the magic words; returns it and the header length.
pub fn detect(bytes: &[u8], path: &Path) -> Result<(ImageKind, usize), ImageError> {
    let word = |i: usize| {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let short = || ImageError::Short {
        path: path.to_owned(),
        len: bytes.len(),
    };
    let first = word(0).ok_or_else(short)?;
    let (magic, header) = if first == IMG_COMMON_MAGIC || first == IMG_SERVICE_MAGIC {
        (word(1).ok_or_else(short)?, 8)
    } else {
        (first, 4)
    };
    let kind = ImageKind::from_magic(magic).ok_or(ImageError::UnknownMagic {
        path: path.to_owned(),
        magic,
    })?;
    if kind.desc().entries == Entries::Opaque {
        return Err(ImageError::Raw {
            path: path.to_owned(),
            kind,
        });
    }
    Ok((kind, header))
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
    entry: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], ImageError> {
        let left = self.data.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= left => {
                let out = &self.data[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(ImageError::Truncated {
                path: self.path.to_owned(),
                entry: self.entry,
                offset: self.pos,
                what,
                needed: len,
                got: left,
            }),
        }
    }

    /// Reads a size-prefixed entry of message `plan` and renders it; also
    /// returns the plain rendering when `plain` is set (for the fields that
    /// size extra payloads). `None` at end of file.
    fn entry(
        &mut self,
        plan: &MessagePlan,
        pretty: bool,
        plain: bool,
    ) -> Result<Option<(Json, Json)>, ImageError> {
        if self.at_end() {
            return Ok(None);
        }
        let start = self.pos;
        let left = self.data.len() - self.pos;
        if left < 4 {
            return Err(ImageError::TruncatedSize {
                path: self.path.to_owned(),
                entry: self.entry,
                offset: start,
                got: left,
            });
        }
        let size = self.take(4, "size word")?;
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        let payload = self.take(size.into(), "payload")?;
        let render = |pretty| {
            message_to_json(plan, payload, pretty, false).map_err(|source| ImageError::Decode {
                path: self.path.to_owned(),
                entry: self.entry,
                offset: start,
                message: plan.short.to_owned(),
                source,
            })
        };
        let json = render(pretty)?;
        let plain = match (plain, pretty) {
            (false, _) => Json::Object(Vec::new()),
            (true, false) => json.clone(),
            (true, true) => render(false)?,
        };
        Ok(Some((json, plain)))
    }
}

fn plan_of(full_name: &str, path: &Path) -> Result<Arc<MessagePlan>, ImageError> {
    Schema::get()
        .plan(full_name)
        .ok_or_else(|| ImageError::NoSchema {
            path: path.to_owned(),
            message: full_name.to_owned(),
        })
}

fn short_plan(short: &str, path: &Path) -> Result<Arc<MessagePlan>, ImageError> {
    plan_of(&format!("{IMAGES_PACKAGE}.{short}"), path)
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to).saturating_mul(to)
}

/// `crit`'s size label for an omitted payload: `"... <9B>"`, `"... <1.5KB>"`.
pub fn payload_label(size: u64) -> String {
    let mut num = size as f64;
    for unit in ["", "K", "M", "G", "T", "P", "E", "Z"] {
        if num < 1024.0 {
            return if num.fract() == 0.0 {
                format!("... <{num:.0}{unit}B>")
            } else {
                format!("... <{num:.1}{unit}B>")
            };
        }
        num /= 1024.0;
    }
    format!("... <{num:.1}YB>")
}

/// Decodes the bytes of an image file into `crit` JSON; `path` names it in
/// errors.
pub fn decode_image(bytes: &[u8], path: &Path, opts: DecodeOptions) -> Result<Json, ImageError> {
    let (kind, header) = detect(bytes, path)?;
    let mut cur = Cursor {
        data: bytes,
        pos: header,
        path,
        entry: 0,
    };
    let entries = match kind.desc().entries {
        Entries::GhostFile => ghost_entries(&mut cur, opts)?,
        _ => plain_entries(&mut cur, kind, opts)?,
    };
    Ok(object([
        ("magic", Json::Str(kind.name().to_owned())),
        ("entries", Json::Array(entries)),
    ]))
}

fn plain_entries(
    cur: &mut Cursor<'_>,
    kind: ImageKind,
    opts: DecodeOptions,
) -> Result<Vec<Json>, ImageError> {
    let mut entries = Vec::new();
    let mut plans: Vec<(&str, Arc<MessagePlan>)> = Vec::new();
    let extra = kind.desc().extra;
    loop {
        let name = kind
            .entry_message(cur.entry as u64)
            .expect("opaque kinds were rejected");
        let plan = match plans.iter().find(|(n, _)| *n == name) {
            Some((_, p)) => p.clone(),
            None => {
                let p = plan_of(name, cur.path)?;
                plans.push((name, p.clone()));
                p
            }
        };
        let Some((mut json, plain)) = cur.entry(&plan, opts.pretty, extra != Extra::None)? else {
            break;
        };
        if let Some(extra) = read_extra(cur, extra, &plain, opts)? {
            if let Json::Object(members) = &mut json {
                members.push(("extra".into(), extra));
            }
        }
        entries.push(json);
        cur.entry += 1;
    }
    Ok(entries)
}

/// Reads the payload after `msg` and renders it; `None` when the kind has
/// none.
fn read_extra(
    cur: &mut Cursor<'_>,
    extra: Extra,
    msg: &Json,
    opts: DecodeOptions,
) -> Result<Option<Json>, ImageError> {
    let uint = uint_member;
    const WHAT: &str = "extra payload";
    let blob = |cur: &mut Cursor<'_>, len: u64| -> Result<Json, ImageError> {
        let data = cur.take(len, WHAT)?;
        Ok(Json::Str(if opts.nopl {
            payload_label(len)
        } else {
            base64::encode(data)
        }))
    };
    Ok(Some(match extra {
        Extra::None => return Ok(None),
        Extra::PipeData => blob(cur, uint(msg, "bytes"))?,
        Extra::SkQueue => blob(cur, uint(msg, "length"))?,
        Extra::BpfmapData => blob(cur, uint(msg, "keys_bytes") + uint(msg, "values_bytes"))?,
        Extra::TcpStream => {
            let (inq, outq) = (uint(msg, "inq_len"), uint(msg, "outq_len"));
            let a = cur.take(inq, WHAT)?;
            let b = cur.take(outq, WHAT)?;
            if opts.nopl {
                Json::Str(payload_label(inq + outq))
            } else {
                object([
                    ("inq", Json::Str(base64::encode(a))),
                    ("outq", Json::Str(base64::encode(b))),
                ])
            }
        }
        Extra::IpcSem => {
            let size = 2 * uint(msg, "nsems");
            let data = cur.take(size, WHAT)?;
            cur.take(round_up(size, 8) - size, WHAT)?;
            if opts.nopl {
                Json::Str(payload_label(size))
            } else {
                Json::Array(
                    data.chunks_exact(2)
                        .map(|c| Json::Int(u16::from_le_bytes([c[0], c[1]]).into()))
                        .collect(),
                )
            }
        }
        Extra::IpcShm => {
            if uint(msg, "in_pagemaps") != 0 {
                return Ok(None);
            }
            let size = uint(msg, "size");
            let data = cur.take(size, WHAT)?;
            cur.take(round_up(size, 4) - size, WHAT)?;
            Json::Str(if opts.nopl {
                payload_label(size)
            } else {
                base64::encode(data)
            })
        }
        Extra::IpcMsg => {
            let plan = short_plan("ipc_msg", cur.path)?;
            let mut items = Vec::new();
            let mut total = 0u64;
            for _ in 0..uint(msg, "qnum") {
                let before = cur.pos;
                let Some((m, _)) = cur.entry(&plan, false, false)? else {
                    return Err(ImageError::Truncated {
                        path: cur.path.to_owned(),
                        entry: cur.entry,
                        offset: cur.pos,
                        what: WHAT,
                        needed: 4,
                        got: 0,
                    });
                };
                let size = (cur.pos - before - 4) as u64;
                let msize = uint(&m, "msize");
                let text = cur.take(msize, WHAT)?;
                cur.take(round_up(msize, 8) - msize, WHAT)?;
                total += size + msize;
                items.push(m);
                items.push(Json::Str(base64::encode(text)));
            }
            if opts.nopl {
                Json::Str(payload_label(total))
            } else {
                Json::Array(items)
            }
        }
    }))
}

/// A `ghost_file_entry`, then either the contents up to the end of the file
/// or chunk entries each followed by `len` bytes.
fn ghost_entries(cur: &mut Cursor<'_>, opts: DecodeOptions) -> Result<Vec<Json>, ImageError> {
    let head_plan = short_plan("ghost_file_entry", cur.path)?;
    let Some((mut head, plain)) = cur.entry(&head_plan, opts.pretty, true)? else {
        return Ok(Vec::new());
    };
    cur.entry += 1;
    if uint_member(&plain, "chunks") == 0 {
        let rest = cur.take((cur.data.len() - cur.pos) as u64, "contents")?;
        if !opts.nopl {
            if let Json::Object(m) = &mut head {
                m.push(("extra".into(), Json::Str(base64::encode(rest))));
            }
        }
        return Ok(vec![head]);
    }
    let chunk_plan = short_plan("ghost_chunk_entry", cur.path)?;
    let mut entries = vec![head];
    while let Some((mut json, plain)) = cur.entry(&chunk_plan, opts.pretty, true)? {
        let data = cur.take(uint_member(&plain, "len"), "chunk contents")?;
        if !opts.nopl {
            if let Json::Object(m) = &mut json {
                m.push(("extra".into(), Json::Str(base64::encode(data))));
            }
        }
        entries.push(json);
        cur.entry += 1;
    }
    Ok(entries)
}

/// `crit info`: the magic name and the number of entries (a pagemap's head
/// is not counted).
pub fn info(bytes: &[u8], path: &Path) -> Result<Json, ImageError> {
    let (kind, _) = detect(bytes, path)?;
    let decoded = decode_image(
        bytes,
        path,
        DecodeOptions {
            pretty: false,
            nopl: true,
        },
    )?;
    let mut count = match decoded.get("entries") {
        Some(Json::Array(e)) => e.len(),
        _ => 0,
    };
    if kind.desc().entries == Entries::Pagemap {
        count = count.saturating_sub(1);
    }
    Ok(object([
        ("magic", Json::Str(kind.name().to_owned())),
        ("count", Json::Int(count as i128)),
    ]))
}

/// The kind `encode` writes for a magic name.
fn kind_by_name(name: &str) -> Option<ImageKind> {
    ImageKind::all().find(|k| k.name() == name && k.desc().entries != Entries::Opaque)
}

/// Encodes `crit` JSON text back into image bytes; `path` names the input
/// in errors.
pub fn encode_image(text: &[u8], path: &Path) -> Result<Vec<u8>, ImageError> {
    let json: J = serde_json::from_slice(text).map_err(|source| ImageError::Json {
        path: path.to_owned(),
        source,
    })?;
    let layout = |what: &str| ImageError::Layout {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let name = json
        .get("magic")
        .and_then(J::as_str)
        .ok_or_else(|| layout("no \"magic\" string"))?;
    let entries = json
        .get("entries")
        .and_then(J::as_array)
        .ok_or_else(|| layout("no \"entries\" array"))?;
    let kind = kind_by_name(name).ok_or_else(|| ImageError::UnknownMagicName {
        path: path.to_owned(),
        name: name.to_owned(),
    })?;
    let mut out = Vec::new();
    match kind.layout() {
        Layout::Inventory | Layout::Raw => {}
        Layout::Service => out.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes()),
        Layout::Regular => out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes()),
    }
    out.extend_from_slice(&kind.magic().to_le_bytes());
    let mut enc = Encoder {
        out,
        path,
        entry: 0,
    };
    if kind.desc().entries == Entries::GhostFile {
        enc.ghost(entries)?;
    } else {
        for (i, item) in entries.iter().enumerate() {
            enc.entry = i;
            let name = kind
                .entry_message(i as u64)
                .expect("opaque kinds are not encodable");
            let msg = enc.message(item, name)?;
            if let Some(extra) = item.get("extra").filter(|e| truthy(e)) {
                enc.extra(kind.desc().extra, &msg, extra)?;
            }
        }
    }
    Ok(enc.out)
}

/// Python truthiness of a JSON value, which decides whether `crit` writes an
/// `extra` member.
fn truthy(v: &J) -> bool {
    match v {
        J::Null => false,
        J::Bool(b) => *b,
        J::Number(n) => n.as_f64() != Some(0.0),
        J::String(s) => !s.is_empty(),
        J::Array(a) => !a.is_empty(),
        J::Object(o) => !o.is_empty(),
    }
}

struct Encoder<'a> {
    out: Vec<u8>,
    path: &'a Path,
    entry: usize,
}

impl Encoder<'_> {
    /// Encodes and writes one entry; returns it rendered plainly, for the
    /// fields that size its extra payload.
    fn message(&mut self, item: &J, full_name: &str) -> Result<Json, ImageError> {
        let plan = plan_of(full_name, self.path)?;
        let path = format!("entries[{}]", self.entry);
        let bytes = json_to_message(item, &plan, &path).map_err(|source| ImageError::Entry {
            path: self.path.to_owned(),
            entry: self.entry,
            message: plan.short.to_owned(),
            source,
        })?;
        self.write_sized(&bytes);
        message_to_json(&plan, &bytes, false, false).map_err(|source| ImageError::Decode {
            path: self.path.to_owned(),
            entry: self.entry,
            offset: self.out.len() - bytes.len() - 4,
            message: plan.short.to_owned(),
            source,
        })
    }

    fn write_sized(&mut self, payload: &[u8]) {
        let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&size.to_le_bytes());
        self.out.extend_from_slice(payload);
    }

    fn bad(&self, what: impl Into<String>) -> ImageError {
        ImageError::Extra {
            path: self.path.to_owned(),
            entry: self.entry,
            what: what.into(),
        }
    }

    fn blob(&self, v: &J) -> Result<Vec<u8>, ImageError> {
        let text = v
            .as_str()
            .ok_or_else(|| self.bad("expected a base64 string"))?;
        if text.starts_with("... <") {
            return Err(self.bad("the payload was left out (decoded with --nopl)"));
        }
        base64::decode(text).map_err(|e| self.bad(e.to_string()))
    }

    /// Writes `data`, which must be `expected` bytes long.
    fn exact(&mut self, data: &[u8], expected: u64, field: &str) -> Result<(), ImageError> {
        if data.len() as u64 != expected {
            return Err(self.bad(format!(
                "{} bytes of data but {field} says {expected}",
                data.len()
            )));
        }
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn pad(&mut self, len: u64, to: u64) {
        let fill = round_up(len, to) - len;
        self.out.extend(std::iter::repeat_n(0u8, fill as usize));
    }

    fn extra(&mut self, extra: Extra, msg: &Json, v: &J) -> Result<(), ImageError> {
        let uint = uint_member;
        match extra {
            Extra::None => {}
            Extra::PipeData => {
                let data = self.blob(v)?;
                self.exact(&data, uint(msg, "bytes"), "bytes")?;
            }
            Extra::SkQueue => {
                let data = self.blob(v)?;
                self.exact(&data, uint(msg, "length"), "length")?;
            }
            Extra::BpfmapData => {
                let data = self.blob(v)?;
                let len = uint(msg, "keys_bytes") + uint(msg, "values_bytes");
                self.exact(&data, len, "keys_bytes + values_bytes")?;
            }
            Extra::TcpStream => {
                let part = |key: &str| v.get(key).ok_or_else(|| self.bad(format!("no {key:?}")));
                let inq = self.blob(part("inq")?)?;
                let outq = self.blob(part("outq")?)?;
                self.exact(&inq, uint(msg, "inq_len"), "inq_len")?;
                self.exact(&outq, uint(msg, "outq_len"), "outq_len")?;
            }
            Extra::IpcSem => {
                let values = v.as_array().ok_or_else(|| self.bad("expected a list"))?;
                let nsems = uint(msg, "nsems");
                if values.len() as u64 != nsems {
                    return Err(self.bad(format!("{} values but nsems is {nsems}", values.len())));
                }
                for value in values {
                    let n = value
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| self.bad(format!("{value} is not a u16")))?;
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
                self.pad(2 * nsems, 8);
            }
            Extra::IpcShm => {
                let data = self.blob(v)?;
                let size = uint(msg, "size");
                self.exact(&data, size, "size")?;
                self.pad(size, 4);
            }
            Extra::IpcMsg => {
                let items = v.as_array().ok_or_else(|| self.bad("expected a list"))?;
                if items.len() % 2 != 0 {
                    return Err(self.bad("expected message, text pairs"));
                }
                for pair in items.chunks(2) {
                    let m = self.message(&pair[0], &format!("{IMAGES_PACKAGE}.ipc_msg"))?;
                    let text = self.blob(&pair[1])?;
                    let msize = uint(&m, "msize");
                    self.exact(&text, msize, "msize")?;
                    self.pad(msize, 8);
                }
            }
        }
        Ok(())
    }

    fn ghost(&mut self, entries: &[J]) -> Result<(), ImageError> {
        let Some((head, chunks)) = entries.split_first() else {
            return Ok(());
        };
        let head_msg = self.message(head, &format!("{IMAGES_PACKAGE}.ghost_file_entry"))?;
        if uint_member(&head_msg, "chunks") == 0 {
            if !chunks.is_empty() {
                return Err(ImageError::Layout {
                    path: self.path.to_owned(),
                    what: "a ghost file without chunks has a single entry".to_owned(),
                });
            }
            if let Some(extra) = head.get("extra") {
                let data = self.blob(extra)?;
                self.out.extend_from_slice(&data);
            }
            return Ok(());
        }
        for (i, chunk) in chunks.iter().enumerate() {
            self.entry = i + 1;
            let msg = self.message(chunk, &format!("{IMAGES_PACKAGE}.ghost_chunk_entry"))?;
            let extra = chunk.get("extra").ok_or_else(|| self.bad("missing"))?;
            let data = self.blob(extra)?;
            self.exact(&data, uint_member(&msg, "len"), "len")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_like_python() {
        assert_eq!(payload_label(9), "... <9B>");
        assert_eq!(payload_label(1024), "... <1KB>");
        assert_eq!(payload_label(1536), "... <1.5KB>");
        assert_eq!(payload_label(1280), "... <1.2KB>");
        assert_eq!(payload_label(3 << 20), "... <3MB>");
    }
}
