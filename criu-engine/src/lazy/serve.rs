//! `criu page-server --lazy-pages`: serves the pages of an images directory
//! to a lazy-pages daemon (CRIU's `page_server_init_send` and
//! `page_server_get_pages` in `criu/page-xfer.c`).
//!
//! Each `PS_IOV_GET(nr_pages, vaddr, dst_id)` is answered by
//! `PS_IOV_ADD_F(PE_PRESENT)` with the same `vaddr` and `dst_id` and as many
//! of the asked pages as lie contiguously in one pages file (at least one),
//! followed by their bytes; a request for pages the images do not hold is
//! answered with `nr_pages = 0`. `PS_IOV_CLOSE` ends the session with a
//! 4-byte status.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use criu_proto::img::pages::{PAGE_SIZE, PE_PRESENT};
use criu_proto::img::ImagesDir;

use super::source::ImagePages;
use super::LazyError;
use crate::mem::page_server::{
    task_of, PsIov, IOV_LEN, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE, PS_IOV_GET,
};

/// What one session served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LazyServeStats {
    /// `PS_IOV_GET` requests answered.
    pub requests: u64,
    /// Pages sent.
    pub pages: u64,
}

/// Serves one lazy-pages daemon on `sk` from `dir` until it closes the
/// session.
pub fn serve_lazy(mut sk: TcpStream, dir: &ImagesDir) -> Result<LazyServeStats, LazyError> {
    let peer = sk
        .peer_addr()
        .map_or_else(|_| "lazy-pages daemon".to_owned(), |a| a.to_string());
    let io = |source| LazyError::Remote {
        peer: peer.clone(),
        source,
    };
    let _ = sk.set_nodelay(true);
    let mut tasks: HashMap<u32, ImagePages> = HashMap::new();
    let mut stats = LazyServeStats::default();
    loop {
        let mut head = [0u8; IOV_LEN];
        match sk.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(stats),
            Err(e) => return Err(io(e)),
        }
        let iov = PsIov::decode(&head);
        match iov.command() {
            PS_IOV_GET => {
                let pid = task_of(iov.dst_id).ok_or(LazyError::Protocol {
                    peer: peer.clone(),
                    what: format!("PS_IOV_GET for {:#x}, not a task", iov.dst_id),
                })?;
                if let std::collections::hash_map::Entry::Vacant(e) = tasks.entry(pid) {
                    e.insert(ImagePages::load(dir, pid)?);
                }
                let max = iov.nr_pages.saturating_mul(PAGE_SIZE);
                let data = tasks[&pid].bytes_at(iov.vaddr, max).unwrap_or(&[]);
                let answer = PsIov {
                    cmd: PE_PRESENT << 16 | PS_IOV_ADD_F,
                    nr_pages: data.len() as u64 / PAGE_SIZE,
                    ..iov
                };
                sk.write_all(&answer.encode()).map_err(io)?;
                sk.write_all(data).map_err(io)?;
                stats.requests += 1;
                stats.pages += answer.nr_pages;
            }
            PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                sk.write_all(&0i32.to_le_bytes()).map_err(io)?;
                return Ok(stats);
            }
            other => {
                return Err(LazyError::Protocol {
                    peer,
                    what: format!("unexpected command {other:#x} for a lazy page server"),
                })
            }
        }
    }
}
