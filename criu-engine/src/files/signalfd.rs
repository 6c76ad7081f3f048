//! signalfd descriptors (CRIU's `criu/signalfd.c`): the signal mask and
//! flags of a `files.img` entry of type `SIGNALFD`.
//!
//! # References
//!
//! - [signalfd(2)](https://man7.org/linux/man-pages/man2/signalfd.2.html)

use criu_proto::images::{FownEntry, SignalfdEntry};

use crate::proc::ProcError;

/// The entry of signalfd `id` with status `flags` from its fdinfo text
/// (`sigmask:` holds bit `n - 1` for signal `n`, in hexadecimal).
pub(crate) fn entry(id: u32, flags: u32, fdinfo: &str) -> Result<SignalfdEntry, ProcError> {
    let mask = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("sigmask:"))
        .ok_or_else(|| ProcError::parse("fdinfo", "no sigmask line"))?
        .trim();
    let sigmask = u64::from_str_radix(mask, 16)
        .map_err(|_| ProcError::parse("fdinfo", format!("sigmask {mask:?}")))?;
    Ok(SignalfdEntry {
        id,
        flags,
        fown: FownEntry::default(),
        sigmask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_hexadecimal() {
        let e = entry(
            4,
            0o4002,
            "pos:\t0\nflags:\t04002\nsigmask:\t0000000000000a00\n",
        )
        .unwrap();
        assert_eq!((e.id, e.flags, e.sigmask), (4, 0o4002, 0xa00));
        assert!(entry(4, 2, "pos:\t0\n").is_err());
        assert!(entry(4, 2, "sigmask:\tzz\n").is_err());
    }
}
