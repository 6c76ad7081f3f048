//! epoll descriptors (CRIU's `criu/eventpoll.c`): every target of an epoll
//! file with its events and data, from the `tfd:` lines of its fdinfo.
//!
//! A target is named by descriptor number in the task that holds the
//! epoll. The kernel keeps a target registered while its file lives, even
//! when that number was closed or now names another file, so each target
//! is checked with `kcmp(KCMP_EPOLL_TFD)`. As CRIU does, a target whose
//! number no longer names it is looked up among the task's other
//! descriptors (a `dup` of it) and recorded under that number; a target
//! the task no longer holds at all fails the dump.
//!
//! # References
//!
//! - [epoll_ctl(2)](https://man7.org/linux/man-pages/man2/epoll_ctl.2.html),
//!   [kcmp(2)](https://man7.org/linux/man-pages/man2/kcmp.2.html)

use criu_proto::images::{EventpollFileEntry, EventpollTfdEntry, FownEntry};

use crate::proc::ProcError;
use crate::pstree::RealPid;
use crate::sys::anon_fd::kcmp_epoll_target;

/// The targets of an epoll could not be matched with the task's files.
#[derive(Debug, thiserror::Error)]
pub enum EventpollError {
    /// The fdinfo of the epoll could not be parsed.
    #[error("cannot read the targets of epoll fd {efd} of task {pid}")]
    FdInfo {
        /// The task.
        pid: RealPid,
        /// The epoll descriptor.
        efd: i32,
        /// Why.
        #[source]
        source: ProcError,
    },
    /// A registered file is no longer open in the task.
    #[error(
        "task {pid}: epoll fd {efd} watches a file the task no longer holds \
         (registered as fd {tfd}, closed since)"
    )]
    Closed {
        /// The task.
        pid: RealPid,
        /// The epoll descriptor.
        efd: i32,
        /// The number the target was registered under.
        tfd: u32,
    },
}

fn hex<T: TryFrom<u64>>(v: &str) -> Option<T> {
    T::try_from(u64::from_str_radix(v, 16).ok()?).ok()
}

/// The targets listed by the fdinfo text of an epoll, in order.
pub(crate) fn targets(fdinfo: &str) -> Result<Vec<EventpollTfdEntry>, ProcError> {
    let mut out = Vec::new();
    for line in fdinfo.lines() {
        let Some(rest) = line.strip_prefix("tfd:") else {
            continue;
        };
        let bad = || ProcError::parse("fdinfo", format!("tfd line {line:?}"));
        let words: Vec<&str> = rest.split_whitespace().collect();
        let field = |name: &str| {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let tfd = words.first().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let events = field("events:").and_then(hex).ok_or_else(bad)?;
        let data = field("data:").and_then(hex).ok_or_else(bad)?;
        // Newer kernels add `pos:P ino:I sdev:D` (decimal, hex, hex).
        let tail = |key: &str| words.iter().find_map(|w| w.strip_prefix(key));
        let pos = tail("pos:").map(|v| v.parse::<i64>().map_err(|_| bad()));
        let inode = tail("ino:").map(|v| hex::<u64>(v).ok_or_else(bad));
        let dev = tail("sdev:").map(|v| hex::<u32>(v).ok_or_else(bad));
        out.push(EventpollTfdEntry {
            // CRIU 4.2 leaves it 0: it named the epoll when targets had
            // an image of their own.
            id: 0,
            tfd,
            events,
            data,
            dev: dev.transpose()?,
            inode: inode.transpose()?,
            pos: pos.transpose()?.map(|p| p as u64),
        });
    }
    Ok(out)
}

/// The entry of epoll `efd` (file `id`, status `flags`) of task `pid`,
/// whose descriptors are `fds`, with every target checked.
pub(crate) fn entry(
    pid: RealPid,
    efd: i32,
    id: u32,
    flags: u32,
    fdinfo: &str,
    fds: &[i32],
) -> Result<EventpollFileEntry, EventpollError> {
    let mut tfds = targets(fdinfo).map_err(|source| EventpollError::FdInfo { pid, efd, source })?;
    let mut earlier: Vec<u32> = Vec::with_capacity(tfds.len());
    for t in &mut tfds {
        // The kernel numbers the registrations of one descriptor number in
        // the order the fdinfo lists them.
        let toff = earlier.iter().filter(|&&n| n == t.tfd).count() as u32;
        earlier.push(t.tfd);
        let tfd = t.tfd as i32;
        let is = |fd: i32| kcmp_epoll_target(pid.as_nix(), fd, efd, tfd, toff) == Ok(0);
        if fds.contains(&tfd) && is(tfd) {
            continue;
        }
        match fds.iter().copied().find(|&fd| is(fd)) {
            Some(fd) => {
                tracing::info!(
                    pid = pid.0,
                    efd,
                    tfd,
                    fd,
                    "epoll target found under another fd"
                );
                t.tfd = fd as u32;
            }
            None => {
                return Err(EventpollError::Closed {
                    pid,
                    efd,
                    tfd: t.tfd,
                })
            }
        }
    }
    Ok(EventpollFileEntry {
        id,
        flags,
        fown: FownEntry::default(),
        tfd: tfds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_tfd_lines() {
        let text = "pos:\t0\nflags:\t02000002\ntfd:        3 events: 80000019 data:                3  pos:0 ino:40f sdev:10\ntfd:        7 events:       19 data:     7f0b00000007\n";
        let t = targets(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].tfd, t[0].events, t[0].data), (3, 0x8000_0019, 3));
        assert_eq!(
            (t[0].pos, t[0].inode, t[0].dev),
            (Some(0), Some(0x40f), Some(0x10))
        );
        assert_eq!(
            (t[1].tfd, t[1].events, t[1].data),
            (7, 0x19, 0x7f0b_0000_0007)
        );
        assert_eq!((t[1].pos, t[1].inode, t[1].dev), (None, None, None));
        assert!(targets("tfd: x events: 1 data: 2\n").is_err());
        assert!(targets("tfd: 3 events: 1\n").is_err());
    }
}
