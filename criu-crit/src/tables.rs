//! Name tables behind `crit --pretty`: bit-flag names for fields with the
//! `(criu).flags` option and value names for `(criu).dict` fields (the
//! tables of CRIU's `lib/pycriu/images/pb2dict.py`, written from the kernel
//! and CRIU constants they describe).
//!
//! A flags value prints as the names of its set bits in table order joined
//! with `" | "`, followed by the leftover bits in hex; `0` prints as `""`.

/// One bit-flag table.
pub type FlagTable = &'static [(&'static str, u64)];
/// One value-name table.
pub type DictTable = &'static [(u64, &'static str)];

const MMAP_PROT: FlagTable = &[("PROT_READ", 0x1), ("PROT_WRITE", 0x2), ("PROT_EXEC", 0x4)];

const MMAP_FLAGS: FlagTable = &[
    ("MAP_SHARED", 0x1),
    ("MAP_PRIVATE", 0x2),
    ("MAP_DROPPABLE", 0x8),
    ("MAP_ANON", 0x20),
    ("MAP_GROWSDOWN", 0x100),
];

const MMAP_STATUS: FlagTable = &[
    ("VMA_AREA_NONE", 0),
    ("VMA_AREA_REGULAR", 1 << 0),
    ("VMA_AREA_STACK", 1 << 1),
    ("VMA_AREA_VSYSCALL", 1 << 2),
    ("VMA_AREA_VDSO", 1 << 3),
    ("VMA_AREA_HEAP", 1 << 5),
    ("VMA_FILE_PRIVATE", 1 << 6),
    ("VMA_FILE_SHARED", 1 << 7),
    ("VMA_ANON_SHARED", 1 << 8),
    ("VMA_ANON_PRIVATE", 1 << 9),
    ("VMA_AREA_SYSVIPC", 1 << 10),
    ("VMA_AREA_SOCKET", 1 << 11),
    ("VMA_AREA_VVAR", 1 << 12),
    ("VMA_AREA_AIORING", 1 << 13),
    ("VMA_AREA_MEMFD", 1 << 14),
    ("VMA_AREA_SHSTK", 1 << 15),
    ("VMA_AREA_UPROBES", 1 << 17),
    ("VMA_UNSUPP", 1 << 31),
];

const RFILE_FLAGS: FlagTable = &[
    ("O_WRONLY", 0o1),
    ("O_RDWR", 0o2),
    ("O_CREAT", 0o100),
    ("O_EXCL", 0o200),
    ("O_NOCTTY", 0o400),
    ("O_TRUNC", 0o1000),
    ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000),
    ("O_DSYNC", 0o10000),
    ("FASYNC", 0o20000),
    ("O_DIRECT", 0o40000),
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_NOFOLLOW", 0o400000),
    ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000),
];

const SEALS_FLAGS: FlagTable = &[
    ("F_SEAL_SEAL", 0x1),
    ("F_SEAL_SHRINK", 0x2),
    ("F_SEAL_GROW", 0x4),
    ("F_SEAL_WRITE", 0x8),
    ("F_SEAL_FUTURE_WRITE", 0x10),
];

const PMAP_FLAGS: FlagTable = &[("PE_PARENT", 1), ("PE_LAZY", 2), ("PE_PRESENT", 4)];

/// The flags table named by a `(criu).flags` option (`"mmap.prot"`, ...).
pub fn flag_table(name: &str) -> Option<FlagTable> {
    Some(match name {
        "mmap.prot" => MMAP_PROT,
        "mmap.flags" => MMAP_FLAGS,
        "mmap.status" => MMAP_STATUS,
        "rfile.flags" => RFILE_FLAGS,
        "pmap.flags" => PMAP_FLAGS,
        "seals.flags" => SEALS_FLAGS,
        _ => return None,
    })
}

const TASK_STATE: DictTable = &[(1, "Alive"), (3, "Zombie"), (6, "Stopped")];
const SK_FAMILY: DictTable = &[
    (1, "UNIX"),
    (2, "INET"),
    (10, "INET6"),
    (16, "NETLINK"),
    (17, "PACKET"),
];
const SK_TYPE: DictTable = &[
    (1, "STREAM"),
    (2, "DGRAM"),
    (3, "RAW"),
    (5, "SEQPACKET"),
    (10, "PACKET"),
];
const SK_STATE: DictTable = &[
    (1, "ESTABLISHED"),
    (2, "SYN_SENT"),
    (3, "SYN_RECV"),
    (4, "FIN_WAIT1"),
    (5, "FIN_WAIT2"),
    (6, "TIME_WAIT"),
    (7, "CLOSE"),
    (8, "CLOSE_WAIT"),
    (9, "LAST_ACK"),
    (10, "LISTEN"),
];
const SK_PROTO: DictTable = &[(0, "IP"), (6, "TCP"), (17, "UDP"), (136, "UDPLITE")];

/// The value-name table of a `(criu).dict` option for the field `field`
/// (`crit` keys its dictionaries by field name).
pub fn dict_table(dict: &str, field: &str) -> Option<DictTable> {
    Some(match (dict, field) {
        ("gen", "task_state") => TASK_STATE,
        ("sk", "family") => SK_FAMILY,
        ("sk", "type") => SK_TYPE,
        ("sk", "state") => SK_STATE,
        ("sk", "proto") => SK_PROTO,
        _ => return None,
    })
}

/// Names the set bits of `value`: `"PROT_READ | PROT_WRITE"`, leftover bits
/// as `0x..` at the end, `""` for zero.
pub fn flags_to_string(value: u64, table: FlagTable) -> String {
    let mut parts: Vec<String> = table
        .iter()
        .filter(|(_, bit)| value & bit != 0)
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let known = table.iter().fold(0, |acc, (_, bit)| acc | bit);
    let rest = value & !known;
    if rest != 0 {
        parts.push(format!("0x{rest:x}"));
    }
    parts.join(" | ")
}

/// Parses `"A | B | 0x10"` back into a number; parts that are not names
/// are read as integers with [`crate::number::parse_int`]. Returns `None` for
/// a malformed part.
pub fn flags_from_string(text: &str, table: FlagTable) -> Option<i128> {
    if text.is_empty() {
        return Some(0);
    }
    text.split('|').map(str::trim).try_fold(0i128, |acc, part| {
        let value = match table.iter().find(|(name, _)| *name == part) {
            Some((_, bit)) => i128::from(*bit),
            None => crate::number::parse_int(part)?,
        };
        Some(acc + value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_and_parse() {
        assert_eq!(flags_to_string(0, MMAP_PROT), "");
        assert_eq!(flags_to_string(5, MMAP_PROT), "PROT_READ | PROT_EXEC");
        assert_eq!(
            flags_to_string(0x1003, MMAP_PROT),
            "PROT_READ | PROT_WRITE | 0x1000"
        );
        assert_eq!(flags_to_string(0x8000, RFILE_FLAGS), "O_LARGEFILE");
        assert_eq!(
            flags_to_string(0x201, MMAP_STATUS),
            "VMA_AREA_REGULAR | VMA_ANON_PRIVATE"
        );
        assert_eq!(flags_from_string("", MMAP_PROT), Some(0));
        assert_eq!(
            flags_from_string("PROT_READ | 0x1000", MMAP_PROT),
            Some(0x1001)
        );
        assert_eq!(
            flags_from_string("PE_LAZY | PE_PRESENT", PMAP_FLAGS),
            Some(6)
        );
        assert_eq!(flags_from_string("BOGUS", PMAP_FLAGS), None);
    }

    #[test]
    fn dicts_by_field() {
        assert_eq!(dict_table("gen", "task_state").unwrap()[0], (1, "Alive"));
        assert!(dict_table("sk", "task_state").is_none());
        assert!(flag_table("nope").is_none());
    }
}
