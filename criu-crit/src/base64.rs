//! Base64 as `crit` writes it: Python's `base64.encodebytes` (MIME lines of
//! 76 characters, each ended by a newline) and the lenient
//! `base64.decodebytes` (characters outside the alphabet are skipped).
//! Counterpart of the `encode_base64`/`decode_base64` helpers of CRIU's
//! `lib/pycriu/images/pb2dict.py`.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Input bytes per output line (76 characters).
const LINE_BYTES: usize = 57;

/// Why base64 text could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Base64Error {
    /// The text ends in the middle of a 4-character group.
    #[error("incorrect base64 padding ({data} data characters)")]
    Padding {
        /// Alphabet characters seen.
        data: usize,
    },
}

/// Encodes `data` in lines of at most 76 characters, each followed by `\n`;
/// empty input gives an empty string.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4 + data.len() / LINE_BYTES + 1);
    for line in data.chunks(LINE_BYTES) {
        for group in line.chunks(3) {
            let b = [
                group[0],
                *group.get(1).unwrap_or(&0),
                *group.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = [n >> 18, n >> 12, n >> 6, n].map(|v| ALPHABET[(v & 63) as usize] as char);
            let keep = group.len() + 1;
            for (i, c) in chars.into_iter().enumerate() {
                out.push(if i < keep { c } else { '=' });
            }
        }
        out.push('\n');
    }
    out
}

fn value_of(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes base64 text, skipping characters outside the alphabet (newlines)
/// and stopping at the padding that completes the last group.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut quad = 0usize;
    let mut acc = 0u32;
    let mut pads = 0usize;
    let mut data = 0usize;
    for &c in text.as_bytes() {
        if c == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    return Ok(out);
                }
            }
            continue;
        }
        let Some(v) = value_of(c) else {
            continue;
        };
        data += 1;
        pads = 0;
        acc = (acc << 6) | u32::from(v);
        quad += 1;
        match quad {
            2 => out.push((acc >> 4) as u8),
            3 => out.push((acc >> 2) as u8),
            4 => {
                out.push(acc as u8);
                quad = 0;
                acc = 0;
            }
            _ => {}
        }
        acc &= 0xff;
    }
    if quad != 0 {
        return Err(Base64Error::Padding { data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_python() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"pipedata!"), "cGlwZWRhdGEh\n");
        assert_eq!(encode(b"ab"), "YWI=\n");
        assert_eq!(encode(b"a"), "YQ==\n");
        let long = encode(&[0u8; 58]);
        let lines: Vec<&str> = long.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 76);
        assert_eq!(lines[1], "AA==");
    }

    #[test]
    fn decodes_leniently() {
        assert_eq!(decode("cGlw\nZWRh dGEh\n").unwrap(), b"pipedata!");
        assert_eq!(decode("YWI=\n").unwrap(), b"ab");
        assert_eq!(decode("YQ==").unwrap(), b"a");
        assert_eq!(decode("").unwrap(), b"");
        assert!(decode("YWJ").is_err());
        assert!(decode("Y").is_err());
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&data)).unwrap(), data);
    }
}
