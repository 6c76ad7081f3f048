//! Terminals of the restored tree (CRIU's `criu/tty.c`: `pty_open_ptmx`,
//! `pty_open_unpaired_slave`, `restore_tty_params`,
//! `tty_restore_ctl_terminal`, `tty_find_restoring_task`, and the
//! `orphan_pts_master` hand-over through `rpc_send_fd`).
//!
//! The engine decides, from `tty-info.img` and `tty-data.img`, how each
//! terminal end comes back ([`TtyImages::prepare`]); the root task then
//! carries it out with plain syscalls ([`TtySource`]):
//!
//! - a pty pair of the tree: `/dev/ptmx` is opened until it gives the
//!   dumped index, unlocked, given its termios, window size and packet
//!   mode; the slave is reopened by path; the queued bytes go back into
//!   each end and a dumped lock is set again;
//! - a slave whose master was outside the tree: with `orphan_pts_master`
//!   and RPC notifications the engine opens a new master at that index and
//!   sends it to the client (`orphan-pts-master`), and the slave is reopened
//!   by path; otherwise, with `shell_job`, the restorer's own standard input
//!   takes its place and, when the root does not lead its session, the
//!   root's group becomes the terminal's foreground group;
//! - a terminal named by an `inherit_fd` key `tty[RDEV:DEV]` is that
//!   descriptor.
//!
//! The session leader of a terminal's dumped session makes it its
//! controlling terminal again (`TIOCSCTTY`) and sets its dumped foreground
//! group.
//!
//! # References
//!
//! - [ioctl_tty(2)](https://man7.org/linux/man-pages/man2/ioctl_tty.2.html)
//! - [pts(4)](https://man7.org/linux/man-pages/man4/pts.4.html)

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use criu_proto::images::{FileEntry, TermiosEntry, TtyDataEntry, TtyInfoEntry, TtyType};
use criu_proto::img::{ImageKind, ImagesDir};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;

use super::files::FdStep;
use super::images::{read_error, ImagesError, TaskImages};
use super::pstree::TreeImages;
use crate::config::InheritFd;
use crate::notify::Notify;
use crate::sys::clone3::{dup_above, write_raw};
use crate::sys::tty::{self as ioctl, KernelTermios, WinSize, KERNEL_NCCS};

/// How many `/dev/ptmx` opens may be spent reaching the dumped index.
const PTMX_TRIES: usize = 32;

/// A terminal of the images cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum TtyRestoreError {
    /// `tty-info.img` or `tty-data.img` cannot be read.
    #[error(transparent)]
    Images(#[from] ImagesError),
    /// A tty file names no terminal of `tty-info.img`.
    #[error("tty file {id} names terminal {info_id}, which tty-info.img lacks")]
    NoInfo {
        /// The file's id.
        id: u32,
        /// The missing `tty_info_entry` id.
        info_id: u32,
    },
    /// A terminal kind other than a pty.
    #[error("terminal {info_id} is of type {kind}, which cannot be restored yet")]
    Kind {
        /// Its id.
        info_id: u32,
        /// Its type.
        kind: String,
    },
    /// A slave without master and neither `shell_job` nor an orphan
    /// master hand-over.
    #[error("pty slave index {index} had its master outside the tree: restore needs shell_job")]
    Unpaired {
        /// Its index.
        index: u32,
    },
    /// `shell_job` wants a terminal on the restorer's standard input.
    #[error(
        "pty slave index {index} is to be replaced by the restorer's terminal, but its standard \
         input is not a terminal"
    )]
    NoTerminal {
        /// The slave's index.
        index: u32,
    },
    /// The new master for the client cannot be made.
    #[error("cannot open a pty master with index {index} for the client")]
    OrphanMaster {
        /// Index wanted.
        index: u32,
        /// Why.
        #[source]
        source: Errno,
    },
    /// A terminal's session has no leader among the restored tasks.
    #[error("terminal index {index} belongs to session {sid}, whose leader is not restored")]
    NoLeader {
        /// The pty index.
        index: u32,
        /// The session.
        sid: u32,
    },
    /// One session leader would get two controlling terminals.
    #[error("task {pid} leads the sessions of two terminals (index {first} and {second})")]
    TwoTerminals {
        /// The session leader.
        pid: u32,
        /// One pty index.
        first: u32,
        /// The other.
        second: u32,
    },
}

/// Termios, locked termios and window size to set on a terminal end.
#[derive(Debug, Clone, Default)]
pub(crate) struct TtyState {
    termios: Option<KernelTermios>,
    locked: Option<KernelTermios>,
    winsize: Option<WinSize>,
}

fn kernel_termios(e: &TermiosEntry) -> KernelTermios {
    let mut cc = [0u8; KERNEL_NCCS];
    for (d, s) in cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    KernelTermios {
        c_iflag: e.c_iflag,
        c_oflag: e.c_oflag,
        c_cflag: e.c_cflag,
        c_lflag: e.c_lflag,
        c_line: e.c_line as u8,
        c_cc: cc,
    }
}

impl TtyState {
    fn of(info: &TtyInfoEntry) -> TtyState {
        TtyState {
            termios: info.termios.as_ref().map(kernel_termios),
            locked: info.termios_locked.as_ref().map(kernel_termios),
            winsize: info.winsize.as_ref().map(|w| WinSize {
                ws_row: w.ws_row as u16,
                ws_col: w.ws_col as u16,
                ws_xpixel: w.ws_xpixel as u16,
                ws_ypixel: w.ws_ypixel as u16,
            }),
        }
    }

    /// Sets the state on `fd`. Locked bits need privilege: when they cannot
    /// be set but already are what the images say, that is fine.
    fn apply(&self, fd: RawFd) -> nix::Result<()> {
        if let Some(l) = &self.locked {
            match ioctl::set_termios(fd, true, l) {
                Ok(()) => {}
                Err(Errno::EPERM) if ioctl::termios(fd, true)? == *l => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(t) = &self.termios {
            ioctl::set_termios(fd, false, t)?;
        }
        if let Some(w) = &self.winsize {
            ioctl::set_winsize(fd, w)?;
        }
        Ok(())
    }
}

/// How one terminal file object is opened in the root task.
#[derive(Debug)]
pub(crate) enum TtySource {
    /// A pty master at a given index.
    Master {
        path: CString,
        flags: i32,
        index: u32,
        state: TtyState,
        packet: bool,
        locked: bool,
        /// Bytes to write into it once its slaves are open (the slave's
        /// pending input).
        data: Option<Vec<u8>>,
    },
    /// A pty slave reopened by path once its master exists.
    Slave {
        path: CString,
        flags: i32,
        state: TtyState,
        /// Bytes to write into it (the master's pending input).
        data: Option<Vec<u8>>,
    },
    /// The restorer's standard input (a shell job's terminal).
    Stdin {
        state: TtyState,
        /// Make the root's group the terminal's foreground group.
        foreground: bool,
    },
    /// A descriptor of the worker named by an `inherit_fd` key.
    Inherit { worker_fd: RawFd },
}

/// A failure of the root task: the step and errno.
pub(crate) type TtyFailure = (FdStep, Errno);

impl TtySource {
    /// Whether this is a pty master (opened before everything else).
    pub(crate) fn is_master(&self) -> bool {
        matches!(self, TtySource::Master { .. })
    }

    /// The worker descriptor the object is a copy of, if any.
    pub(crate) fn worker_fd(&self) -> Option<RawFd> {
        match self {
            TtySource::Stdin { .. } => Some(0),
            TtySource::Inherit { worker_fd } => Some(*worker_fd),
            _ => None,
        }
    }

    /// Opens (or finishes, for `relocated` worker descriptors) the object
    /// above `scratch`; returns its descriptor.
    pub(crate) fn open(&self, relocated: RawFd, scratch: RawFd) -> Result<RawFd, TtyFailure> {
        match self {
            TtySource::Master {
                path,
                flags,
                index,
                state,
                packet,
                ..
            } => {
                let fd = open_ptmx_at(path, *flags, *index)?;
                ioctl::set_pty_lock(fd.as_raw_fd(), false).map_err(|e| (FdStep::TtyUnlock, e))?;
                state
                    .apply(fd.as_raw_fd())
                    .map_err(|e| (FdStep::TtyState, e))?;
                if *packet {
                    ioctl::set_packet_mode(fd.as_raw_fd()).map_err(|e| (FdStep::TtyPacket, e))?;
                }
                dup_above(fd.as_raw_fd(), scratch).map_err(|e| (FdStep::Dup, e))
            }
            TtySource::Slave {
                path,
                flags,
                state,
                data,
            } => {
                let fd = nix::fcntl::open(
                    path.as_c_str(),
                    OFlag::from_bits_retain(*flags) | OFlag::O_NOCTTY,
                    Mode::empty(),
                )
                .map_err(|e| (FdStep::TtyOpen, e))?;
                state
                    .apply(fd.as_raw_fd())
                    .map_err(|e| (FdStep::TtyState, e))?;
                if let Some(data) = data {
                    write_raw(fd.as_raw_fd(), data).map_err(|e| (FdStep::TtyData, e))?;
                }
                dup_above(fd.as_raw_fd(), scratch).map_err(|e| (FdStep::Dup, e))
            }
            TtySource::Stdin { state, foreground } => {
                // The root may be in a background group of the restorer's
                // terminal, where these requests raise SIGTTOU.
                without_sigttou(|| {
                    state.apply(relocated).map_err(|e| (FdStep::TtyState, e))?;
                    if *foreground {
                        ioctl::set_foreground(relocated, nix::unistd::getpgrp().as_raw())
                            .map_err(|e| (FdStep::TtyForeground, e))?;
                    }
                    Ok(relocated)
                })
            }
            TtySource::Inherit { .. } => Ok(relocated),
        }
    }

    /// After every object is open: a master gets its queued bytes and its
    /// lock back.
    pub(crate) fn finish(&self, fd: RawFd) -> Result<(), TtyFailure> {
        if let TtySource::Master { data, locked, .. } = self {
            if let Some(data) = data {
                write_raw(fd, data).map_err(|e| (FdStep::TtyData, e))?;
            }
            if *locked {
                ioctl::set_pty_lock(fd, true).map_err(|e| (FdStep::TtyLock, e))?;
            }
        }
        Ok(())
    }
}

/// Opens `path` (a ptmx) until the kernel gives pty `index`, keeping the
/// lower indices busy meanwhile (CRIU gives up after 32 tries too).
fn open_ptmx_at(path: &CString, flags: i32, index: u32) -> Result<OwnedFd, TtyFailure> {
    let mut held: [Option<OwnedFd>; PTMX_TRIES] = Default::default();
    for slot in &mut held {
        let fd = nix::fcntl::open(
            path.as_c_str(),
            OFlag::from_bits_retain(flags) | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| (FdStep::TtyOpen, e))?;
        let got = ioctl::pty_index(fd.as_raw_fd()).map_err(|e| (FdStep::TtyIndex, e))?;
        if got == index {
            return Ok(fd);
        }
        if got > index || (index - got) as usize >= PTMX_TRIES {
            return Err((FdStep::TtyIndex, Errno::EBUSY));
        }
        *slot = Some(fd);
    }
    Err((FdStep::TtyIndex, Errno::EBUSY))
}

/// Runs `f` with `SIGTTOU` blocked, so that terminal requests from a
/// background group fail or pass instead of stopping the task.
fn without_sigttou<T>(f: impl FnOnce() -> Result<T, TtyFailure>) -> Result<T, TtyFailure> {
    let mut block = SigSet::empty();
    block.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old))
        .map_err(|e| (FdStep::TtyForeground, e))?;
    let ret = f();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
        .map_err(|e| (FdStep::TtyForeground, e))?;
    ret
}

/// The controlling terminal a session leader takes back.
#[derive(Debug, Clone)]
pub(crate) struct Ctty {
    /// The slave's path.
    path: CString,
    /// Foreground group (0: none).
    pgrp: i32,
    index: u32,
}

impl Ctty {
    /// In the session leader: makes the terminal its controlling terminal
    /// and sets the foreground group.
    pub(crate) fn apply(&self) -> Result<(), TtyFailure> {
        let fd = nix::fcntl::open(
            self.path.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| (FdStep::TtyCtty, e))?;
        ioctl::set_ctty(fd.as_raw_fd()).map_err(|e| (FdStep::TtyCtty, e))?;
        if self.pgrp != 0 {
            without_sigttou(|| {
                ioctl::set_foreground(fd.as_raw_fd(), self.pgrp)
                    .map_err(|e| (FdStep::TtyForeground, e))
            })?;
        }
        Ok(())
    }
}

/// How an unpaired slave comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unpaired {
    /// Reopened by path: the client got a new master.
    ByPath,
    /// The restorer's standard input.
    Stdin,
}

/// The terminals of the images and the decisions taken for them.
#[derive(Debug, Default)]
pub(crate) struct TtyImages {
    infos: HashMap<u32, TtyInfoEntry>,
    data: HashMap<u32, Vec<u8>>,
    unpaired: HashMap<u32, Unpaired>,
    /// By session leader pid.
    cttys: HashMap<u32, Ctty>,
    /// The master handed to the client, kept until the slave is open.
    orphan_master: Option<OwnedFd>,
    /// Whether the root leads its session.
    root_leads_session: bool,
}

/// The key `inherit_fd` uses for a terminal.
fn inherit_key(info: &TtyInfoEntry) -> String {
    format!("tty[{:x}:{:x}]", info.rdev, info.dev.unwrap_or(0))
}

/// The slave path of pty `index` next to the master `ptmx` path.
fn slave_path(ptmx: &str, index: u32) -> String {
    match ptmx.strip_suffix("/ptmx") {
        Some(dir) if dir.ends_with("/pts") => format!("{dir}/{index}"),
        _ => format!("/dev/pts/{index}"),
    }
}

impl TtyImages {
    /// Reads `tty-info.img` and `tty-data.img` (both optional).
    pub(crate) fn load(dir: &ImagesDir) -> Result<TtyImages, ImagesError> {
        let infos: Vec<TtyInfoEntry> = dir
            .read_all(ImageKind::TtyInfo, 0)
            .map_err(|e| read_error(ImageKind::TtyInfo, 0, e))?;
        let data: Vec<TtyDataEntry> = dir
            .read_all(ImageKind::TtyData, 0)
            .map_err(|e| read_error(ImageKind::TtyData, 0, e))?;
        Ok(TtyImages {
            infos: infos.into_iter().map(|i| (i.id, i)).collect(),
            data: data.into_iter().map(|d| (d.tty_id, d.data)).collect(),
            ..Default::default()
        })
    }

    fn hung(info: &TtyInfoEntry) -> bool {
        info.termios.is_none()
    }

    fn inherited<'a>(
        &self,
        info: &TtyInfoEntry,
        inherit: &'a [InheritFd],
    ) -> Option<&'a InheritFd> {
        let key = inherit_key(info);
        inherit.iter().find(|i| i.key == key)
    }

    /// Decides how every terminal comes back; hands a new master to the
    /// client for an orphan slave when asked to.
    pub(crate) fn prepare(
        &mut self,
        tree: &TreeImages,
        inherit: &[InheritFd],
        shell_job: bool,
        orphan_pts_master: bool,
        notify: &mut dyn Notify,
    ) -> Result<(), TtyRestoreError> {
        self.root_leads_session = tree.root().pstree.sid == tree.root().pstree.pid;
        let mut ids: Vec<u32> = self.infos.keys().copied().collect();
        ids.sort_unstable();
        for &id in &ids {
            let info = &self.infos[&id];
            if info.r#type != TtyType::Pty as i32 && self.inherited(info, inherit).is_none() {
                return Err(TtyRestoreError::Kind {
                    info_id: id,
                    kind: TtyType::try_from(info.r#type)
                        .map_or_else(|_| info.r#type.to_string(), |t| t.as_str_name().to_owned()),
                });
            }
        }
        for &id in &ids {
            let info = &self.infos[&id];
            let index = id >> 1;
            if id & 1 == 1
                || Self::hung(info)
                || self.infos.contains_key(&(id | 1))
                || self.inherited(info, inherit).is_some()
            {
                continue;
            }
            if orphan_pts_master {
                let master = open_ptmx_at(&CString::from(c"/dev/ptmx"), libc::O_RDWR, index)
                    .map_err(|(_, source)| TtyRestoreError::OrphanMaster { index, source })?;
                ioctl::set_pty_lock(master.as_raw_fd(), false)
                    .map_err(|source| TtyRestoreError::OrphanMaster { index, source })?;
                use std::os::fd::AsFd;
                if notify.notify_fd("orphan-pts-master", master.as_fd()) {
                    tracing::info!(index, "pty master handed to the client");
                    self.orphan_master = Some(master);
                    self.unpaired.insert(id, Unpaired::ByPath);
                    continue;
                }
            }
            if !shell_job {
                return Err(TtyRestoreError::Unpaired { index });
            }
            if !ioctl::is_terminal(0) {
                return Err(TtyRestoreError::NoTerminal { index });
            }
            tracing::info!(index, "pty slave replaced by the restorer's terminal");
            self.unpaired.insert(id, Unpaired::Stdin);
        }
        for &id in &ids {
            let info = &self.infos[&id];
            let index = id >> 1;
            if info.sid == 0
                || Self::hung(info)
                || self.unpaired.get(&(id & !1)) == Some(&Unpaired::Stdin)
                || self.inherited(info, inherit).is_some()
            {
                continue;
            }
            let leader = tree
                .tasks
                .iter()
                .find(|t| t.pstree.pid == info.sid && t.pstree.sid == info.sid)
                .and_then(|t| t.alive());
            let Some(leader) = leader else {
                if shell_job {
                    tracing::warn!(index, sid = info.sid, "terminal of a session left behind");
                    continue;
                }
                return Err(TtyRestoreError::NoLeader {
                    index,
                    sid: info.sid,
                });
            };
            let ctty = Ctty {
                path: CString::new(slave_path("/dev/ptmx", index)).expect("no NUL byte"),
                pgrp: info.pgrp as i32,
                index,
            };
            match self.cttys.get(&leader.pid()) {
                Some(c) if c.index != index => {
                    return Err(TtyRestoreError::TwoTerminals {
                        pid: leader.pid(),
                        first: c.index,
                        second: index,
                    })
                }
                Some(_) => {}
                None => {
                    self.cttys.insert(leader.pid(), ctty);
                }
            }
        }
        Ok(())
    }

    /// The controlling terminal task `pid` sets up, if it leads the
    /// session of one.
    pub(crate) fn ctty(&self, pid: u32) -> Option<Ctty> {
        self.cttys.get(&pid).cloned()
    }

    /// How tty file `file` of `task` is opened. `first` says whether it is
    /// the first file object of its terminal end (which gets the queued
    /// bytes).
    pub(crate) fn source(
        &self,
        task: &TaskImages,
        file: &FileEntry,
        inherit: &[InheritFd],
        first: bool,
    ) -> Result<TtySource, TtyRestoreError> {
        let tfe = file.tty.as_ref().ok_or(TtyRestoreError::NoInfo {
            id: file.id,
            info_id: 0,
        })?;
        let info = self
            .infos
            .get(&tfe.tty_info_id)
            .ok_or(TtyRestoreError::NoInfo {
                id: file.id,
                info_id: tfe.tty_info_id,
            })?;
        let id = info.id;
        if let Some(inh) = self.inherited(info, inherit) {
            return Ok(TtySource::Inherit { worker_fd: inh.fd });
        }
        let index = info.pty.as_ref().map_or(id >> 1, |p| p.index);
        let name = tfe
            .regf_id
            .and_then(|r| task.reg(r))
            .map(|r| r.name.clone())
            .unwrap_or_else(|| {
                if id & 1 == 1 {
                    "/dev/ptmx".to_owned()
                } else {
                    slave_path("/dev/ptmx", index)
                }
            });
        let path = CString::new(name).map_err(|_| TtyRestoreError::NoInfo {
            id: file.id,
            info_id: id,
        })?;
        let flags = (tfe.flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let state = TtyState::of(info);
        let data_of = |peer: u32| first.then(|| self.data.get(&peer).cloned()).flatten();
        Ok(if id & 1 == 1 {
            TtySource::Master {
                path,
                flags,
                index,
                state,
                packet: info.packet_mode,
                locked: info.locked,
                data: data_of(id & !1),
            }
        } else if self.unpaired.get(&id) == Some(&Unpaired::Stdin) {
            TtySource::Stdin {
                state,
                foreground: first && !self.root_leads_session,
            }
        } else {
            TtySource::Slave {
                path,
                flags,
                state,
                data: data_of(id | 1),
            }
        })
    }

    /// Drops the master handed to the client once the slave is open.
    pub(crate) fn release_orphan(&mut self) {
        self.orphan_master = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_paths_follow_the_master() {
        assert_eq!(slave_path("/dev/ptmx", 3), "/dev/pts/3");
        assert_eq!(slave_path("/dev/pts/ptmx", 4), "/dev/pts/4");
        assert_eq!(slave_path("/mnt/pts/ptmx", 5), "/mnt/pts/5");
    }

    #[test]
    fn inherit_keys_are_hex_like_criu() {
        let info = TtyInfoEntry {
            rdev: 0x8803,
            dev: Some(0x18),
            ..Default::default()
        };
        assert_eq!(inherit_key(&info), "tty[8803:18]");
    }

    #[test]
    fn a_busy_index_is_refused() {
        let path = CString::from(c"/dev/ptmx");
        let held =
            nix::fcntl::open(c"/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()).unwrap();
        let index = ioctl::pty_index(held.as_raw_fd()).unwrap();
        let err = open_ptmx_at(&path, libc::O_RDWR, index).unwrap_err();
        assert_eq!(err, (FdStep::TtyIndex, Errno::EBUSY));
    }

    #[test]
    fn state_is_set_on_a_pty() {
        let m =
            nix::fcntl::open(c"/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()).unwrap();
        let mut t = ioctl::termios(m.as_raw_fd(), false).unwrap();
        t.c_lflag &= !libc::ECHO;
        t.c_cc[libc::VINTR] = 7;
        let w = WinSize {
            ws_row: 33,
            ws_col: 77,
            ws_xpixel: 1,
            ws_ypixel: 2,
        };
        let state = TtyState {
            termios: Some(t),
            locked: Some(ioctl::termios(m.as_raw_fd(), true).unwrap()),
            winsize: Some(w),
        };
        state.apply(m.as_raw_fd()).unwrap();
        assert_eq!(ioctl::termios(m.as_raw_fd(), false).unwrap(), t);
        assert_eq!(ioctl::winsize(m.as_raw_fd()).unwrap(), w);
    }
}
