//! Decoding a file of unknown kind, as `crit decode` does
//! (CRIU's `lib/pycriu/images/images.py`).
//!
//! ```text
//! word 0 == IMG_COMMON_MAGIC or IMG_SERVICE_MAGIC -> word 1 is the type magic
//! otherwise                                       -> word 0 is the type magic
//!                                                    (inventory.img, v1 images)
//! ```
//!
//! The type magic picks the kind (the first kind of the table with that
//! magic, refined by the file name when several kinds share the magic, so
//! `pagemap-shmem-5.img` is a shmem pagemap and `stats-restore` restore
//! statistics). Every entry is decoded into its typed prost message and
//! checked for required fields; the raw payload that follows an entry is kept
//! as bytes. [`AnyImage::encode`] writes the same bytes back.

use std::any::Any;
use std::fmt::Debug;
use std::io::Read;
use std::path::Path;

use prost::{Message, Name};

use super::error::ImageError;
use super::kind::{Entries, Extra, ImageKind};
use super::magic::{IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use super::reader::{decode_entry, ImageReader};
use crate::images;

/// A decoded entry of any message type.
pub trait AnyMessage: Debug + Send + Sync + 'static {
    /// Encodes the message again (prost's canonical encoding).
    fn encode_message(&self) -> Vec<u8>;
    /// Fully qualified proto name, `criu.images.pstree_entry`.
    fn message_name(&self) -> String;
    /// For downcasting to the concrete type.
    fn as_any(&self) -> &dyn Any;
}

impl<M: Message + Name + Debug + Send + Sync + 'static> AnyMessage for M {
    fn encode_message(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn message_name(&self) -> String {
        M::full_name()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One entry of an [`AnyImage`].
#[derive(Debug)]
pub struct AnyEntry {
    /// The decoded message.
    pub message: Box<dyn AnyMessage>,
    /// The payload as stored in the file.
    pub payload: Vec<u8>,
    /// Raw bytes stored after the entry (empty for most kinds).
    pub extra: Vec<u8>,
}

impl AnyEntry {
    /// The message as `M`, if it is one.
    pub fn downcast_ref<M: 'static>(&self) -> Option<&M> {
        self.message.as_any().downcast_ref()
    }
}

/// A whole decoded image file.
#[derive(Debug)]
pub struct AnyImage {
    /// What the file is.
    pub kind: ImageKind,
    /// The magic words found at the start (one or two).
    pub header: Vec<u32>,
    /// Its entries in file order.
    pub entries: Vec<AnyEntry>,
}

impl AnyImage {
    /// Builds the file again from the typed messages and extra payloads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.header.iter().flat_map(|w| w.to_le_bytes()).collect();
        for entry in &self.entries {
            let payload = entry.message.encode_message();
            let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(&entry.extra);
        }
        out
    }
}

/// Reads the file at `path` and decodes it by its magic.
pub fn decode_any(path: impl AsRef<Path>) -> Result<AnyImage, ImageError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Open {
        path: path.to_owned(),
        source,
    })?;
    decode_any_bytes(&bytes, path)
}

/// Decodes the contents of an image file; `path` gives its name (used to
/// tell apart kinds sharing a magic) and names it in errors.
pub fn decode_any_bytes(bytes: &[u8], path: &Path) -> Result<AnyImage, ImageError> {
    let word = |i: usize| {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(first) = word(0) else {
        return Err(ImageError::UnknownMagic {
            path: path.to_owned(),
            magic: 0,
        });
    };
    let (header, magic) = if first == IMG_COMMON_MAGIC || first == IMG_SERVICE_MAGIC {
        let Some(second) = word(1) else {
            return Err(ImageError::UnknownMagic {
                path: path.to_owned(),
                magic: first,
            });
        };
        (vec![first, second], second)
    } else {
        (vec![first], first)
    };
    let by_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(ImageKind::from_file_name)
        .map(|(kind, _)| kind)
        .filter(|kind| kind.magic() == magic);
    let kind = by_name
        .or_else(|| ImageKind::from_magic(magic))
        .ok_or_else(|| ImageError::UnknownMagic {
            path: path.to_owned(),
            magic,
        })?;
    if kind.desc().entries == Entries::Opaque {
        return Err(ImageError::RawImage {
            path: path.to_owned(),
            kind,
        });
    }
    let body = &bytes[header.len() * 4..];
    let mut reader = ImageReader::after_header(body, kind, path, header.len() as u64 * 4);
    let mut entries = Vec::new();
    while let Some(entry) = next_entry(&mut reader, &entries)? {
        entries.push(entry);
    }
    Ok(AnyImage {
        kind,
        header,
        entries,
    })
}

fn next_entry<R: Read>(
    reader: &mut ImageReader<R>,
    previous: &[AnyEntry],
) -> Result<Option<AnyEntry>, ImageError> {
    let kind = reader.kind();
    let index = reader.entries_read();
    let offset = reader.offset();
    let Some(payload) = reader.read_raw_entry()? else {
        return Ok(None);
    };
    let name = kind
        .entry_message(index)
        .expect("opaque kinds are rejected before reading entries");
    let message = decode_named(name, &payload, reader.path(), index, offset)?;
    let extra = match kind.desc().entries {
        Entries::GhostFile => ghost_extra(reader, message.as_ref(), previous)?,
        _ => extra_after(reader, kind.desc().extra, message.as_ref())?,
    };
    Ok(Some(AnyEntry {
        message,
        payload,
        extra,
    }))
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to).saturating_mul(to)
}

/// Reads the payload that `extra` says follows `message`.
fn extra_after<R: Read>(
    reader: &mut ImageReader<R>,
    extra: Extra,
    message: &dyn AnyMessage,
) -> Result<Vec<u8>, ImageError> {
    let any = message.as_any();
    let len = match extra {
        Extra::None => 0,
        Extra::PipeData => any
            .downcast_ref::<images::PipeDataEntry>()
            .map_or(0, |e| e.bytes.into()),
        Extra::SkQueue => any
            .downcast_ref::<images::SkPacketEntry>()
            .map_or(0, |e| e.length.into()),
        Extra::TcpStream => any
            .downcast_ref::<images::TcpStreamEntry>()
            .map_or(0, |e| u64::from(e.inq_len) + u64::from(e.outq_len)),
        Extra::BpfmapData => any
            .downcast_ref::<images::BpfmapDataEntry>()
            .map_or(0, |e| u64::from(e.keys_bytes) + u64::from(e.values_bytes)),
        Extra::IpcSem => any
            .downcast_ref::<images::IpcSemEntry>()
            .map_or(0, |e| round_up(2 * u64::from(e.nsems), 8)),
        Extra::IpcShm => any
            .downcast_ref::<images::IpcShmEntry>()
            .filter(|e| e.in_pagemaps != Some(true))
            .map_or(0, |e| round_up(e.size, 4)),
        Extra::IpcMsg => {
            let qnum = any
                .downcast_ref::<images::IpcMsgEntry>()
                .map_or(0, |e| e.qnum);
            return ipc_messages(reader, qnum);
        }
    };
    reader.read_extra(len)
}

/// `qnum` times: `u32` size, `ipc_msg`, `msize` bytes of text padded to 8.
fn ipc_messages<R: Read>(reader: &mut ImageReader<R>, qnum: u32) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    for _ in 0..qnum {
        let offset = reader.offset();
        let size_word = reader.read_extra(4)?;
        let size = u32::from_le_bytes([size_word[0], size_word[1], size_word[2], size_word[3]]);
        let body = reader.read_extra(size.into())?;
        let msg: images::IpcMsg = decode_entry(
            &body,
            &images::IpcMsg::full_name(),
            reader.path(),
            reader.entries_read().saturating_sub(1),
            offset,
        )?;
        let text = reader.read_extra(round_up(msg.msize.into(), 8))?;
        out.extend_from_slice(&size_word);
        out.extend_from_slice(&body);
        out.extend_from_slice(&text);
    }
    Ok(out)
}

/// Ghost files: without chunks the whole rest of the file belongs to the
/// first entry; with chunks every chunk entry carries `len` bytes.
fn ghost_extra<R: Read>(
    reader: &mut ImageReader<R>,
    message: &dyn AnyMessage,
    previous: &[AnyEntry],
) -> Result<Vec<u8>, ImageError> {
    if let Some(head) = message.as_any().downcast_ref::<images::GhostFileEntry>() {
        if head.chunks == Some(true) {
            return Ok(Vec::new());
        }
        return reader.read_rest();
    }
    match message.as_any().downcast_ref::<images::GhostChunkEntry>() {
        Some(chunk) if !previous.is_empty() => reader.read_extra(chunk.len),
        _ => Ok(Vec::new()),
    }
}

impl<'a> ImageReader<&'a [u8]> {
    /// A reader over entries that start right after an already checked
    /// header of `header_len` bytes.
    fn after_header(body: &'a [u8], kind: ImageKind, path: &Path, header_len: u64) -> Self {
        ImageReader::resume(body, kind, path.to_owned(), header_len)
    }
}

macro_rules! decode_named_impl {
    ($($ty:ident),* $(,)?) => {
        /// Decodes `payload` as the image message called `name`.
        fn decode_named(
            name: &str,
            payload: &[u8],
            path: &Path,
            entry: u64,
            offset: u64,
        ) -> Result<Box<dyn AnyMessage>, ImageError> {
            let short = name.strip_prefix("criu.images.").unwrap_or(name);
            $(
                if short == <images::$ty as Name>::NAME {
                    return decode_entry::<images::$ty>(payload, name, path, entry, offset)
                        .map(|m| Box::new(m) as Box<dyn AnyMessage>);
                }
            )*
            Err(ImageError::UnsupportedMessage {
                path: path.to_owned(),
                entry,
                message: name.to_owned(),
            })
        }
    };
}

decode_named_impl!(
    ApparmorEntry,
    AutofsEntry,
    BinfmtMiscEntry,
    BpfmapDataEntry,
    BpfmapFileEntry,
    CgroupEntry,
    CoreEntry,
    CpuinfoEntry,
    CredsEntry,
    EventfdFileEntry,
    EventpollFileEntry,
    EventpollTfdEntry,
    ExtFileEntry,
    FanotifyFileEntry,
    FanotifyMarkEntry,
    FdinfoEntry,
    FifoEntry,
    FileEntry,
    FileLockEntry,
    FsEntry,
    GhostChunkEntry,
    GhostFileEntry,
    InetSkEntry,
    InotifyFileEntry,
    InotifyWdEntry,
    InventoryEntry,
    IpcMsgEntry,
    IpcSemEntry,
    IpcShmEntry,
    IpcVarEntry,
    IrmapCacheEntry,
    ItimerEntry,
    MemfdInodeEntry,
    MmEntry,
    MntEntry,
    NetDeviceEntry,
    NetlinkSkEntry,
    NetnsEntry,
    NsFileEntry,
    PacketSockEntry,
    PagemapEntry,
    PagemapHead,
    PidfdEntry,
    PidnsEntry,
    PipeDataEntry,
    PipeEntry,
    PosixTimerEntry,
    PstreeEntry,
    RegFileEntry,
    RemapFilePathEntry,
    RlimitEntry,
    SaEntry,
    SeccompEntry,
    SiginfoEntry,
    SignalfdEntry,
    SkPacketEntry,
    StatsEntry,
    TaskKobjIdsEntry,
    TcpStreamEntry,
    TimensEntry,
    TimerfdEntry,
    TtyDataEntry,
    TtyFileEntry,
    TtyInfoEntry,
    TunfileEntry,
    UnixSkEntry,
    UsernsEntry,
    UtsnsEntry,
    VmaEntry,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_message_has_a_decoder() {
        for kind in ImageKind::all() {
            for index in [0, 1] {
                let Some(name) = kind.entry_message(index) else {
                    continue;
                };
                let result = decode_named(name, &[], Path::new("x"), 0, 0);
                assert!(
                    !matches!(result, Err(ImageError::UnsupportedMessage { .. })),
                    "{kind:?}: {name}"
                );
            }
        }
    }
}
