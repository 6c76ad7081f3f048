//! Where the lazy daemon and the lazy page server find page contents
//! (CRIU's `open_page_read` with `PR_TASK`, or `PR_REMOTE` which asks a page
//! server with `PS_IOV_GET`: `criu/pagemap.c`, `criu/page-xfer.c`).
//!
//! The layout (which pages are lazy) always comes from the local images:
//! the task's `mm` and top pagemap. The contents come either from the
//! images, followed through the `parent` chain, or from a remote page
//! server started with `page-server --lazy-pages`.

use std::io::{Read, Write};
use std::net::TcpStream;

use criu_proto::img::pages::{PAGE_SIZE, PE_PRESENT};
use criu_proto::img::{ImageKind, ImagesDir, PageRun};

use super::pending::Pending;
use super::LazyError;
use crate::mem::page_server::{
    task_dst_id, PsIov, IOV_LEN, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_GET,
};
use crate::restore::lazy::is_lazy_vma;
use crate::restore::pages::{resolve, PageSeg};
use crate::sys::file_map::FileMap;

/// The contents of one task's saved pages, read from the images.
pub(crate) struct ImagePages {
    segs: Vec<PageSeg>,
    maps: Vec<Option<FileMap>>,
}

impl ImagePages {
    /// Resolves and maps the pages of task `pid` of `dir`.
    pub(crate) fn load(dir: &ImagesDir, pid: u32) -> Result<ImagePages, LazyError> {
        let map = read_pagemap(dir, pid)?;
        let runs: Vec<PageRun> = map.runs().collect();
        let pages = resolve(dir, pid, map.head.pages_id, &runs)
            .map_err(|source| LazyError::Images { pid, source })?;
        let maps = pages
            .files
            .iter()
            .map(|f| {
                if f.need == 0 {
                    return Ok(None);
                }
                let len = usize::try_from(f.need).unwrap_or(usize::MAX);
                FileMap::map(&f.file, len)
                    .map(Some)
                    .map_err(|source| LazyError::MapPages {
                        image: f.name.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ImagePages {
            segs: pages.segs,
            maps,
        })
    }

    /// The saved bytes from `vaddr` on, as far as they are contiguous in one
    /// file, at most `max` bytes.
    pub(crate) fn bytes_at(&self, vaddr: u64, max: u64) -> Option<&[u8]> {
        let i = self.segs.partition_point(|s| s.vaddr + s.len <= vaddr);
        let seg = self.segs.get(i).filter(|s| s.vaddr <= vaddr)?;
        let len = (seg.vaddr + seg.len - vaddr).min(max);
        let off = usize::try_from(seg.offset + (vaddr - seg.vaddr)).ok()?;
        let data = self.maps.get(seg.file)?.as_ref()?.as_slice();
        data.get(off..off + usize::try_from(len).ok()?)
    }
}

fn read_pagemap(dir: &ImagesDir, pid: u32) -> Result<criu_proto::img::Pagemap, LazyError> {
    let image = ImageKind::Pagemap.file_name(pid.into());
    dir.pagemap(pid)
        .map_err(|source| LazyError::Read {
            image: image.clone(),
            source,
        })?
        .ok_or(LazyError::Missing { image })
}

/// The lazy pages of task `pid`: every page of its pagemap that lies in a
/// lazy VMA (CRIU's `collect_iovs`).
pub(crate) fn lazy_layout(dir: &ImagesDir, pid: u32) -> Result<Pending, LazyError> {
    let image = ImageKind::Mm.file_name(pid.into());
    let mm = dir
        .mm(pid)
        .map_err(|source| LazyError::Read {
            image: image.clone(),
            source,
        })?
        .ok_or(LazyError::Missing { image })?;
    let map = read_pagemap(dir, pid)?;
    let mut pending = Pending::default();
    let lazy: Vec<_> = mm.vmas.iter().filter(|v| is_lazy_vma(v)).collect();
    for run in map.runs() {
        let (start, end) = (run.vaddr, run.vaddr + run.len_bytes());
        for v in &lazy {
            let (s, e) = (start.max(v.start), end.min(v.end));
            if s < e {
                pending.insert(s, e, s);
            }
        }
    }
    Ok(pending)
}

/// A connection to a page server that serves lazy pages.
pub(crate) struct RemotePages {
    sk: TcpStream,
    peer: String,
}

impl RemotePages {
    /// Connects to `address:port`.
    pub(crate) fn connect(address: &str, port: u16) -> Result<RemotePages, LazyError> {
        let peer = format!("{address}:{port}");
        let sk = TcpStream::connect((address, port)).map_err(|source| LazyError::Remote {
            peer: peer.clone(),
            source,
        })?;
        let _ = sk.set_nodelay(true);
        Ok(RemotePages { sk, peer })
    }

    fn io(&self) -> impl Fn(std::io::Error) -> LazyError + '_ {
        |source| LazyError::Remote {
            peer: self.peer.clone(),
            source,
        }
    }

    /// Asks for the pages of task `pid` from `vaddr` (its address in the
    /// images) into `buf` (a whole number of pages); returns the bytes the
    /// server sent (it may send fewer than asked).
    pub(crate) fn get(&mut self, pid: u32, vaddr: u64, buf: &mut [u8]) -> Result<usize, LazyError> {
        let ask = PsIov {
            cmd: PS_IOV_GET,
            nr_pages: buf.len() as u64 / PAGE_SIZE,
            vaddr,
            dst_id: task_dst_id(pid),
        };
        self.sk.write_all(&ask.encode()).map_err(self.io())?;
        let mut head = [0u8; IOV_LEN];
        self.sk.read_exact(&mut head).map_err(self.io())?;
        let got = PsIov::decode(&head);
        let len = usize::try_from(got.nr_pages * PAGE_SIZE).unwrap_or(usize::MAX);
        if got.command() != PS_IOV_ADD_F
            || got.flags() & PE_PRESENT == 0
            || got.vaddr != vaddr
            || len == 0
            || len > buf.len()
        {
            return Err(LazyError::RemoteAnswer {
                peer: self.peer.clone(),
                pid,
                vaddr,
            });
        }
        self.sk.read_exact(&mut buf[..len]).map_err(self.io())?;
        Ok(len)
    }

    /// Ends the session (`PS_IOV_CLOSE`, answered by a 4-byte status).
    pub(crate) fn close(mut self) -> Result<(), LazyError> {
        let close = PsIov {
            cmd: PS_IOV_CLOSE,
            ..PsIov::default()
        };
        self.sk.write_all(&close.encode()).map_err(self.io())?;
        let mut status = [0u8; 4];
        self.sk.read_exact(&mut status).map_err(self.io())?;
        Ok(())
    }
}
