//! Argument values as upstream reads them: C `atol()`/`sscanf()` numbers, sizes with suffixes, CPU
//! capability lists, `fd[N]:KEY`, `NS:FILE[,EXTRA]` and unix socket inode lists.

use super::{cpu_cap, InheritFd, JoinNs};

pub(super) fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

/// C `atol()`: leading blanks, an optional sign, then as many digits as there are; 0 when none.
pub(super) fn c_atol(s: &str) -> i64 {
    leading_int(s).map_or(0, |(v, _)| v)
}

/// The integer at the start of `s` (after blanks), and whether at least one digit was read.
pub(super) fn leading_int(s: &str) -> Option<(i64, usize)> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let mag = digits[..n].bytes().fold(0i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some((if neg { -mag } else { mag }, n))
}

/// `sscanf(s, "%d")`: an integer must be there.
pub(super) fn scan_int(s: &str) -> Option<i32> {
    leading_int(s).map(|(v, _)| clamp_i32(v))
}

/// Upstream `parse_size()`: a `K`, `M` or `G` anywhere multiplies the leading number.
pub(super) fn parse_size(s: &str) -> u64 {
    let n = c_atol(s);
    let mult: i64 = if s.contains('K') {
        1 << 10
    } else if s.contains('M') {
        1 << 20
    } else if s.contains('G') {
        1 << 30
    } else {
        1
    };
    n.saturating_mul(mult) as u64
}

/// Upstream `parse_cpu_cap()`: no argument means everything (plus the image); otherwise a list of
/// `fpu`, `cpu`, `ins`, `all`, `none`, where `^` negates and `,` resets the negation.
pub(super) fn parse_cpu_cap(current: u32, arg: Option<&str>) -> Option<u32> {
    let Some(mut rest) = arg else {
        return Some(current | cpu_cap::ALL | cpu_cap::IMAGE);
    };
    let mut caps = current;
    let mut inverse = false;
    let set = |caps: &mut u32, bits: u32, inverse: bool| {
        if inverse {
            *caps &= !bits;
        } else {
            *caps |= bits;
        }
    };
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('^') {
            inverse = !inverse;
            rest = r;
        } else if let Some(r) = rest.strip_prefix(',') {
            inverse = false;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("fpu") {
            set(&mut caps, cpu_cap::FPU, inverse);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("all") {
            set(&mut caps, cpu_cap::ALL, inverse);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("none") {
            caps = if inverse { cpu_cap::ALL } else { cpu_cap::NONE };
            rest = r;
        } else if let Some(r) = rest.strip_prefix("cpu") {
            set(&mut caps, cpu_cap::CPU, inverse);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("ins") {
            set(&mut caps, cpu_cap::INS, inverse);
            rest = r;
        } else {
            return None;
        }
    }
    if caps != cpu_cap::NONE {
        caps |= cpu_cap::IMAGE;
    }
    Some(caps)
}

/// Upstream `unix_sk_ids_parse()`: comma-separated non-zero inode numbers.
pub(super) fn parse_unix_inodes(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if digits.len() != part.len() {
            return None;
        }
        match digits.parse::<u32>() {
            Ok(ino) if ino != 0 => out.push(ino),
            _ => return None,
        }
    }
    Some(out)
}

/// Upstream `inherit_fd_parse()`: `fd[N]:KEY` with N >= 0 and a non-empty key.
pub(super) fn parse_inherit_fd(v: &str) -> Option<InheritFd> {
    let rest = v.strip_prefix("fd[")?;
    let (num, key) = rest.split_once("]:")?;
    let fd = num.parse::<i32>().ok().filter(|fd| *fd >= 0)?;
    (!key.is_empty()).then(|| InheritFd {
        fd,
        key: key.to_owned(),
    })
}

/// Upstream `parse_join_ns()` + the namespace names `join_ns_add()` knows (`pid` is refused).
pub(super) fn parse_join_ns(v: &str) -> Option<JoinNs> {
    let (ns, rest) = v.split_once(':')?;
    if !matches!(ns, "net" | "uts" | "time" | "ipc" | "user" | "mnt") {
        return None;
    }
    let (ns_file, extra) = match rest.split_once(',') {
        Some((f, e)) => (f, Some(e.to_owned())),
        None => (rest, None),
    };
    Some(JoinNs {
        ns: ns.to_owned(),
        ns_file: ns_file.to_owned(),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_cap_lists_follow_upstream_rules() {
        let d = cpu_cap::DEFAULT;
        assert_eq!(parse_cpu_cap(d, None), Some(cpu_cap::ALL | cpu_cap::IMAGE));
        assert_eq!(parse_cpu_cap(d, Some("none")), Some(cpu_cap::NONE));
        assert_eq!(
            parse_cpu_cap(d, Some("^fpu")),
            Some(cpu_cap::INS | cpu_cap::IMAGE)
        );
        assert_eq!(
            parse_cpu_cap(d, Some("^fpu,cpu")),
            Some(cpu_cap::INS | cpu_cap::CPU | cpu_cap::IMAGE)
        );
        assert_eq!(
            parse_cpu_cap(d, Some("^none")),
            Some(cpu_cap::ALL | cpu_cap::IMAGE)
        );
        assert_eq!(parse_cpu_cap(d, Some("bogus")), None);
    }

    #[test]
    fn numbers_are_read_like_libc() {
        assert_eq!(c_atol("  42abc"), 42);
        assert_eq!(c_atol("-7"), -7);
        assert_eq!(c_atol("erbosity=0"), 0);
        assert_eq!(scan_int("x"), None);
        assert_eq!(parse_size("4K"), 4096);
        assert_eq!(parse_size("2M"), 2 << 20);
        assert_eq!(parse_size("1G"), 1 << 30);
        assert_eq!(parse_size("100"), 100);
    }

    #[test]
    fn structured_arguments_parse() {
        assert_eq!(
            parse_inherit_fd("fd[7]:pipe:[123]"),
            Some(InheritFd {
                fd: 7,
                key: "pipe:[123]".into()
            })
        );
        assert_eq!(parse_inherit_fd("fd[-1]:x"), None);
        assert_eq!(parse_inherit_fd("fd[3]:"), None);
        assert_eq!(parse_unix_inodes("12,34"), Some(vec![12, 34]));
        assert_eq!(parse_unix_inodes("0"), None);
        assert_eq!(parse_join_ns("pid:/proc/1/ns/pid"), None);
        assert_eq!(
            parse_join_ns("user:123,1000,1000"),
            Some(JoinNs {
                ns: "user".into(),
                ns_file: "123".into(),
                extra: Some("1000,1000".into())
            })
        );
    }
}
