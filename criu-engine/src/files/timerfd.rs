//! timerfd descriptors (CRIU's `criu/timerfd.c` and `parse_timerfd` of
//! `criu/proc_parse.c`): clock, settime flags, remaining time, interval and
//! expirations not read yet (`ticks`) of a `files.img` entry of type
//! `TIMERFD`.
//!
//! The remaining time is relative, as the kernel shows it; the restore
//! arms the timer again at its very end (adding the current time to it
//! for an absolute timer) and puts the ticks back with
//! `TFD_IOC_SET_TICKS`.
//!
//! # References
//!
//! - [timerfd_create(2)](https://man7.org/linux/man-pages/man2/timerfd_create.2.html)

use criu_proto::images::{FownEntry, TimerfdEntry};

use crate::proc::ProcError;

/// Clocks a timerfd can be restored on (CRIU's `verify_timerfd`).
pub const CLOCKS: [i32; 3] = [
    libc::CLOCK_REALTIME,
    libc::CLOCK_MONOTONIC,
    libc::CLOCK_BOOTTIME,
];

fn pair(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The entry of timerfd `id` with status `flags` from its fdinfo text.
pub(crate) fn entry(id: u32, flags: u32, fdinfo: &str) -> Result<TimerfdEntry, ProcError> {
    let mut e = TimerfdEntry {
        id,
        flags,
        fown: FownEntry::default(),
        ..Default::default()
    };
    let mut seen = 0u8;
    for line in fdinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let v = value.trim();
        let bad = || ProcError::parse("fdinfo", format!("{key} {v:?}"));
        match key {
            "clockid" => {
                e.clockid = v.parse().map_err(|_| bad())?;
                seen |= 1;
            }
            "ticks" => {
                e.ticks = v.parse().map_err(|_| bad())?;
                seen |= 2;
            }
            "settime flags" => {
                e.settime_flags = u32::from_str_radix(v, 8).map_err(|_| bad())?;
                seen |= 4;
            }
            "it_value" => {
                (e.vsec, e.vnsec) = pair(v).ok_or_else(bad)?;
                seen |= 8;
            }
            "it_interval" => {
                (e.isec, e.insec) = pair(v).ok_or_else(bad)?;
                seen |= 16;
            }
            _ => {}
        }
    }
    if seen != 31 {
        return Err(ProcError::parse("fdinfo", "incomplete timerfd lines"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_read() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nclockid: 1\nticks: 4\nsettime flags: 01\nit_value: (2, 999560691)\nit_interval: (1, 500)\n";
        let e = entry(7, 2, text).unwrap();
        assert_eq!(
            (
                e.clockid,
                e.ticks,
                e.settime_flags,
                e.vsec,
                e.vnsec,
                e.isec,
                e.insec
            ),
            (1, 4, 1, 2, 999_560_691, 1, 500)
        );
        assert!(entry(7, 2, "clockid: 1\nticks: 0\n").is_err());
        assert!(entry(7, 2, &text.replace("(1, 500)", "(1 500)")).is_err());
    }
}
