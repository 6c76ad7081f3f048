//! Quoted-printable, the `unix_name` conversion `crit` applies to unix
//! socket names (Python's `quopri.encodestring` / `quopri.decodestring`,
//! used by the `conv` option in CRIU's `lib/pycriu/images/pb2dict.py`).
//!
//! Encoding follows `binascii.b2a_qp` in text mode: bytes above `~`, `=`,
//! control characters other than tab/CR/LF, a tab or space ending the data or
//! a line, and a lone `.` at the start of a line become `=XX`; lines are
//! soft-broken with `=\n` before reaching 76 characters.

const MAX_LINE: usize = 76;
const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn needs_quoting(data: &[u8], i: usize, line_len: usize) -> bool {
    let c = data[i];
    let next = data.get(i + 1).copied();
    c > 126
        || c == b'='
        || (c == b'.'
            && line_len == 0
            && matches!(next, None | Some(b'\n') | Some(b'\r') | Some(0)))
        || ((c == b'\t' || c == b' ') && next.is_none())
        || (c < 33 && c != b'\r' && c != b'\n' && c != b'\t' && c != b' ')
}

/// Encodes `data` as quoted-printable text.
pub fn encode(data: &[u8]) -> String {
    let crlf = data
        .iter()
        .position(|&c| c == b'\n')
        .is_some_and(|p| p > 0 && data[p - 1] == b'\r');
    let newline: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out: Vec<u8> = Vec::with_capacity(data.len() * 3);
    let mut line_len = 0;
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        if needs_quoting(data, i, line_len) {
            if line_len + 3 >= MAX_LINE {
                out.push(b'=');
                out.extend_from_slice(newline);
                line_len = 0;
            }
            out.extend_from_slice(&[b'=', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
            line_len += 3;
            i += 1;
        } else if c == b'\n' || (c == b'\r' && data.get(i + 1) == Some(&b'\n')) {
            line_len = 0;
            if let Some(&last @ (b' ' | b'\t')) = out.last() {
                out.pop();
                out.extend_from_slice(&[
                    b'=',
                    HEX[usize::from(last >> 4)],
                    HEX[usize::from(last & 15)],
                ]);
            }
            out.extend_from_slice(newline);
            i += if c == b'\r' { 2 } else { 1 };
        } else {
            if i + 1 != data.len() && data[i + 1] != b'\n' && line_len + 1 >= MAX_LINE {
                out.push(b'=');
                out.extend_from_slice(newline);
                line_len = 0;
            }
            line_len += 1;
            out.push(c);
            i += 1;
        }
    }
    // Every byte above 126 was quoted, so the output is ASCII.
    out.into_iter().map(char::from).collect()
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Decodes quoted-printable text; malformed escapes are kept literally.
pub fn decode(text: &str) -> Vec<u8> {
    let data = text.as_bytes();
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'=' {
            out.push(data[i]);
            i += 1;
            continue;
        }
        i += 1;
        let Some(&c) = data.get(i) else {
            break;
        };
        if c == b'\n' || c == b'\r' {
            while i < data.len() && data[i] != b'\n' {
                i += 1;
            }
            i += 1;
        } else if c == b'=' {
            out.push(b'=');
            i += 1;
        } else if let (Some(hi), Some(lo)) =
            (hex_value(c), data.get(i + 1).copied().and_then(hex_value))
        {
            out.push((hi << 4) | lo);
            i += 2;
        } else {
            out.push(b'=');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_names() {
        assert_eq!(encode(b"\0/tmp/sock"), "=00/tmp/sock");
        assert_eq!(encode(b"a=b "), "a=3Db=20");
        assert_eq!(encode(b"."), "=2E");
        assert_eq!(decode("=00/tmp/sock"), b"\0/tmp/sock");
        assert_eq!(decode("a=3Db=20"), b"a=b ");
    }

    #[test]
    fn long_lines_are_soft_broken() {
        let name = [b'x'; 100];
        let text = encode(&name);
        assert!(text.lines().all(|l| l.len() <= MAX_LINE));
        assert_eq!(decode(&text), name);
        let binary: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&binary)), binary);
    }
}
