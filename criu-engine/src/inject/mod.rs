//! Running syscalls inside a seized task: our small counterpart of compel.
//!
//! One syscall is first run from the task's first executable mapping (its
//! original bytes and registers are put back right after): an `mmap` of a
//! private anonymous area whose first page receives the stub
//! `syscall; int3` and is then made read-execute, followed by
//! [`Injection::SCRATCH_LEN`] read-write bytes of scratch space for syscall
//! arguments and results. Every later syscall runs from that stub: set the
//! registers, continue, wait for the `int3` trap, read `rax`, put the
//! registers back.
//!
//! [`Injection`] is a guard: dropping it without [`Injection::cure`] or
//! [`Injection::finish_with_regs`] unmaps the stub (again from the first
//! executable mapping) and logs a failure with `tracing::error!`.
//!
//! All threads of the task's process must be stopped while an injection
//! exists: the swapped-in stub bytes and the signal mask games are only safe
//! when nothing else runs in that address space.
//!
//! CRIU counterparts: `compel/src/lib/infect.c` (`compel_prepare`,
//! `compel_execute_syscall`, `compel_cure`, `compel_unmap`),
//! `compel/arch/x86/src/lib/infect.c` (`compel_syscall`, `remote_mmap`).
//!
//! # References
//!
//! - [ptrace(2)](https://man7.org/linux/man-pages/man2/ptrace.2.html)
//! - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html)

mod area;
pub mod batch;
mod fd;
mod finish;
mod run;

use nix::errno::Errno;
use nix::sys::signal::Signal;

pub use self::fd::{close_remote, remote_pipe, steal_fd};
use crate::arch::nr;
use crate::arch::x86_64::{is_native, CHAIN_ENTRY_LEN, CHAIN_OFFSET, SYSCALL_CHAIN, SYSCALL_STUB};
pub use crate::arch::RemoteAddr;
use crate::pstree::RealPid;
use crate::seize::{read_status, SeizeError, SeizedTask};

/// Bytes of the stub page at the start of the injected mapping.
const STUB_PAGE: usize = 4096;

/// Failures of injected syscalls and of placing or removing the stub.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A ptrace or memory request on the task failed.
    #[error(transparent)]
    Task(#[from] SeizeError),
    /// The task does not run plain 64-bit code.
    #[error("task {pid} runs with code segment {cs:#x}; only native 64-bit tasks can be injected")]
    NotNative {
        /// The task.
        pid: RealPid,
        /// Its `cs` register.
        cs: u64,
    },
    /// A `SIGTRAP` is pending: it would be taken for the stub's trap.
    #[error("task {pid} has a SIGTRAP pending")]
    PendingSigtrap {
        /// The task.
        pid: RealPid,
    },
    /// `/proc/<pid>/maps` could not be read.
    #[error("cannot read the memory map of task {pid}")]
    Maps {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No mapping to run the first syscall from.
    #[error("task {pid} has no executable mapping to start the injection from")]
    NoExecArea {
        /// The task.
        pid: RealPid,
    },
    /// The injected `mmap` of the stub failed.
    #[error("cannot map the syscall stub in task {pid}")]
    StubMap {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The stub did not land at the requested address.
    #[error("the syscall stub of task {pid} was mapped at {got} instead of {wanted}")]
    StubMisplaced {
        /// The task.
        pid: RealPid,
        /// The requested address.
        wanted: RemoteAddr,
        /// Where it landed.
        got: RemoteAddr,
    },
    /// The injected `mprotect` of the stub page failed.
    #[error("cannot make the syscall stub at {addr} in task {pid} executable")]
    StubProtect {
        /// The task.
        pid: RealPid,
        /// The stub.
        addr: RemoteAddr,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The injected `munmap` of the stub failed or did not run as planned.
    #[error("cannot unmap the syscall stub at {addr} in task {pid}")]
    StubUnmap {
        /// The task.
        pid: RealPid,
        /// The stub.
        addr: RemoteAddr,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// An injected syscall returned an error (from [`Injection::syscall_ok`]).
    #[error("injected syscall {nr} failed in task {pid}")]
    Syscall {
        /// The task.
        pid: RealPid,
        /// The syscall number.
        nr: i64,
        /// The error the kernel returned.
        #[source]
        source: Errno,
    },
    /// More than six syscall arguments.
    #[error("injected syscall {nr} in task {pid} got {count} arguments; at most 6 fit")]
    TooManyArgs {
        /// The task.
        pid: RealPid,
        /// The syscall number.
        nr: i64,
        /// How many were given.
        count: usize,
    },
    /// The task died while running injected code.
    #[error("task {pid} died during an injected syscall ({status})")]
    Died {
        /// The task.
        pid: RealPid,
        /// Its wait status, as text.
        status: String,
    },
    /// A signal other than the stub's trap stopped the task.
    #[error("task {pid} got {signal} at {ip} during an injected syscall")]
    UnexpectedSignal {
        /// The task.
        pid: RealPid,
        /// The signal.
        signal: Signal,
        /// Where the task was.
        ip: RemoteAddr,
    },
    /// The task stopped in a way injection does not expect.
    #[error("task {pid} stopped unexpectedly during an injected syscall ({status})")]
    UnexpectedStop {
        /// The task.
        pid: RealPid,
        /// Its wait status, as text.
        status: String,
    },
    /// A scratch access beyond [`Injection::SCRATCH_LEN`].
    #[error("scratch range {offset}+{len} of task {pid} exceeds the scratch area")]
    ScratchRange {
        /// The task.
        pid: RealPid,
        /// Start within the scratch area.
        offset: usize,
        /// Length of the access.
        len: usize,
    },
    /// `pidfd_open` failed.
    #[error("cannot open a pidfd for task {pid}")]
    PidfdOpen {
        /// The task.
        pid: RealPid,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// `pidfd_getfd` failed.
    #[error("cannot take fd {fd} of task {pid}")]
    PidfdGetfd {
        /// The task.
        pid: RealPid,
        /// The descriptor in the task.
        fd: i32,
        /// The cause.
        #[source]
        source: Errno,
    },
}

/// A syscall stub mapped in a seized task (see the module docs).
///
/// Guard: dropping it without [`Injection::cure`] or
/// [`Injection::finish_with_regs`] removes the stub; failures are logged.
#[derive(Debug)]
pub struct Injection<'t> {
    task: &'t SeizedTask,
    stub: RemoteAddr,
    active: bool,
    owns_stub: bool,
}

impl<'t> Injection<'t> {
    /// Bytes of scratch space after the stub page: room for the iovecs of
    /// several page pipes below [`Injection::BATCH_TABLE`], the syscall
    /// batch table there, and a few words at the very end. Pages never
    /// touched cost the task nothing.
    pub const SCRATCH_LEN: usize = 512 * 1024;
    /// Offset in the scratch area of the table [`Injection::syscall_batch`]
    /// writes; callers keep their own data below it.
    pub const BATCH_TABLE: usize = 256 * 1024;
    /// Most syscalls in one [`Injection::syscall_batch`].
    pub const MAX_BATCH: usize = 1024;

    /// Maps the stub wherever the kernel likes.
    #[tracing::instrument(level = "debug", skip_all, fields(pid = %task.pid()))]
    pub fn new(task: &'t SeizedTask) -> Result<Injection<'t>, InjectError> {
        Self::place(task, None)
    }

    /// Maps the stub at `addr` (`MAP_FIXED_NOREPLACE`), for restore, which
    /// needs it where neither the current nor the target layout has anything.
    #[tracing::instrument(level = "debug", skip_all, fields(pid = %task.pid(), %addr))]
    pub fn new_at(task: &'t SeizedTask, addr: RemoteAddr) -> Result<Injection<'t>, InjectError> {
        Self::place(task, Some(addr))
    }

    fn place(task: &'t SeizedTask, at: Option<RemoteAddr>) -> Result<Self, InjectError> {
        let pid = task.pid();
        let regs = task.regs()?;
        if !is_native(&regs) {
            return Err(InjectError::NotNative { pid, cs: regs.cs });
        }
        if read_status(pid)?.pending(Signal::SIGTRAP) {
            return Err(InjectError::PendingSigtrap { pid });
        }
        let area = area::find_exec_area(pid, None)?;
        let len = Self::map_len() as u64;
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if at.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let stub = area::with_stub_at(task, area, |ip| {
            let ret = run::run_at(
                task,
                ip,
                nr::MMAP,
                &[
                    at.unwrap_or_default().0,
                    len,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    flags as u64,
                    u64::MAX,
                    0,
                ],
            )?;
            let stub = RemoteAddr(
                errno_result(ret).map_err(|source| InjectError::StubMap { pid, source })?,
            );
            let setup = match at {
                Some(wanted) if wanted != stub => Err(InjectError::StubMisplaced {
                    pid,
                    wanted,
                    got: stub,
                }),
                _ => Ok(()),
            }
            .and_then(|()| {
                task.write_mem(stub, &stub_code())
                    .map_err(InjectError::from)
            })
            .and_then(|()| {
                let ret = run::run_at(
                    task,
                    ip,
                    nr::MPROTECT,
                    &[
                        stub.0,
                        STUB_PAGE as u64,
                        (libc::PROT_READ | libc::PROT_EXEC) as u64,
                    ],
                )?;
                errno_result(ret)
                    .map(drop)
                    .map_err(|source| InjectError::StubProtect {
                        pid,
                        addr: stub,
                        source,
                    })
            });
            if let Err(e) = setup {
                match run::run_at(task, ip, nr::MUNMAP, &[stub.0, len]) {
                    Ok(0) => {}
                    other => {
                        tracing::error!(%pid, %stub, result = ?other, "cannot unmap a half-made syscall stub");
                    }
                }
                return Err(e);
            }
            Ok(stub)
        })?;
        tracing::debug!(%pid, %stub, %area, "syscall stub mapped");
        Ok(Self {
            task,
            stub,
            active: true,
            owns_stub: true,
        })
    }

    /// Runs syscalls in `thread`, another seized thread of the same process,
    /// from this injection's stub (threads share the address space).
    ///
    /// The returned injection does not own the stub: curing or dropping it
    /// leaves the stub mapped; only `self` removes it.
    pub fn for_thread<'u>(&'u self, thread: &'u SeizedTask) -> Injection<'u> {
        Injection {
            task: thread,
            stub: self.stub,
            active: false,
            owns_stub: false,
        }
    }

    /// Length of the whole injected mapping.
    const fn map_len() -> usize {
        STUB_PAGE + Self::SCRATCH_LEN
    }

    /// The task this injection runs in.
    pub fn task(&self) -> &'t SeizedTask {
        self.task
    }

    /// Start of the injected mapping (the stub code is at its start).
    pub fn stub_addr(&self) -> RemoteAddr {
        self.stub
    }

    /// Length of the injected mapping (stub page plus scratch).
    pub fn stub_len(&self) -> usize {
        Self::map_len()
    }

    /// Start of the scratch area inside the injected mapping.
    pub fn scratch(&self) -> RemoteAddr {
        self.stub.offset(STUB_PAGE as u64)
    }

    fn scratch_range(&self, offset: usize, len: usize) -> Result<RemoteAddr, InjectError> {
        match offset.checked_add(len) {
            Some(end) if end <= Self::SCRATCH_LEN => Ok(self.scratch().offset(offset as u64)),
            _ => Err(InjectError::ScratchRange {
                pid: self.task.pid(),
                offset,
                len,
            }),
        }
    }

    /// Copies `bytes` into the scratch area at `offset`; returns their
    /// address in the task.
    pub fn write_scratch(&self, offset: usize, bytes: &[u8]) -> Result<RemoteAddr, InjectError> {
        let addr = self.scratch_range(offset, bytes.len())?;
        self.task.write_mem(addr, bytes)?;
        Ok(addr)
    }

    /// Fills `buf` from the scratch area at `offset`.
    pub fn read_scratch(&self, offset: usize, buf: &mut [u8]) -> Result<(), InjectError> {
        let addr = self.scratch_range(offset, buf.len())?;
        self.task.read_mem(addr, buf)?;
        Ok(())
    }

    /// Runs syscall `nr` with up to 6 arguments in the task and returns the
    /// kernel's raw result (negative = `-errno`); the caller decides what a
    /// failure means. The task's registers and signal mask are the task's own
    /// again when this returns. A syscall that blocks blocks the caller too.
    pub fn syscall(&self, nr: i64, args: &[u64]) -> Result<i64, InjectError> {
        run::run_at(self.task, self.stub, nr, args)
    }

    /// Runs the syscalls `calls` (number and up to six arguments each) one
    /// after the other in the task, with a single trap back to the engine,
    /// and returns their raw results in order (negative = `-errno`). Every
    /// call runs whatever the results before it; data the calls read or
    /// write must lie in the scratch area below [`Injection::BATCH_TABLE`].
    #[doc(alias = "compel_rpc_call")]
    pub fn syscall_batch(&self, calls: &[(i64, &[u64])]) -> Result<Vec<i64>, InjectError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        self.syscall_batch_start(calls)?.finish()
    }

    /// Starts [`Injection::syscall_batch`] and returns at once: the task runs
    /// the calls while the engine works on; [`RunningBatch::finish`] waits
    /// for them and gives their results. Until then, no other injection may
    /// run and the scratch area must not change. `calls` must not be empty.
    pub fn syscall_batch_start(
        &self,
        calls: &[(i64, &[u64])],
    ) -> Result<RunningBatch<'_, 't>, InjectError> {
        let pid = self.task.pid();
        if calls.len() > Self::MAX_BATCH {
            return Err(InjectError::ScratchRange {
                pid,
                offset: Self::BATCH_TABLE,
                len: calls.len() * CHAIN_ENTRY_LEN,
            });
        }
        let mut table = Vec::with_capacity(calls.len() * CHAIN_ENTRY_LEN);
        for (nr, args) in calls {
            if args.len() > 6 {
                return Err(InjectError::TooManyArgs {
                    pid,
                    nr: *nr,
                    count: args.len(),
                });
            }
            let mut entry = [0u64; CHAIN_ENTRY_LEN / 8];
            entry[0] = *nr as u64;
            entry[1..=args.len()].copy_from_slice(args);
            entry[7] = u64::MAX;
            for w in entry {
                table.extend_from_slice(&w.to_le_bytes());
            }
        }
        let at = self.write_scratch(Self::BATCH_TABLE, &table)?;
        let running = run::start_chain(self.task, self.stub.offset(CHAIN_OFFSET), at, calls.len())?;
        Ok(RunningBatch {
            inj: self,
            running,
            table,
        })
    }

    /// [`Injection::syscall`], with a negative result turned into
    /// [`InjectError::Syscall`].
    pub fn syscall_ok(&self, nr: i64, args: &[u64]) -> Result<u64, InjectError> {
        let ret = self.syscall(nr, args)?;
        self.result_ok(nr, ret)
    }

    /// A raw result of syscall `nr` (from [`Injection::syscall_batch`]) as
    /// [`Injection::syscall_ok`] would give it.
    pub fn result_ok(&self, nr: i64, ret: i64) -> Result<u64, InjectError> {
        errno_result(ret).map_err(|source| InjectError::Syscall {
            pid: self.task.pid(),
            nr,
            source,
        })
    }

    /// Removes the stub (an injected `munmap` from the first executable
    /// mapping other than the stub). Registers and signal mask are already
    /// the task's own.
    #[doc(alias = "compel_cure")]
    pub fn cure(mut self) -> Result<(), InjectError> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), InjectError> {
        self.active = false;
        if !self.owns_stub {
            return Ok(());
        }
        let pid = self.task.pid();
        let len = Self::map_len() as u64;
        let area = area::find_exec_area(pid, Some((self.stub.0, len)))?;
        let ret = area::syscall_at_area(self.task, area, nr::MUNMAP, &[self.stub.0, len])?;
        errno_result(ret)
            .map(drop)
            .map_err(|source| InjectError::StubUnmap {
                pid,
                addr: self.stub,
                source,
            })?;
        tracing::debug!(%pid, stub = %self.stub, "syscall stub removed");
        Ok(())
    }
}

impl Drop for Injection<'_> {
    fn drop(&mut self) {
        if self.active {
            if let Err(err) = self.remove() {
                tracing::error!(pid = %self.task.pid(), stub = %self.stub, error = %err, "cannot remove the injected syscall stub");
            }
        }
    }
}

/// A batch of syscalls running in the task ([`Injection::syscall_batch_start`]).
/// Dropped unfinished, it still waits for the task and puts it back.
pub struct RunningBatch<'i, 't> {
    inj: &'i Injection<'t>,
    running: run::Running<'t>,
    table: Vec<u8>,
}

impl RunningBatch<'_, '_> {
    /// Waits until the task has run every call; returns their raw results
    /// in order (negative = `-errno`).
    pub fn finish(mut self) -> Result<Vec<i64>, InjectError> {
        self.running.finish()?;
        self.inj
            .read_scratch(Injection::BATCH_TABLE, &mut self.table)?;
        Ok(self
            .table
            .chunks_exact(CHAIN_ENTRY_LEN)
            .map(|e| i64::from_le_bytes(e[56..64].try_into().expect("8 bytes")))
            .collect())
    }
}

/// The start of the stub page: the single-syscall stub, then the chain.
fn stub_code() -> Vec<u8> {
    let mut code = SYSCALL_STUB.to_vec();
    code.resize(CHAIN_OFFSET as usize, 0xcc);
    code.extend_from_slice(&SYSCALL_CHAIN);
    code
}

/// Splits a raw syscall result into a value or an `Errno`.
fn errno_result(ret: i64) -> Result<u64, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL)))
    } else {
        Ok(ret as u64)
    }
}
