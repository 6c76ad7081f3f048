//! Integer and address text forms used by `crit`: Python's `int(text, 0)`,
//! `"0x%x"`, device numbers and IP addresses (the conversions of CRIU's
//! `lib/pycriu/images/pb2dict.py`).

use std::net::IpAddr;

/// Parses an integer the way Python's `int(text, 0)` does: optional sign,
/// `0x`/`0o`/`0b` prefixes, `_` between digits, surrounding whitespace; a
/// decimal number must not have leading zeros.
pub fn parse_int(text: &str) -> Option<i128> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &t[2..]),
        Some("0o") => (8, &t[2..]),
        Some("0b") => (2, &t[2..]),
        _ => (10, t),
    };
    let digits = digits
        .strip_prefix('_')
        .filter(|_| radix != 10)
        .unwrap_or(digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if radix == 10 && clean.len() > 1 && clean.starts_with('0') && clean.bytes().any(|b| b != b'0')
    {
        return None;
    }
    let value = i128::from_str_radix(&clean, radix).ok()?;
    Some(if negative { -value } else { value })
}

/// Python's `"0x%x" % value`; note that a negative value gives `0x-5`.
pub fn hex(value: i128) -> String {
    if value < 0 {
        format!("0x-{:x}", value.unsigned_abs())
    } else {
        format!("0x{value:x}")
    }
}

/// Bits of the minor number in the kernel's `dev_t` encoding used by `dev`
/// fields.
const MINOR_BITS: u32 = 20;

/// `"major:minor"` of a device number; `old` selects glibc's `makedev`
/// layout (`odev` fields) instead of the kernel's 12:20 split.
pub fn dev_to_string(value: u64, old: bool) -> String {
    let (major, minor) = if old {
        (
            ((value >> 8) & 0xfff) | ((value >> 32) & !0xfff),
            (value & 0xff) | ((value >> 12) & !0xff),
        )
    } else {
        (value >> MINOR_BITS, value & ((1 << MINOR_BITS) - 1))
    };
    format!("{major}:{minor}")
}

/// Parses `"major:minor"` back into a device number.
pub fn dev_from_string(text: &str, old: bool) -> Option<i128> {
    let (major, minor) = text.split_once(':')?;
    let major = u64::try_from(parse_int(major)?).ok()?;
    let minor = u64::try_from(parse_int(minor)?).ok()?;
    let value = if old {
        ((major & 0xfff) << 8)
            | ((major & !0xfff).checked_shl(32)?)
            | (minor & 0xff)
            | ((minor & !0xff) << 12)
    } else {
        major.checked_shl(MINOR_BITS)? | minor
    };
    Some(i128::from(value))
}

/// Renders the words of an `ipadd` field (network byte order in host
/// words): one word is IPv4, four (or more; extra words ignored) are IPv6 in
/// Python's compressed form. Other lengths give `None`.
pub fn words_to_ip(words: &[u32]) -> Option<String> {
    match words {
        [v4] => {
            let b = v4.to_le_bytes();
            Some(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
        }
        [a, b, c, d, ..] => {
            let mut groups = [0u16; 8];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                let be = u32::from_be_bytes(w.to_le_bytes());
                groups[2 * i] = (be >> 16) as u16;
                groups[2 * i + 1] = be as u16;
            }
            Some(compress_v6(&groups))
        }
        _ => None,
    }
}

/// IPv6 text as Python 3.11's `IPv6Address.compressed`: hex groups without
/// leading zeros, the first longest run of two or more zero groups as `::`.
fn compress_v6(groups: &[u16; 8]) -> String {
    let (mut best_start, mut best_len) = (0, 0);
    let mut i = 0;
    while i < 8 {
        if groups[i] == 0 {
            let start = i;
            while i < 8 && groups[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                (best_start, best_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    let text = |g: &[u16]| {
        g.iter()
            .map(|x| format!("{x:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best_len < 2 {
        return text(groups);
    }
    format!(
        "{}::{}",
        text(&groups[..best_start]),
        text(&groups[best_start + best_len..])
    )
}

/// Parses an IPv4 or IPv6 address into `ipadd` words.
pub fn ip_to_words(text: &str) -> Option<Vec<u32>> {
    let swap = |v: u32| u32::from_le_bytes(v.to_be_bytes());
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(vec![swap(u32::from(a))]),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            Some((0..4).rev().map(|i| swap((v >> (32 * i)) as u32)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int() {
        assert_eq!(parse_int("0x1f"), Some(31));
        assert_eq!(parse_int(" 42 "), Some(42));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("0o17"), Some(15));
        assert_eq!(parse_int("0b101"), Some(5));
        assert_eq!(parse_int("1_000"), Some(1000));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("000"), Some(0));
        assert_eq!(parse_int("012"), None);
        assert_eq!(parse_int("0x"), None);
        assert_eq!(parse_int("abc"), None);
        assert_eq!(parse_int("18446744073709551615"), Some(u64::MAX.into()));
    }

    #[test]
    fn hex_and_dev() {
        assert_eq!(hex(0), "0x0");
        assert_eq!(hex(255), "0xff");
        assert_eq!(hex(-5), "0x-5");
        assert_eq!(dev_to_string((8 << 20) | 3, false), "8:3");
        assert_eq!(dev_from_string("8:3", false), Some((8 << 20) | 3));
        assert_eq!(dev_to_string(0x0803, true), "8:3");
        assert_eq!(
            dev_from_string("259:65537", true).map(|v| dev_to_string(v as u64, true)),
            Some("259:65537".to_owned())
        );
    }

    #[test]
    fn ip_words() {
        let v4 = ip_to_words("127.0.0.1").unwrap();
        assert_eq!(v4, vec![0x0100_007f]);
        assert_eq!(words_to_ip(&v4).unwrap(), "127.0.0.1");
        for (text, shown) in [
            ("::1", "::1"),
            ("fe80::1:2", "fe80::1:2"),
            ("2001:db8::", "2001:db8::"),
            ("::", "::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("::ffff:102:304", "::ffff:102:304"),
        ] {
            let words = ip_to_words(text).unwrap();
            assert_eq!(words.len(), 4);
            assert_eq!(words_to_ip(&words).unwrap(), shown);
        }
        assert_eq!(
            words_to_ip(&ip_to_words("::ffff:1.2.3.4").unwrap()).unwrap(),
            "::ffff:102:304"
        );
        assert_eq!(words_to_ip(&[1, 2]), None);
    }
}
