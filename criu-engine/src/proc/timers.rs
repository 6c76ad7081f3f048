//! `/proc/<pid>/timers`: the POSIX timers of a process (CRIU's
//! `parse_posix_timers` in `criu/proc_parse.c`).
//!
//! Four lines per timer:
//!
//! ```text
//! ID: 3
//! signal: 41/0000000000000077
//! notify: signal/tid.20061
//! ClockID: 7
//! ```
//!
//! `notify` is `signal`, `none` or `thread`, then `pid` or `tid` (a
//! `SIGEV_THREAD_ID` timer) and the target as seen from our pid namespace.

use super::ProcError;

/// `SIGEV_SIGNAL`, `SIGEV_NONE`, `SIGEV_THREAD`, `SIGEV_THREAD_ID`.
pub const SIGEV_SIGNAL: u32 = 0;
/// No notification.
pub const SIGEV_NONE: u32 = 1;
/// A thread started by the C library (a plain signal for the kernel).
pub const SIGEV_THREAD: u32 = 2;
/// A signal to one thread.
pub const SIGEV_THREAD_ID: u32 = 4;

/// One timer as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcTimer {
    /// Kernel timer id.
    pub id: u32,
    /// Signal sent on expiry.
    pub signo: u32,
    /// `sigev_value` (as a pointer).
    pub sival: u64,
    /// `SIGEV_*` notification kind.
    pub notify: u32,
    /// Target thread of a `SIGEV_THREAD_ID` timer (our pid namespace).
    pub thread: Option<i32>,
    /// Clock id.
    pub clock: u32,
}

fn field<'a>(line: Option<&'a str>, key: &str) -> Result<&'a str, ProcError> {
    line.and_then(|l| l.strip_prefix(key))
        .map(str::trim)
        .ok_or_else(|| ProcError::parse("timers", format!("expected {key:?}")))
}

/// Parses the file, in its order.
pub fn parse(text: &str) -> Result<Vec<ProcTimer>, ProcError> {
    let bad = |what: &str| ProcError::parse("timers", what.to_owned());
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut out = Vec::new();
    while let Some(first) = lines.next() {
        let id = field(Some(first), "ID:")?
            .parse()
            .map_err(|_| bad("timer id"))?;
        let (signo, sival) = field(lines.next(), "signal:")?
            .split_once('/')
            .ok_or_else(|| bad("signal line"))?;
        let signo = signo.parse().map_err(|_| bad("signal number"))?;
        let sival = if sival == "(null)" {
            0
        } else {
            u64::from_str_radix(sival.trim_start_matches("0x"), 16)
                .map_err(|_| bad("signal value"))?
        };
        let (how, target) = field(lines.next(), "notify:")?
            .split_once('/')
            .ok_or_else(|| bad("notify line"))?;
        let (kind, target) = target.split_once('.').ok_or_else(|| bad("notify target"))?;
        let target: i32 = target.parse().map_err(|_| bad("notify target"))?;
        let (notify, thread) = if kind.starts_with('t') {
            (SIGEV_THREAD_ID, Some(target))
        } else {
            let notify = match how.as_bytes().first() {
                Some(b's') => SIGEV_SIGNAL,
                Some(b't') => SIGEV_THREAD,
                _ => SIGEV_NONE,
            };
            (notify, None)
        };
        let clock = field(lines.next(), "ClockID:")?
            .parse()
            .map_err(|_| bad("clock id"))?;
        out.push(ProcTimer {
            id,
            signo,
            sival,
            notify,
            thread,
            clock,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ID: 3
signal: 41/0000000000000077
notify: signal/tid.20061
ClockID: 7
ID: 2
signal: 0/0000000000000000
notify: none/pid.20059
ClockID: 0
ID: 0
signal: 39/0000000000000abc
notify: signal/pid.20059
ClockID: 1
";

    #[test]
    fn parses_every_kind() {
        let t = parse(SAMPLE).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0],
            ProcTimer {
                id: 3,
                signo: 41,
                sival: 0x77,
                notify: SIGEV_THREAD_ID,
                thread: Some(20061),
                clock: 7
            }
        );
        assert_eq!((t[1].notify, t[1].thread), (SIGEV_NONE, None));
        assert_eq!((t[2].id, t[2].sival, t[2].clock), (0, 0xabc, 1));
        assert_eq!(t[2].notify, SIGEV_SIGNAL);
    }

    #[test]
    fn empty_and_truncated() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("ID: 1\nsignal: 14/0\n").is_err());
    }
}
