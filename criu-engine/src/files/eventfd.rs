//! eventfd descriptors (CRIU's `criu/eventfd.c`): the counter and flags of
//! a `files.img` entry of type `EVENTFD`.
//!
//! CRIU keeps only the file status flags; the kernel also shows whether
//! the eventfd counts as a semaphore (`eventfd-semaphore:`), which is kept
//! here as `EFD_SEMAPHORE` (bit 0, never set among an eventfd's status
//! flags since its access mode is always `O_RDWR`).
//!
//! # References
//!
//! - [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html)

use criu_proto::images::{EventfdFileEntry, FownEntry};

use crate::proc::ProcError;

/// `EFD_SEMAPHORE`.
pub const EFD_SEMAPHORE: u32 = 1;

/// The entry of eventfd `id` with status `flags` (without `O_CLOEXEC`)
/// from its fdinfo text.
pub(crate) fn entry(id: u32, flags: u32, fdinfo: &str) -> Result<EventfdFileEntry, ProcError> {
    let mut counter = None;
    let mut semaphore = false;
    for line in fdinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let v = value.trim();
        let bad = || ProcError::parse("fdinfo", format!("{key} {v:?}"));
        match key {
            "eventfd-count" => counter = Some(u64::from_str_radix(v, 16).map_err(|_| bad())?),
            "eventfd-semaphore" => semaphore = v != "0",
            _ => {}
        }
    }
    let counter = counter.ok_or_else(|| ProcError::parse("fdinfo", "no eventfd-count line"))?;
    Ok(EventfdFileEntry {
        id,
        flags: flags | if semaphore { EFD_SEMAPHORE } else { 0 },
        fown: FownEntry::default(),
        counter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_hexadecimal_and_semaphore_is_kept() {
        let text = "pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1039\neventfd-count:               1f\neventfd-id: 1\neventfd-semaphore: 1\n";
        let e = entry(3, 0o4002, text).unwrap();
        assert_eq!(
            (e.id, e.counter, e.flags),
            (3, 0x1f, 0o4002 | EFD_SEMAPHORE)
        );
        let e = entry(3, 2, "eventfd-count: 0\n").unwrap();
        assert_eq!(e.flags, 2);
        assert!(entry(3, 2, "eventfd-id: 1\n").is_err());
    }
}
