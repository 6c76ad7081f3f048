//! An ordered JSON tree and a printer that reproduces Python's
//! `json.dump(obj, indent=None|4)` byte for byte, as `crit` prints images
//! (CRIU's `crit/crit/__main__.py`): `", "` and `": "` separators when
//! compact, four-space indentation when pretty, non-ASCII characters escaped
//! as `\uXXXX`.

use std::sync::Arc;

/// A JSON value whose objects keep their insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `true` / `false`.
    Bool(bool),
    /// An integer (every protobuf integer type fits).
    Int(i128),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, in insertion order.
    Object(Vec<(Arc<str>, Json)>),
}

impl Json {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| &**k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Prints the value; `pretty` selects four-space indentation.
    pub fn to_text(&self, pretty: bool) -> String {
        let mut out = String::new();
        self.write(&mut out, pretty, 0);
        out
    }

    /// Appends the printed value to `out`.
    pub fn write(&self, out: &mut String, pretty: bool, depth: usize) {
        match self {
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => write_int(out, *i),
            Json::Str(s) => write_string(out, s),
            Json::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    separator(out, pretty, depth + 1, i == 0);
                    item.write(out, pretty, depth + 1);
                }
                close(out, pretty, depth);
                out.push(']');
            }
            Json::Object(members) => {
                if members.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    separator(out, pretty, depth + 1, i == 0);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, pretty, depth + 1);
                }
                close(out, pretty, depth);
                out.push('}');
            }
        }
    }
}

/// Appends the decimal digits of `value`.
fn write_int(out: &mut String, value: i128) {
    let mut digits = [0u8; 40];
    let mut pos = digits.len();
    let mut v = value.unsigned_abs();
    loop {
        pos -= 1;
        digits[pos] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&digits[pos..]).unwrap_or_default());
}

fn separator(out: &mut String, pretty: bool, depth: usize, first: bool) {
    if pretty {
        if !first {
            out.push(',');
        }
        out.push('\n');
        for _ in 0..depth {
            out.push_str("    ");
        }
    } else if !first {
        out.push_str(", ");
    }
}

fn close(out: &mut String, pretty: bool, depth: usize) {
    if pretty {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("    ");
        }
    }
}

/// Writes `s` quoted, escaping like Python's `ensure_ascii` encoder.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            ' '..='~' => continue,
            _ => None,
        };
        out.push_str(&s[start..i]);
        start = i + c.len_utf8();
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    use std::fmt::Write as _;
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Builds an object from `(key, value)` pairs.
pub fn object<I, K>(members: I) -> Json
where
    I: IntoIterator<Item = (K, Json)>,
    K: Into<Arc<str>>,
{
    Json::Object(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Json {
        object([
            ("magic", Json::Str("PSTREE".into())),
            (
                "entries",
                Json::Array(vec![
                    object([
                        ("pid", Json::Int(1)),
                        ("threads", Json::Array(vec![Json::Int(1), Json::Int(2)])),
                        ("e", Json::Array(vec![])),
                        ("o", object::<_, &str>([])),
                    ]),
                    Json::Bool(false),
                ]),
            ),
        ])
    }

    #[test]
    fn compact_like_python() {
        assert_eq!(
            sample().to_text(false),
            r#"{"magic": "PSTREE", "entries": [{"pid": 1, "threads": [1, 2], "e": [], "o": {}}, false]}"#
        );
    }

    #[test]
    fn pretty_like_python() {
        let expected = "{\n    \"magic\": \"PSTREE\",\n    \"entries\": [\n        {\n            \"pid\": 1,\n            \"threads\": [\n                1,\n                2\n            ],\n            \"e\": [],\n            \"o\": {}\n        },\n        false\n    ]\n}";
        assert_eq!(sample().to_text(true), expected);
    }

    #[test]
    fn escapes_like_python() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\n\u{1}\u{7f}é😀/");
        assert_eq!(out, r#""a\"b\\c\n\u0001\u007f\u00e9\ud83d\ude00/""#);
    }
}
