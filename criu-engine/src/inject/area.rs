//! Where the very first injected syscalls run: the first executable mapping
//! of the task, whose first bytes are swapped for the syscall stub and back.
//!
//! CRIU counterparts: `find_executable_area` and `compel_execute_syscall`
//! (with `ptrace_swap_area`) in `compel/src/lib/infect.c`.
//!
//! # References
//!
//! - [proc_pid_maps(5)](https://man7.org/linux/man-pages/man5/proc_pid_maps.5.html)

use super::run::run_at;
use super::InjectError;
use crate::arch::x86_64::SYSCALL_STUB;
use crate::arch::RemoteAddr;
use crate::pstree::RealPid;
use crate::seize::SeizedTask;

/// The start of the first executable mapping in `maps` (the text of
/// `/proc/<pid>/maps`) that is not a kernel-provided one (`[vdso]`,
/// `[vsyscall]`, `[uprobes]`), holds the whole stub, and does not overlap
/// `exclude` (start, length).
pub(super) fn first_exec_area(maps: &str, exclude: Option<(u64, u64)>) -> Option<RemoteAddr> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let perms = fields.next()?;
        let path = fields.nth(3).unwrap_or("");
        let overlaps = exclude.is_some_and(|(a, len)| start < a + len && a < end);
        let fits = end - start >= SYSCALL_STUB.len() as u64;
        (perms.as_bytes().get(2) == Some(&b'x') && !path.starts_with('[') && fits && !overlaps)
            .then_some(RemoteAddr(start))
    })
}

/// [`first_exec_area`] of a live task.
pub(super) fn find_exec_area(
    pid: RealPid,
    exclude: Option<(u64, u64)>,
) -> Result<RemoteAddr, InjectError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| InjectError::Maps { pid, source })?;
    first_exec_area(&maps, exclude).ok_or(InjectError::NoExecArea { pid })
}

/// Runs `body` with the stub written over the first bytes at `area`, and
/// puts the original bytes back whatever `body` returned.
pub(super) fn with_stub_at<T>(
    task: &SeizedTask,
    area: RemoteAddr,
    body: impl FnOnce(RemoteAddr) -> Result<T, InjectError>,
) -> Result<T, InjectError> {
    let mut orig = [0u8; SYSCALL_STUB.len()];
    task.read_mem(area, &mut orig)?;
    task.write_mem(area, &SYSCALL_STUB)?;
    let result = body(area);
    let restored = task.write_mem(area, &orig);
    match (result, restored) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), restored) => {
            if let Err(err) = restored {
                tracing::error!(pid = %task.pid(), %area, error = %err, "cannot restore code under the injected stub");
            }
            Err(e)
        }
    }
}

/// Runs one syscall from a stub swapped in at `area`.
pub(super) fn syscall_at_area(
    task: &SeizedTask,
    area: RemoteAddr,
    nr: i64,
    args: &[u64],
) -> Result<i64, InjectError> {
    with_stub_at(task, area, |ip| run_at(task, ip, nr, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 123 /usr/bin/cat
55d0c0a02000-55d0c0a07000 r-xp 00002000 08:01 123 /usr/bin/cat
7f0000000000-7f0000001000 r-xp 00000000 00:00 0
7ffd1e5f6000-7ffd1e5f8000 r-xp 00000000 00:00 0 [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";

    #[test]
    fn picks_the_first_exec_mapping() {
        assert_eq!(
            first_exec_area(MAPS, None),
            Some(RemoteAddr(0x55d0_c0a0_2000))
        );
    }

    #[test]
    fn skips_the_excluded_range_and_kernel_mappings() {
        let cat_text = Some((0x55d0_c0a0_3000, 0x1000));
        assert_eq!(
            first_exec_area(MAPS, cat_text),
            Some(RemoteAddr(0x7f00_0000_0000))
        );
        let only_special = "7ffd1e5f6000-7ffd1e5f8000 r-xp 00000000 00:00 0 [vdso]\n";
        assert_eq!(first_exec_area(only_special, None), None);
    }
}
