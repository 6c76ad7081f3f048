//! Configuration files (upstream `parse_config()`, `parse_statement()`, `next_config()`, `pre_parse()`).
//!
//! Syntax: one option per line, a CLI long option without the leading `--`, followed by its argument after
//! blanks (`work-dir /tmp`) or joined with `=` (`log-file=x.log`). `#` starts a comment. An argument with
//! blanks is put in double quotes; `\"` is a literal quote. As upstream, each line becomes one or two
//! getopt words, so `verbosity 4` is `--verbosity` followed by a stray `4` (an optional argument must be
//! written `verbosity=4`), and words that are not options are ignored.

use std::path::{Path, PathBuf};

use super::{options, Config, ConfigError};

/// System-wide file (upstream `GLOBAL_CONFIG_DIR DEFAULT_CONFIG_FILENAME`).
const GLOBAL_FILE: &str = "/etc/criu/default.conf";
/// Per-user file, relative to `$HOME`.
const USER_FILE: &str = ".criu/default.conf";
/// Environment variable naming one more file.
const ENV_FILE: &str = "CRIU_CONFIG_FILE";

/// Applies configuration text (the content of one file) onto `into`.
///
/// Errors carry the 1-based line number for syntax problems; option errors name the option.
pub fn parse_config_text(text: &str, into: &mut Config) -> Result<(), ConfigError> {
    let mut words = Vec::new();
    for (n, line) in text.lines().enumerate() {
        words.extend(statement_words(line, n + 1)?);
    }
    options::apply_args(words, into, false)
}

/// Applies `/etc/criu/default.conf`, `$HOME/.criu/default.conf` and `$CRIU_CONFIG_FILE` onto `into`, in
/// that order; files that cannot be opened are skipped.
pub fn load_default_files(into: &mut Config) -> Result<(), ConfigError> {
    load_global_and_user(into)?;
    load_env_file(into)
}

pub(super) fn load_global_and_user(into: &mut Config) -> Result<(), ConfigError> {
    load_file(Path::new(GLOBAL_FILE), into)?;
    if let Some(home) = std::env::var_os("HOME") {
        load_file(&Path::new(&home).join(USER_FILE), into)?;
    }
    Ok(())
}

pub(super) fn load_env_file(into: &mut Config) -> Result<(), ConfigError> {
    match std::env::var_os(ENV_FILE) {
        Some(path) => load_file(Path::new(&path), into),
        None => Ok(()),
    }
}

/// Applies one configuration file onto `into`; a file that cannot be read counts as absent, as upstream
/// (`fopen()` failure skips it), which is also how the RPC `config_file` is treated.
pub fn load_file(path: &Path, into: &mut Config) -> Result<(), ConfigError> {
    let Ok(bytes) = std::fs::read(path) else {
        tracing::debug!(path = %path.display(), "configuration file not read");
        return Ok(());
    };
    tracing::debug!(path = %path.display(), "parsing configuration file");
    parse_config_text(&String::from_utf8_lossy(&bytes), into).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// What upstream's `pre_parse()` learns from the raw command line before any getopt run.
#[derive(Debug, Default)]
pub(super) struct PreParse {
    pub(super) help: bool,
    pub(super) no_default_config: bool,
    pub(super) config_file: Option<PathBuf>,
}

/// Upstream `pre_parse()`: exact `-h`/`--help` anywhere; `--no-default-config`; `--config FILE` or
/// `--config=FILE`, which also disables the default files.
pub(super) fn pre_parse(args: &[String]) -> PreParse {
    let mut pre = PreParse::default();
    for (i, arg) in args.iter().enumerate() {
        match arg.as_str() {
            "-h" | "--help" => {
                pre.help = true;
                return pre;
            }
            "--no-default-config" => pre.no_default_config = true,
            "--config" => {
                pre.config_file = args.get(i + 1).map(PathBuf::from);
                pre.no_default_config = true;
            }
            other => {
                if let Some(path) = other.strip_prefix("--config=") {
                    pre.config_file = Some(PathBuf::from(path));
                    pre.no_default_config = true;
                }
            }
        }
    }
    pre
}

fn syntax(line: usize, reason: &'static str) -> ConfigError {
    ConfigError::Syntax { line, reason }
}

/// Turns one line into getopt words: nothing, `--name`, or `--name` and its argument.
fn statement_words(line: &str, lineno: usize) -> Result<Vec<String>, ConfigError> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Vec::new());
    }
    // Upstream splits at the first space, or at the first tab when there is no space.
    let split = line.find(' ').or_else(|| line.find('\t'));
    let Some(at) = split else {
        return Ok(vec![format!("--{line}")]);
    };
    let name = format!("--{}", &line[..at]);
    let rest = line[at + 1..].trim_start();
    if rest.starts_with('#') {
        return Ok(vec![name]);
    }
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        let end =
            closing_quote(quoted).ok_or_else(|| syntax(lineno, "missing closing double quote"))?;
        let after = quoted[end + 1..].trim_start();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(syntax(lineno, "text after the closing double quote"));
        }
        quoted[..end].replace("\\\"", "\"")
    } else {
        let value = rest.split('#').next().unwrap_or_default().trim_end();
        if value.contains([' ', '\t']) {
            return Err(syntax(lineno, "more than one argument (use double quotes)"));
        }
        value.replace("\\\"", "\"")
    };
    Ok(vec![name, value])
}

/// Byte offset of the first `"` in `s` not preceded by a backslash.
fn closing_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        statement_words(line, 1).unwrap()
    }

    #[test]
    fn statements_become_getopt_words() {
        assert!(words("").is_empty());
        assert!(words("   # comment").is_empty());
        assert_eq!(words("tcp-established"), ["--tcp-established"]);
        assert_eq!(words("  log-file=/tmp/x.log"), ["--log-file=/tmp/x.log"]);
        assert_eq!(
            words("work-dir /tmp/w   # trailing comment"),
            ["--work-dir", "/tmp/w"]
        );
        assert_eq!(
            words("no-restore-sibling   # comment"),
            ["--no-restore-sibling"]
        );
        assert_eq!(words("verbosity\t4"), ["--verbosity", "4"]);
        assert_eq!(
            words(r#"work-dir "/home/u/my \"work\" dir""#),
            ["--work-dir", r#"/home/u/my "work" dir"#]
        );
        assert_eq!(words(r#"lsm-profile "" "#), ["--lsm-profile", ""]);
        assert_eq!(words(r#"lsm-profile "a b" # c"#), ["--lsm-profile", "a b"]);
    }

    #[test]
    fn malformed_statements_are_refused() {
        for bad in [r#"root "/x"#, r#"root ""#, "root a b", r#"root "a" b"#] {
            assert!(
                matches!(
                    statement_words(bad, 3),
                    Err(ConfigError::Syntax { line: 3, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn pre_parse_sees_config_and_help() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let p = pre_parse(&args(&["dump", "--config", "/c"]));
        assert_eq!(p.config_file.as_deref(), Some(Path::new("/c")));
        assert!(p.no_default_config && !p.help);
        let p = pre_parse(&args(&["--config=/d", "-t", "1"]));
        assert_eq!(p.config_file.as_deref(), Some(Path::new("/d")));
        assert!(pre_parse(&args(&["dump", "--", "-h"])).help);
        assert!(!pre_parse(&args(&["-dh"])).help);
    }
}
