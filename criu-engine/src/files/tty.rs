//! Terminals: pty masters (`/dev/ptmx`) and slaves (`/dev/pts/N`) as
//! `files.img` entries of type `TTY`, their state in `tty-info.img` and the
//! bytes queued in pairs in `tty-data.img` (CRIU's `dump_one_tty`,
//! `dump_tty_info`, `dump_verify_tty_sids`, `tty_verify_active_pairs` and
//! `tty_dump_queued_data` in `criu/tty.c`, `parasite_dump_tty` in
//! `criu/pie/parasite.c`).
//!
//! Each descriptor gets a `tty_file_entry` naming a `reg_file_entry` with
//! its path (`regf_id`) and a `tty_info_entry` shared by every descriptor of
//! the same terminal end (id `index << 1 | master`). The session, foreground
//! group, exclusive, packet and lock bits are asked from inside the task
//! (injected `ioctl`s: a slave answers only to the tasks it controls); the
//! termios, locked termios and window size from a copy of the descriptor.
//!
//! A slave whose master is not in the tree (the terminal a job was started
//! from) and a terminal of a session led outside the tree need `shell_job`
//! (or `orphan_pts_master` for the slave). Consoles, virtual terminals,
//! serial lines and `/dev/tty` are refused.
//!
//! # References
//!
//! - [ioctl_tty(2)](https://man7.org/linux/man-pages/man2/ioctl_tty.2.html)
//! - [pts(4)](https://man7.org/linux/man-pages/man4/pts.4.html)

use std::fs::Metadata;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use criu_proto::images::{
    FdTypes, FileEntry, FownEntry, PstreeEntry, TermiosEntry, TtyDataEntry, TtyFileEntry,
    TtyInfoEntry, TtyPtyEntry, TtyType, WinsizeEntry,
};
use criu_proto::img::{ImageKind, ImagesDir};
use nix::errno::Errno;

use super::{reg, DumpedFd, FileTable, FilesError};
use crate::arch::nr;
use crate::inject::{InjectError, Injection};
use crate::pstree::RealPid;
use crate::sys::tty as ioctl;

/// Highest pty index CRIU accepts.
const MAX_PTY_INDEX: u32 = 1000;
/// Most bytes saved per terminal end, as CRIU.
const MAX_QUEUED: usize = 16384;
/// Major of `/dev/tty`, `/dev/console`, `/dev/ptmx`.
const TTYAUX_MAJOR: u32 = 5;
/// First and last majors of pty masters (`UNIX98_PTY_MASTER_MAJOR`).
const PTM_MAJORS: std::ops::RangeInclusive<u32> = 128..=135;
/// Major of pty slaves (`UNIX98_PTY_SLAVE_MAJOR`).
const PTS_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// A terminal could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// An ioctl on the engine's copy of the descriptor failed.
    #[error("task {pid}: cannot read the state of terminal {name} (fd {fd}): {what}")]
    Query {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// The terminal's path.
        name: String,
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// An injected ioctl could not run.
    #[error("task {pid}: cannot query terminal fd {fd} from inside the task")]
    Inject {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: InjectError,
    },
    /// The pty index is out of CRIU's range.
    #[error("task {pid}: pty {name} (fd {fd}) has index {index}, above {MAX_PTY_INDEX}")]
    Index {
        /// The task.
        pid: RealPid,
        /// The descriptor.
        fd: i32,
        /// Its path.
        name: String,
        /// The index.
        index: u32,
    },
    /// A terminal belongs to a session whose leader is not dumped.
    #[error(
        "terminal {name} belongs to session {sid} (foreground group {pgrp}) whose leader is not \
         in the dumped tree: the task is attached to a shell terminal, use shell_job"
    )]
    DanglingSession {
        /// The terminal's path.
        name: String,
        /// Its session.
        sid: u32,
        /// Its foreground group.
        pgrp: u32,
    },
    /// A pty slave's master is not held by the tree.
    #[error(
        "pty slave {name} (index {index}) has no master in the dumped tree: use shell_job or \
         orphan_pts_master"
    )]
    UnpairedSlave {
        /// Its path.
        name: String,
        /// Its index.
        index: u32,
    },
    /// More than one pty slave lacks its master.
    #[error("pty slave index {index} is a second slave without master; only one is allowed")]
    SecondUnpaired {
        /// Its index.
        index: u32,
    },
    /// The queued bytes could not be read or written back.
    #[error("cannot {what} the data queued in pty index {index}")]
    Queued {
        /// Read or write back.
        what: &'static str,
        /// The pty.
        index: u32,
        /// Why.
        #[source]
        source: Errno,
    },
    /// `tty-info.img` or `tty-data.img` could not be written.
    #[error("cannot write the terminal images")]
    Image(#[from] criu_proto::img::ImageError),
}

/// Options of the dump that decide what terminals are accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct TtyOptions {
    /// `shell_job`: a terminal of a session outside the tree and a slave
    /// without master are accepted (restore inherits the terminal).
    pub shell_job: bool,
    /// `orphan_pts_master`: a slave without master is accepted (restore
    /// hands a new master to the RPC client).
    pub orphan_pts_master: bool,
    /// The tree keeps running or stays stopped: queued bytes read for the
    /// images are written back.
    pub keep_data: bool,
}

/// What kind of terminal a character device is.
enum Kind {
    Master,
    Slave,
    Other(&'static str),
}

fn kind(meta: &Metadata) -> Option<Kind> {
    if meta.mode() & libc::S_IFMT != libc::S_IFCHR {
        return None;
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    Some(match major {
        TTYAUX_MAJOR => match minor {
            0 => Kind::Other("the current terminal"),
            1 => Kind::Other("a console"),
            2 => Kind::Master,
            _ => return None,
        },
        4 if minor < 64 => Kind::Other("a virtual terminal"),
        4 => Kind::Other("a serial line"),
        m if PTM_MAJORS.contains(&m) => Kind::Master,
        m if PTS_MAJORS.contains(&m) => Kind::Slave,
        _ => return None,
    })
}

/// Whether the file is a terminal device (handled by this module).
pub(crate) fn is_tty(meta: &Metadata) -> bool {
    kind(meta).is_some()
}

/// One terminal end met in the tree.
struct End {
    info: TtyInfoEntry,
    name: String,
    /// A copy of one descriptor of it (shares its open file description).
    fd: OwnedFd,
    hung: bool,
}

/// The terminals of a dump.
#[derive(Default)]
pub(crate) struct TtyTable {
    ends: Vec<End>,
}

/// Result of an ioctl run in the task: the value, or the terminal hung up.
fn remote_int(inj: &Injection<'_>, fd: i32, req: u64) -> Result<Option<u32>, InjectError> {
    let arg = inj.scratch();
    inj.write_scratch(0, &[0; 4])?;
    let ret = inj.syscall(nr::IOCTL, &[fd as u64, req, arg.0])?;
    match ret {
        0.. => {
            let mut raw = [0u8; 4];
            inj.read_scratch(0, &mut raw)?;
            Ok(Some(u32::from_ne_bytes(raw)))
        }
        r if r == -i64::from(libc::ENOTTY) => Ok(Some(0)),
        r if r == -i64::from(libc::EIO) => Ok(None),
        r => Err(InjectError::Syscall {
            pid: inj.task().pid(),
            nr: nr::IOCTL,
            source: Errno::from_raw(-r as i32),
        }),
    }
}

fn termios_entry(t: &ioctl::KernelTermios) -> TermiosEntry {
    TermiosEntry {
        c_iflag: t.c_iflag,
        c_oflag: t.c_oflag,
        c_cflag: t.c_cflag,
        c_lflag: t.c_lflag,
        c_line: t.c_line.into(),
        c_ispeed: 0,
        c_ospeed: 0,
        c_cc: t.c_cc.iter().map(|&c| c.into()).collect(),
    }
}

impl TtyTable {
    fn has(&self, info_id: u32) -> bool {
        self.ends.iter().any(|e| e.info.id == info_id)
    }

    /// Records terminal end `info_id` on its first descriptor.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        pid: RealPid,
        fd: i32,
        inj: &Injection<'_>,
        lfd: OwnedFd,
        info_id: u32,
        index: u32,
        name: &str,
        meta: &Metadata,
    ) -> Result<(), TtyError> {
        let inj_err = |source| TtyError::Inject { pid, fd, source };
        let mut info = TtyInfoEntry {
            id: info_id,
            r#type: TtyType::Pty as i32,
            rdev: meta.rdev() as u32,
            dev: Some(meta.dev() as u32),
            uid: Some(meta.uid()),
            gid: Some(meta.gid()),
            pty: Some(TtyPtyEntry { index }),
            ..Default::default()
        };
        let mut hung = false;
        let mut ask = |req| -> Result<u32, TtyError> {
            match remote_int(inj, fd, req).map_err(inj_err)? {
                Some(v) => Ok(v),
                None => {
                    hung = true;
                    Ok(0)
                }
            }
        };
        info.sid = ask(ioctl::TIOCGSID)?;
        info.pgrp = ask(ioctl::TIOCGPGRP)?;
        info.exclusive = ask(ioctl::TIOCGEXCL)? != 0;
        info.packet_mode = ask(ioctl::TIOCGPKT)? != 0;
        info.locked = ask(ioctl::TIOCGPTLCK)? != 0;
        if !hung {
            let raw = lfd.as_raw_fd();
            let q = |what, source| TtyError::Query {
                pid,
                fd,
                name: name.to_owned(),
                what,
                source,
            };
            let t = ioctl::termios(raw, false).map_err(|e| q("termios", e))?;
            let tl = ioctl::termios(raw, true).map_err(|e| q("locked termios", e))?;
            let w = ioctl::winsize(raw).map_err(|e| q("window size", e))?;
            info.termios = Some(termios_entry(&t));
            info.termios_locked = Some(termios_entry(&tl));
            info.winsize = Some(WinsizeEntry {
                ws_row: w.ws_row.into(),
                ws_col: w.ws_col.into(),
                ws_xpixel: w.ws_xpixel.into(),
                ws_ypixel: w.ws_ypixel.into(),
            });
        } else {
            // Nothing more can be learnt from a pty whose other end is
            // gone; the entry keeps what was gathered.
            info.sid = 0;
            info.pgrp = 0;
            tracing::debug!(pid = pid.0, fd, name, "hung-up terminal");
        }
        self.ends.push(End {
            info,
            name: name.to_owned(),
            fd: lfd,
            hung,
        });
        Ok(())
    }

    /// Checks the terminals against the whole tree and the options, reads
    /// the bytes queued in pairs (written back when the tree lives on) and
    /// writes `tty-info.img` and `tty-data.img`.
    pub(crate) fn finish(
        &self,
        opts: TtyOptions,
        pstree: &[PstreeEntry],
        dir: &ImagesDir,
    ) -> Result<(), TtyError> {
        if self.ends.is_empty() {
            return Ok(());
        }
        for e in &self.ends {
            if e.info.sid == 0 || opts.shell_job {
                continue;
            }
            let leader = pstree.iter().find(|p| p.sid == e.info.sid);
            if leader.is_none_or(|l| l.pid != e.info.sid) {
                return Err(TtyError::DanglingSession {
                    name: e.name.clone(),
                    sid: e.info.sid,
                    pgrp: e.info.pgrp,
                });
            }
        }
        let mut unpaired = 0;
        for e in self.ends.iter().filter(|e| !e.hung && e.info.id & 1 == 0) {
            if self.live(e.info.id | 1).is_some() {
                continue;
            }
            let index = e.info.id >> 1;
            if !opts.shell_job && !opts.orphan_pts_master {
                return Err(TtyError::UnpairedSlave {
                    name: e.name.clone(),
                    index,
                });
            }
            unpaired += 1;
            if unpaired > 1 {
                return Err(TtyError::SecondUnpaired { index });
            }
        }
        let mut data = Vec::new();
        for master in self.ends.iter().filter(|e| !e.hung && e.info.id & 1 == 1) {
            let Some(slave) = self.live(master.info.id & !1) else {
                continue;
            };
            let index = master.info.id >> 1;
            let q = |what| {
                move |source| TtyError::Queued {
                    what,
                    index,
                    source,
                }
            };
            let from_master = drain(&master.fd).map_err(q("read"))?;
            let from_slave = drain(&slave.fd).map_err(q("read"))?;
            if opts.keep_data {
                write_all(&slave.fd, &from_master).map_err(q("write back"))?;
                write_all(&master.fd, &from_slave).map_err(q("write back"))?;
            }
            for (end, bytes) in [(master, from_master), (slave, from_slave)] {
                if !bytes.is_empty() {
                    data.push(TtyDataEntry {
                        tty_id: end.info.id,
                        data: bytes,
                    });
                }
            }
        }
        let mut infos: Vec<&TtyInfoEntry> = self.ends.iter().map(|e| &e.info).collect();
        infos.sort_by_key(|i| i.id);
        dir.write_all(ImageKind::TtyInfo, 0, infos)?;
        if !data.is_empty() {
            dir.write_all(ImageKind::TtyData, 0, &data)?;
        }
        Ok(())
    }

    fn live(&self, info_id: u32) -> Option<&End> {
        self.ends.iter().find(|e| e.info.id == info_id && !e.hung)
    }
}

/// Reads what is ready on a terminal end without blocking (at most
/// [`MAX_QUEUED`] bytes).
fn drain(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < MAX_QUEUED {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO)? == 0
            || !fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            break;
        }
        let room = (MAX_QUEUED - out.len()).min(buf.len());
        match nix::unistd::read(fd, &mut buf[..room]) {
            Ok(0) | Err(Errno::EIO) | Err(Errno::EAGAIN) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl FileTable {
    /// A terminal descriptor: its `tty_file_entry`, the `reg_file_entry` of
    /// its path and, on the first descriptor of that end, its
    /// `tty_info_entry`.
    pub(super) fn dump_tty(
        &mut self,
        pid: RealPid,
        inj: &Injection<'_>,
        fd: i32,
        name: &str,
        meta: &Metadata,
    ) -> Result<DumpedFd, FilesError> {
        let unsupported = |kind: String| FilesError::Unsupported { pid, fd, kind };
        let master = match kind(meta) {
            Some(Kind::Master) => true,
            Some(Kind::Slave) => false,
            Some(Kind::Other(what)) => return Err(unsupported(format!("{what} {name}"))),
            None => return Err(unsupported(format!("a special file {name}"))),
        };
        let (_, info) = super::read_fdinfo(pid, fd)?;
        super::refuse_owner(pid, inj, fd, || {
            unsupported(format!("terminal {name} with an F_SETOWN owner"))
        })?;
        let (cloexec, flags) = super::split_flags(info.flags);
        let key = (meta.dev(), meta.ino(), 0);
        let fdinfo = |id| super::fdinfo_entry(id, cloexec, FdTypes::Tty, fd);
        if let Some(id) = self.shared_id(pid, fd, key) {
            return Ok((fdinfo(id), key));
        }
        let lfd = crate::inject::steal_fd(pid, fd).map_err(|source| FilesError::Steal {
            pid,
            fd,
            source,
        })?;
        let index = if master {
            ioctl::pty_index(lfd.as_raw_fd()).map_err(|source| TtyError::Query {
                pid,
                fd,
                name: name.to_owned(),
                what: "pty index",
                source,
            })?
        } else {
            name.rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| unsupported(format!("a pty slave with an odd path {name}")))?
        };
        if index > MAX_PTY_INDEX {
            return Err(TtyError::Index {
                pid,
                fd,
                name: name.to_owned(),
                index,
            }
            .into());
        }
        let info_id = (index << 1) | u32::from(master);
        if !self.ttys.has(info_id) {
            self.ttys
                .add(pid, fd, inj, lfd, info_id, index, name, meta)?;
        }
        let id = self.alloc();
        let regf_id = self.alloc();
        let reg = reg::entry(regf_id, name, flags, 0, meta, None);
        self.entries.push(FileEntry {
            r#type: FdTypes::Reg as i32,
            id: regf_id,
            reg: Some(reg),
            ..Default::default()
        });
        self.entries.push(FileEntry {
            r#type: FdTypes::Tty as i32,
            id,
            tty: Some(TtyFileEntry {
                id,
                tty_info_id: info_id,
                flags,
                fown: FownEntry::default(),
                regf_id: Some(regf_id),
            }),
            ..Default::default()
        });
        Ok((fdinfo(id), key))
    }

    /// Checks the terminals met against the whole tree (`pstree`) and the
    /// options, saves the bytes queued in pty pairs and writes
    /// `tty-info.img` and `tty-data.img`.
    pub fn finish_ttys(&self, pstree: &[PstreeEntry], dir: &ImagesDir) -> Result<(), FilesError> {
        self.ttys
            .finish(self.tty_opts, pstree, dir)
            .map_err(FilesError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_kinds() {
        let ptmx = std::fs::metadata("/dev/ptmx").unwrap();
        assert!(matches!(kind(&ptmx), Some(Kind::Master)));
        let null = std::fs::metadata("/dev/null").unwrap();
        assert!(kind(&null).is_none());
        let tty = std::fs::metadata("/dev/tty").unwrap();
        assert!(matches!(kind(&tty), Some(Kind::Other(_))));
    }
}
