//! `/proc/<pid>/status` (CRIU's `parse_pid_status`).

use super::{hex, ProcError};

/// The fields of `status` the dump uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `State:` letter.
    pub state: char,
    /// `Umask:` (absent on very old kernels).
    pub umask: Option<u32>,
    /// `TracerPid:`.
    pub tracer_pid: i32,
    /// `Uid:` real, effective, saved, filesystem.
    pub uid: [u32; 4],
    /// `Gid:` real, effective, saved, filesystem.
    pub gid: [u32; 4],
    /// `Groups:` supplementary groups.
    pub groups: Vec<u32>,
    /// `Threads:`.
    pub threads: u32,
    /// `SigBlk:` (of the thread whose status this is).
    pub sig_blk: u64,
    /// `CapInh:`.
    pub cap_inh: u64,
    /// `CapPrm:`.
    pub cap_prm: u64,
    /// `CapEff:`.
    pub cap_eff: u64,
    /// `CapBnd:`.
    pub cap_bnd: u64,
    /// `CapAmb:`.
    pub cap_amb: u64,
    /// `NoNewPrivs:`.
    pub no_new_privs: bool,
    /// `Seccomp:` mode (0 disabled, 1 strict, 2 filter).
    pub seccomp: u32,
}

fn ids(line: &str) -> Result<[u32; 4], ProcError> {
    let v: Vec<u32> = line
        .split_ascii_whitespace()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| ProcError::parse("status", format!("ids {line:?}")))?;
    v.try_into()
        .map_err(|_| ProcError::parse("status", format!("ids {line:?}")))
}

fn dec<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ProcError> {
    v.parse()
        .map_err(|_| ProcError::parse("status", format!("{key} {v:?}")))
}

/// Parses a whole `status` file.
pub fn parse(text: &str) -> Result<ProcStatus, ProcError> {
    let mut s = ProcStatus::default();
    let mut seen_uid = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let v = value.trim();
        match key {
            "State" => s.state = v.chars().next().unwrap_or('?'),
            "Umask" => {
                s.umask = Some(
                    u32::from_str_radix(v, 8)
                        .map_err(|_| ProcError::parse("status", format!("Umask {v:?}")))?,
                )
            }
            "TracerPid" => s.tracer_pid = dec(key, v)?,
            "Uid" => {
                s.uid = ids(v)?;
                seen_uid = true;
            }
            "Gid" => s.gid = ids(v)?,
            "Groups" => {
                s.groups = v
                    .split_ascii_whitespace()
                    .map(|g| dec(key, g))
                    .collect::<Result<_, _>>()?
            }
            "Threads" => s.threads = dec(key, v)?,
            "SigBlk" => s.sig_blk = hex("status", v)?,
            "CapInh" => s.cap_inh = hex("status", v)?,
            "CapPrm" => s.cap_prm = hex("status", v)?,
            "CapEff" => s.cap_eff = hex("status", v)?,
            "CapBnd" => s.cap_bnd = hex("status", v)?,
            "CapAmb" => s.cap_amb = hex("status", v)?,
            "NoNewPrivs" => s.no_new_privs = v == "1",
            "Seccomp" => s.seccomp = dec(key, v)?,
            _ => {}
        }
    }
    if !seen_uid {
        return Err(ProcError::parse("status", "no Uid line"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Name:\tcat
Umask:\t0022
State:\tS (sleeping)
Tgid:\t10347
TracerPid:\t0
Uid:\t0\t1\t2\t3
Gid:\t4\t5\t6\t7
FDSize:\t256
Groups:\t 10 20
Threads:\t1
SigBlk:\t0000000000000800
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
";

    #[test]
    fn parses_sample() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.umask, Some(0o22));
        assert_eq!(s.uid, [0, 1, 2, 3]);
        assert_eq!(s.gid, [4, 5, 6, 7]);
        assert_eq!(s.groups, vec![10, 20]);
        assert_eq!(s.threads, 1);
        assert_eq!(s.sig_blk, 0x800);
        assert_eq!(s.cap_prm, 0x1fffeffffff);
        assert_eq!(s.cap_inh, 0);
        assert!(s.no_new_privs);
        assert_eq!(s.seccomp, 2);
    }

    #[test]
    fn empty_groups_and_missing_uid() {
        let s = parse(&SAMPLE.replace("Groups:\t 10 20", "Groups:\t ")).unwrap();
        assert!(s.groups.is_empty());
        assert!(parse("Name:\tx\n").is_err());
    }
}
