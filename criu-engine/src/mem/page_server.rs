//! CRIU's page-server protocol over TCP (CRIU's `criu/page-xfer.c`:
//! `struct page_server_iov`, `PS_IOV_*`, `page_server_serve`).
//!
//! Every message starts with a 32-byte header in host byte order (x86-64
//! little endian): `u32 cmd`, 4 bytes of padding, `u64 nr_pages`,
//! `u64 vaddr`, `u64 dst_id`. The low 16 bits of `cmd` are the command, the
//! high 16 bits the pagemap flags of `PS_IOV_ADD_F`. `dst_id` names the
//! pagemap: `id << 8 | type`, type 1 for a task (`pagemap-<id>.img`), 2 for
//! shared memory.
//!
//! A sender opens a pagemap (`PS_IOV_OPEN2`, answered by one byte: whether
//! the server's parent images hold that pagemap), then sends one
//! `PS_IOV_ADD_F` per run, followed by the run's pages when the flags have
//! `PE_PRESENT`, and ends with `PS_IOV_CLOSE`, answered by a 4-byte status.
//! `PS_IOV_PARENT` asks the parent question alone (4-byte answer). The
//! server writes each run as one pagemap entry and numbers its pages files
//! from `0x10001`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use criu_proto::images::{PagemapEntry, PagemapHead};
use criu_proto::img::{ImageError, ImageKind, ImageWriter, ImagesDir, Pagemap};
use nix::fcntl::{openat, splice, OFlag, SpliceFFlags};
use nix::sys::stat::Mode;

use super::pagemap::{PE_PARENT, PE_PRESENT};
use crate::proc::pagemap::PAGE_SIZE;

/// `PS_IOV_ADD`: a present run (legacy).
pub const PS_IOV_ADD: u32 = 1;
/// `PS_IOV_HOLE`: a run in the parent (legacy).
pub const PS_IOV_HOLE: u32 = 2;
/// `PS_IOV_OPEN`: open a pagemap, no answer (legacy).
pub const PS_IOV_OPEN: u32 = 3;
/// `PS_IOV_OPEN2`: open a pagemap, answered with the parent byte.
pub const PS_IOV_OPEN2: u32 = 4;
/// `PS_IOV_PARENT`: does the parent hold this pagemap.
pub const PS_IOV_PARENT: u32 = 5;
/// `PS_IOV_ADD_F`: a run with flags in the high bits of `cmd`.
pub const PS_IOV_ADD_F: u32 = 6;
/// `PS_IOV_GET`: pages asked for by a lazy-pages daemon.
pub const PS_IOV_GET: u32 = 7;
/// `PS_IOV_CLOSE`: end of the session.
pub const PS_IOV_CLOSE: u32 = 0x1023;
/// `PS_IOV_FORCE_CLOSE`: end of the session over an inherited socket.
pub const PS_IOV_FORCE_CLOSE: u32 = 0x1024;
/// Bytes of one header.
pub const IOV_LEN: usize = 32;
/// First pages id of a standalone page server.
pub const SERVER_PAGES_ID_BASE: u32 = 0x10001;
/// `dst_id` type of a task pagemap.
const PS_TYPE_PID: u64 = 1;
/// Bytes copied per read on the server.
const COPY_CHUNK: usize = 1 << 20;

/// The page-server protocol failed.
#[derive(Debug, thiserror::Error)]
pub enum PageServerError {
    /// Connecting, listening or talking failed.
    #[error("page server connection to {peer}")]
    Io {
        /// The other side.
        peer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address cannot be used.
    #[error("bad page server address {address}:{port}")]
    Address {
        /// The address.
        address: String,
        /// The port.
        port: u16,
    },
    /// The other side broke the protocol.
    #[error("page server protocol: {what}")]
    Protocol {
        /// What was wrong.
        what: String,
    },
    /// The server answered the close with a failure status.
    #[error("the page server reports failure status {status}")]
    Status {
        /// Its status.
        status: i32,
    },
    /// An image could not be written.
    #[error("page server cannot write its images")]
    Image(#[source] ImageError),
    /// A pages file could not be created.
    #[error("page server cannot create {name}")]
    Create {
        /// The file.
        name: String,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
}

/// One protocol header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsIov {
    /// Command and flags.
    pub cmd: u32,
    /// Pages of the run.
    pub nr_pages: u64,
    /// First address of the run.
    pub vaddr: u64,
    /// The pagemap (`id << 8 | type`).
    pub dst_id: u64,
}

impl PsIov {
    /// The header bytes.
    pub fn encode(&self) -> [u8; IOV_LEN] {
        let mut b = [0u8; IOV_LEN];
        b[0..4].copy_from_slice(&self.cmd.to_le_bytes());
        b[8..16].copy_from_slice(&self.nr_pages.to_le_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_le_bytes());
        b[24..32].copy_from_slice(&self.dst_id.to_le_bytes());
        b
    }

    /// Reads a header from its bytes.
    pub fn decode(b: &[u8; IOV_LEN]) -> PsIov {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        PsIov {
            cmd: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            nr_pages: u64_at(8),
            vaddr: u64_at(16),
            dst_id: u64_at(24),
        }
    }

    /// The command (low 16 bits).
    pub fn command(&self) -> u32 {
        self.cmd & 0xffff
    }

    /// The flags (high 16 bits).
    pub fn flags(&self) -> u32 {
        self.cmd >> 16
    }
}

/// The `dst_id` of `pagemap-<pid>.img`.
pub fn task_dst_id(pid: u32) -> u64 {
    u64::from(pid) << 8 | PS_TYPE_PID
}

/// The task pid a `dst_id` names, accepting the type numbers older CRIU
/// versions used; `None` for shared memory or an unknown type.
pub fn task_of(dst_id: u64) -> Option<u32> {
    match dst_id & 0xff {
        1 | 10 | 11 | 16 | 17 => u32::try_from(dst_id >> 8).ok(),
        _ => None,
    }
}

fn io_err(peer: &str) -> impl Fn(std::io::Error) -> PageServerError + '_ {
    move |source| PageServerError::Io {
        peer: peer.to_owned(),
        source,
    }
}

/// The dumping side of a page-server connection.
pub struct Sender {
    sk: TcpStream,
    peer: String,
    dst_id: u64,
}

impl Sender {
    /// Connects to the page server at `address:port`.
    pub fn connect(address: &str, port: u16) -> Result<Sender, PageServerError> {
        let peer = format!("{address}:{port}");
        let sk = TcpStream::connect((address, port)).map_err(io_err(&peer))?;
        Ok(Sender {
            sk,
            peer,
            dst_id: 0,
        })
    }

    /// Uses an already connected socket.
    pub fn from_stream(sk: TcpStream) -> Sender {
        let peer = sk
            .peer_addr()
            .map_or_else(|_| "inherited socket".to_owned(), |a| a.to_string());
        Sender {
            sk,
            peer,
            dst_id: 0,
        }
    }

    fn send(&mut self, iov: PsIov) -> Result<(), PageServerError> {
        self.sk.write_all(&iov.encode()).map_err(io_err(&self.peer))
    }

    /// Opens `pagemap-<pid>.img` on the server; returns whether the
    /// server's parent images hold that pagemap.
    pub fn open(&mut self, pid: u32) -> Result<bool, PageServerError> {
        self.dst_id = task_dst_id(pid);
        self.send(PsIov {
            cmd: PS_IOV_OPEN2,
            dst_id: self.dst_id,
            ..PsIov::default()
        })?;
        let mut b = [0u8; 1];
        self.sk.read_exact(&mut b).map_err(io_err(&self.peer))?;
        Ok(b[0] != 0)
    }

    /// Announces a run; when `flags` has `PE_PRESENT`, exactly
    /// `nr_pages` pages must follow ([`Sender::write_pages`] or a splice
    /// into [`Sender::socket`]).
    pub fn add(&mut self, flags: u32, vaddr: u64, nr_pages: u64) -> Result<(), PageServerError> {
        self.send(PsIov {
            cmd: flags << 16 | PS_IOV_ADD_F,
            nr_pages,
            vaddr,
            dst_id: self.dst_id,
        })
    }

    /// Sends page contents.
    pub fn write_pages(&mut self, data: &[u8]) -> Result<(), PageServerError> {
        self.sk.write_all(data).map_err(io_err(&self.peer))
    }

    /// The socket, for splicing pages into it.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sk.as_fd()
    }

    /// Who the server is (for errors).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Ends the session and waits for the server's status.
    pub fn close(mut self) -> Result<(), PageServerError> {
        self.send(PsIov {
            cmd: PS_IOV_CLOSE,
            ..PsIov::default()
        })?;
        let mut b = [0u8; 4];
        self.sk.read_exact(&mut b).map_err(io_err(&self.peer))?;
        match i32::from_le_bytes(b) {
            0 => Ok(()),
            status => Err(PageServerError::Status { status }),
        }
    }
}

/// Binds the page server's listener (`address` defaults to all IPv4
/// addresses; port 0 picks a free one); returns it with the real port.
pub fn listen(address: Option<&str>, port: u16) -> Result<(TcpListener, u16), PageServerError> {
    let address = address.filter(|a| !a.is_empty()).unwrap_or("0.0.0.0");
    let bad = || PageServerError::Address {
        address: address.to_owned(),
        port,
    };
    let addr: SocketAddr = format!("{address}:{port}")
        .parse()
        .or_else(|_| format!("[{address}]:{port}").parse())
        .map_err(|_| bad())?;
    let l = TcpListener::bind(addr).map_err(io_err(&addr.to_string()))?;
    let real = l.local_addr().map_err(io_err(&addr.to_string()))?.port();
    Ok((l, real))
}

/// What a served session wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Pagemaps opened.
    pub pagemaps: u64,
    /// Pages received.
    pub pages: u64,
}

struct Open {
    pagemap: ImageWriter,
    pages: File,
    dst_id: u64,
}

/// Serves one sender on `sk` until it closes the session, writing
/// pagemaps and pages files into `dir`; `parent` answers the parent
/// questions.
pub fn serve(
    mut sk: TcpStream,
    dir: &ImagesDir,
    parent: Option<&ImagesDir>,
) -> Result<ServeStats, PageServerError> {
    let peer = sk
        .peer_addr()
        .map_or_else(|_| "page client".to_owned(), |a| a.to_string());
    let ioe = io_err(&peer);
    let proto = |what: String| PageServerError::Protocol { what };
    let _ = sk.set_nodelay(true);
    let mut next_pages_id = SERVER_PAGES_ID_BASE;
    let mut open: Option<Open> = None;
    let mut stats = ServeStats::default();
    let mut buf = vec![0u8; COPY_CHUNK];
    let relay = Relay::new();
    let has_parent = |dst_id: u64| -> bool {
        match (parent, task_of(dst_id)) {
            (Some(p), Some(pid)) => p.pagemap(pid).is_ok_and(|m| m.is_some()),
            _ => false,
        }
    };
    loop {
        let mut head = [0u8; IOV_LEN];
        match sk.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(proto("the sender left without closing the session".into()))
            }
            Err(e) => return Err(ioe(e)),
        }
        let iov = PsIov::decode(&head);
        match iov.command() {
            PS_IOV_OPEN | PS_IOV_OPEN2 => {
                if let Some(o) = open.take() {
                    o.pagemap.finish().map_err(PageServerError::Image)?;
                }
                let pid = task_of(iov.dst_id).ok_or_else(|| {
                    proto(format!(
                        "pagemap type {:#x} is not supported",
                        iov.dst_id & 0xff
                    ))
                })?;
                open = Some(open_pagemap(dir, pid, next_pages_id, iov.dst_id)?);
                next_pages_id += 1;
                stats.pagemaps += 1;
                if iov.command() == PS_IOV_OPEN2 {
                    sk.write_all(&[u8::from(has_parent(iov.dst_id))])
                        .map_err(&ioe)?;
                }
            }
            PS_IOV_PARENT => {
                let answer = i32::from(has_parent(iov.dst_id));
                sk.write_all(&answer.to_le_bytes()).map_err(&ioe)?;
            }
            PS_IOV_ADD | PS_IOV_ADD_F | PS_IOV_HOLE => {
                let flags = match iov.command() {
                    PS_IOV_ADD_F => iov.flags(),
                    PS_IOV_ADD => PE_PRESENT,
                    _ => PE_PARENT,
                };
                let o = match &mut open {
                    Some(o) if o.dst_id == iov.dst_id => o,
                    _ => {
                        return Err(proto(format!(
                            "run for pagemap {:#x} not opened",
                            iov.dst_id
                        )))
                    }
                };
                o.pagemap
                    .write_entry::<PagemapEntry>(&Pagemap::entry(iov.vaddr, iov.nr_pages, flags))
                    .map_err(PageServerError::Image)?;
                if flags & PE_PRESENT != 0 {
                    let mut left = iov
                        .nr_pages
                        .checked_mul(PAGE_SIZE)
                        .ok_or_else(|| proto(format!("{} pages", iov.nr_pages)))?;
                    if let Some(p) = &relay {
                        p.relay(&sk, &o.pages, left).map_err(&ioe)?;
                        left = 0;
                    }
                    while left > 0 {
                        let n = (left as usize).min(buf.len());
                        sk.read_exact(&mut buf[..n]).map_err(&ioe)?;
                        o.pages.write_all(&buf[..n]).map_err(&ioe)?;
                        left -= n as u64;
                    }
                    stats.pages += iov.nr_pages;
                }
            }
            PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                if let Some(o) = open.take() {
                    o.pagemap.finish().map_err(PageServerError::Image)?;
                }
                sk.write_all(&0i32.to_le_bytes()).map_err(&ioe)?;
                if iov.command() == PS_IOV_CLOSE {
                    // Wait for the sender to hang up first.
                    let mut b = [0u8; 1];
                    if sk.read(&mut b).map_err(&ioe)? != 0 {
                        return Err(proto("data after the end of the session".into()));
                    }
                }
                return Ok(stats);
            }
            PS_IOV_GET => {
                return Err(proto(
                    "PS_IOV_GET needs a page server started with --lazy-pages".into(),
                ))
            }
            other => return Err(proto(format!("unknown command {other:#x}"))),
        }
    }
}

/// A pipe that moves page data from the socket to the pages file with
/// `splice`, so the bytes are copied once (into the file) instead of twice
/// through a buffer (CRIU's server splices the same way).
struct Relay {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Relay {
    /// A pipe as large as allowed (`None`: use the buffer).
    fn new() -> Option<Relay> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
        let want = super::page_pipe::max_pipe_size().min(COPY_CHUNK);
        let cap = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(want as i32))
            .ok()
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(64 << 10);
        Some(Relay { r, w, cap })
    }

    /// Moves exactly `len` bytes from `sk` to the end of `file`.
    fn relay(&self, sk: &TcpStream, file: &File, mut len: u64) -> std::io::Result<()> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE;
        while len > 0 {
            let want = usize::try_from(len).unwrap_or(usize::MAX).min(self.cap);
            let n = splice(sk, None, &self.w, None, want, flags)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut out = 0;
            while out < n {
                let m = splice(&self.r, None, file, None, n - out, flags)?;
                if m == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                out += m;
            }
            len -= n as u64;
        }
        Ok(())
    }
}

fn open_pagemap(
    dir: &ImagesDir,
    pid: u32,
    pages_id: u32,
    dst_id: u64,
) -> Result<Open, PageServerError> {
    let mut pagemap = dir
        .create_image(ImageKind::Pagemap, pid.into())
        .map_err(PageServerError::Image)?;
    pagemap
        .write_entry(&PagemapHead { pages_id })
        .map_err(PageServerError::Image)?;
    let name = ImageKind::Pages.file_name(pages_id.into());
    let fd = openat(
        dir.fd(),
        name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|source| PageServerError::Create { name, source })?;
    Ok(Open {
        pagemap,
        pages: File::from(fd),
        dst_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_criu() {
        let iov = PsIov {
            cmd: (PE_PRESENT << 16) | PS_IOV_ADD_F,
            nr_pages: 3,
            vaddr: 0x7f00_0000_1000,
            dst_id: task_dst_id(42),
        };
        let b = iov.encode();
        assert_eq!(&b[0..4], &[6, 0, 4, 0]);
        assert_eq!(&b[4..8], &[0; 4], "padding after cmd");
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 3);
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().unwrap()),
            42 << 8 | 1
        );
        assert_eq!(PsIov::decode(&b), iov);
        assert_eq!(iov.command(), PS_IOV_ADD_F);
        assert_eq!(iov.flags(), PE_PRESENT);
        assert_eq!(task_of(42 << 8 | 11), Some(42), "CRIU 1.3-3.0 numbering");
        assert_eq!(task_of(42 << 8 | 2), None, "shared memory");
    }
}
