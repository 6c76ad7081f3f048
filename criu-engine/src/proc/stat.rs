//! `/proc/<pid>/stat` (CRIU's `parse_pid_stat`).

use super::ProcError;

/// The fields of `stat` the dump uses (numbering of proc_pid_stat(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// (1) pid.
    pub pid: i32,
    /// (2) command name, without parentheses.
    pub comm: String,
    /// (3) state letter.
    pub state: char,
    /// (4) parent pid.
    pub ppid: i32,
    /// (5) process group.
    pub pgid: i32,
    /// (6) session.
    pub sid: i32,
    /// (9) kernel `PF_*` flags.
    pub flags: u32,
    /// (19) nice value.
    pub nice: i32,
    /// (20) number of threads.
    pub num_threads: u32,
    /// (22) start time in clock ticks after boot.
    pub start_time: u64,
    /// (40) real-time priority.
    pub rt_priority: u32,
    /// (41) scheduling policy.
    pub policy: u32,
    /// (26) start of code.
    pub start_code: u64,
    /// (27) end of code.
    pub end_code: u64,
    /// (28) start of the stack.
    pub start_stack: u64,
    /// (45) start of data.
    pub start_data: u64,
    /// (46) end of data.
    pub end_data: u64,
    /// (47) start of the heap.
    pub start_brk: u64,
    /// (48) start of the arguments.
    pub arg_start: u64,
    /// (49) end of the arguments.
    pub arg_end: u64,
    /// (50) start of the environment.
    pub env_start: u64,
    /// (51) end of the environment.
    pub env_end: u64,
    /// (52) exit code.
    pub exit_code: i32,
}

/// Parses the single line of `stat`.
pub fn parse(text: &str) -> Result<ProcStat, ProcError> {
    // The command may hold spaces and parentheses: it ends at the last ')'.
    let open = text
        .find('(')
        .ok_or_else(|| ProcError::parse("stat", "no command"))?;
    let close = text
        .rfind(')')
        .filter(|&close| close > open)
        .ok_or_else(|| ProcError::parse("stat", "no command end"))?;
    let pid = text[..open].trim();
    let comm = &text[open + 1..close];
    // Field 3 onwards; index 0 is field 3.
    let f: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let num = |n: usize| -> Result<i64, ProcError> {
        let s = f
            .get(n - 3)
            .ok_or_else(|| ProcError::parse("stat", format!("field {n} missing")))?;
        s.parse::<i64>()
            .or_else(|_| s.parse::<u64>().map(|v| v as i64))
            .map_err(|_| ProcError::parse("stat", format!("field {n} is {s:?}")))
    };
    let u = |n: usize| num(n).map(|v| v as u64);
    Ok(ProcStat {
        pid: pid
            .parse()
            .map_err(|_| ProcError::parse("stat", format!("pid {pid:?}")))?,
        comm: comm.to_owned(),
        state: f.first().and_then(|s| s.chars().next()).unwrap_or('?'),
        ppid: num(4)? as i32,
        pgid: num(5)? as i32,
        sid: num(6)? as i32,
        flags: u(9)? as u32,
        nice: num(19)? as i32,
        num_threads: u(20)? as u32,
        start_time: u(22)?,
        start_code: u(26)?,
        end_code: u(27)?,
        start_stack: u(28)?,
        rt_priority: u(40)? as u32,
        policy: u(41)? as u32,
        start_data: u(45)?,
        end_data: u(46)?,
        start_brk: u(47)?,
        arg_start: u(48)?,
        arg_end: u(49)?,
        env_start: u(50)?,
        env_end: u(51)?,
        exit_code: num(52)? as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "10346 (cat) R 10342 10342 21916 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 148756 3133440 355 18446744073709551615 94509003636736 94509003656617 140725216204912 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94509003672624 94509003674240 94509469437952 140725216213702 140725216213722 140725216213722 140725216215019 0\n";

    /// Found by the `proc_parsers` fuzz target: a ')' before the '(' made
    /// the command slice run backwards.
    #[test]
    fn a_close_parenthesis_before_the_open_one_is_an_error() {
        assert!(parse("1 ) x ( 2").is_err());
        assert!(parse("41) cp( R 13121").is_err());
    }

    #[test]
    fn parses_sample() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.pid, 10346);
        assert_eq!(s.comm, "cat");
        assert_eq!(s.state, 'R');
        assert_eq!((s.ppid, s.pgid, s.sid), (10342, 10342, 21916));
        assert_eq!(s.flags, 4194304);
        assert_eq!(s.nice, 0);
        assert_eq!(s.num_threads, 1);
        assert_eq!(s.start_time, 148756);
        assert_eq!(s.start_code, 94509003636736);
        assert_eq!(s.end_code, 94509003656617);
        assert_eq!(s.start_stack, 140725216204912);
        assert_eq!(s.start_data, 94509003672624);
        assert_eq!(s.end_data, 94509003674240);
        assert_eq!(s.start_brk, 94509469437952);
        assert_eq!((s.arg_start, s.arg_end), (140725216213702, 140725216213722));
        assert_eq!((s.env_start, s.env_end), (140725216213722, 140725216215019));
        assert_eq!(s.exit_code, 0);
    }

    #[test]
    fn odd_command_names() {
        let text = SAMPLE.replace("(cat)", "(a b) (c)");
        assert_eq!(parse(&text).unwrap().comm, "a b) (c");
        assert!(parse("12 (x) S 1").is_err());
    }
}
