//! Command line of `crit` (CRIU's `crit/crit/__main__.py`):
//!
//! ```text
//! crit decode [-i IN] [-o OUT] [--pretty] [--nopl]   image -> JSON
//! crit encode [-i IN] [-o OUT]                       JSON -> image
//! crit info IN                                       magic and entry count
//! crit show IN [--nopl]                              decode --pretty to stdout
//! crit x DIR ps|fds|mems|rss                         explore an image directory
//! ```
//!
//! Input defaults to stdin and output to stdout; JSON written to stdout ends
//! with a newline, JSON written to a file does not (as with `crit`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::explore::{explore, ExploreError};
use crate::image::{decode_image, encode_image, info, DecodeOptions, ImageError};

/// Usage text.
pub const USAGE: &str = "usage: crit [-h] [--version] {decode,encode,info,x,show} ...

CRiu Image Tool (Rust)

commands:
  decode [-i IN] [-o OUT] [--pretty] [--nopl]
                        convert a criu image from binary to JSON
  encode [-i IN] [-o OUT]
                        convert a criu image from JSON to binary
  info IN               show the magic and entry count of an image
  x DIR {ps,fds,mems,rss}
                        explore an image directory
  show IN [--nopl]      convert a criu image from binary to human-readable JSON
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `decode` / `show`.
    Decode {
        /// Input image (stdin when absent).
        input: Option<PathBuf>,
        /// Output JSON (stdout when absent).
        output: Option<PathBuf>,
        /// Pretty conversions and indentation.
        pretty: bool,
        /// Leave payloads out.
        nopl: bool,
    },
    /// `encode`.
    Encode {
        /// Input JSON (stdin when absent).
        input: Option<PathBuf>,
        /// Output image (stdout when absent).
        output: Option<PathBuf>,
    },
    /// `info IN`.
    Info {
        /// The image.
        input: PathBuf,
    },
    /// `x DIR WHAT`.
    Explore {
        /// The image directory.
        dir: PathBuf,
        /// `ps`, `fds`, `mems` or `rss`.
        what: String,
    },
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// Why `crit` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file (`<stdin>` for standard input).
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file (`<stdout>` for standard output).
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Decoding or encoding failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Exploring failed.
    #[error(transparent)]
    Explore(#[from] ExploreError),
}

impl CliError {
    /// Exit status: 2 for usage errors (like argparse), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(usage("too few arguments"));
    };
    match cmd.as_str() {
        "-h" | "--help" => return Ok(Command::Help),
        "--version" => return Ok(Command::Version),
        _ => {}
    }
    let mut input = None;
    let mut output = None;
    let mut pretty = false;
    let mut nopl = false;
    let mut positional = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .map(PathBuf::from)
                .ok_or_else(|| usage(format!("argument {name}: expected one argument")))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-i" | "--in" if cmd != "info" && cmd != "show" && cmd != "x" => {
                input = Some(value("-i/--in")?)
            }
            "-o" | "--out" if cmd == "decode" || cmd == "encode" => {
                output = Some(value("-o/--out")?)
            }
            "--pretty" if cmd == "decode" => pretty = true,
            "--nopl" if cmd == "decode" || cmd == "show" => nopl = true,
            f if f.starts_with('-') && f.len() > 1 => {
                return Err(usage(format!("unrecognized argument: {arg}")))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let want = |n: usize, names: &str| {
        if positional.len() == n {
            Ok(())
        } else if positional.len() < n {
            Err(usage(format!(
                "{cmd}: the following arguments are required: {names}"
            )))
        } else {
            Err(usage(format!(
                "unrecognized arguments: {}",
                positional[n..].join(" ")
            )))
        }
    };
    match cmd.as_str() {
        "decode" => {
            want(0, "")?;
            Ok(Command::Decode {
                input,
                output,
                pretty,
                nopl,
            })
        }
        "encode" => {
            want(0, "")?;
            Ok(Command::Encode { input, output })
        }
        "info" => {
            want(1, "in")?;
            Ok(Command::Info {
                input: PathBuf::from(&positional[0]),
            })
        }
        "show" => {
            want(1, "in")?;
            Ok(Command::Decode {
                input: Some(PathBuf::from(&positional[0])),
                output: None,
                pretty: true,
                nopl,
            })
        }
        "x" => {
            want(2, "dir, what")?;
            let what = positional[1].clone();
            if !["ps", "fds", "mems", "rss"].contains(&what.as_str()) {
                return Err(usage(format!(
                    "x: argument what: invalid choice: {what:?} (choose from 'ps', 'fds', 'mems', 'rss')"
                )));
            }
            Ok(Command::Explore {
                dir: PathBuf::from(&positional[0]),
                what,
            })
        }
        other => Err(usage(format!(
            "invalid choice: {other:?} (choose from 'decode', 'encode', 'info', 'x', 'show')"
        ))),
    }
}

const STDIN: &str = "<stdin>";
const STDOUT: &str = "<stdout>";

fn read_input(input: Option<&Path>, stdin: &mut dyn Read) -> Result<(Vec<u8>, PathBuf), CliError> {
    match input {
        Some(path) => std::fs::read(path)
            .map(|b| (b, path.to_owned()))
            .map_err(|source| CliError::Read {
                path: path.to_owned(),
                source,
            }),
        None => {
            let mut buf = Vec::new();
            stdin
                .read_to_end(&mut buf)
                .map_err(|source| CliError::Read {
                    path: STDIN.into(),
                    source,
                })?;
            Ok((buf, PathBuf::from(STDIN)))
        }
    }
}

fn write_output(
    output: Option<&Path>,
    data: &[u8],
    stdout: &mut dyn Write,
) -> Result<(), CliError> {
    match output {
        Some(path) => std::fs::write(path, data).map_err(|source| CliError::Write {
            path: path.to_owned(),
            source,
        }),
        None => stdout
            .write_all(data)
            .and_then(|()| stdout.flush())
            .map_err(|source| CliError::Write {
                path: STDOUT.into(),
                source,
            }),
    }
}

/// Runs a parsed command with the given standard streams.
pub fn run(cmd: &Command, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        Command::Help => write_output(None, USAGE.as_bytes(), stdout),
        Command::Version => write_output(
            None,
            format!("{}\n", env!("CARGO_PKG_VERSION")).as_bytes(),
            stdout,
        ),
        Command::Decode {
            input,
            output,
            pretty,
            nopl,
        } => {
            let (bytes, path) = read_input(input.as_deref(), stdin)?;
            let opts = DecodeOptions {
                pretty: *pretty,
                nopl: *nopl,
            };
            let mut text = decode_image(&bytes, &path, opts)?.to_text(*pretty);
            if output.is_none() {
                text.push('\n');
            }
            write_output(output.as_deref(), text.as_bytes(), stdout)
        }
        Command::Encode { input, output } => {
            let (text, path) = read_input(input.as_deref(), stdin)?;
            let bytes = encode_image(&text, &path)?;
            write_output(output.as_deref(), &bytes, stdout)
        }
        Command::Info { input } => {
            let (bytes, path) = read_input(Some(input), stdin)?;
            let mut text = info(&bytes, &path)?.to_text(true);
            text.push('\n');
            write_output(None, text.as_bytes(), stdout)
        }
        Command::Explore { dir, what } => {
            let text = explore(dir, what)?;
            write_output(None, text.as_bytes(), stdout)
        }
    }
}

/// Parses `args` (without the program name), runs the command on the
/// process's standard streams and returns the exit status; errors go to
/// stderr with their causes.
pub fn main_with(args: &[String]) -> i32 {
    let result = parse(args).and_then(|cmd| {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        run(&cmd, &mut stdin.lock(), &mut stdout.lock())
    });
    match result {
        Ok(()) => 0,
        Err(err) => {
            let mut msg = format!("crit: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                msg.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if matches!(err, CliError::Usage(_)) {
                eprint!("{USAGE}");
            }
            eprintln!("{msg}");
            err.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse(&args("decode -i a.img -o a.json --pretty")).unwrap(),
            Command::Decode {
                input: Some("a.img".into()),
                output: Some("a.json".into()),
                pretty: true,
                nopl: false
            }
        );
        assert_eq!(
            parse(&args("decode --in=a.img")).unwrap(),
            Command::Decode {
                input: Some("a.img".into()),
                output: None,
                pretty: false,
                nopl: false
            }
        );
        assert_eq!(
            parse(&args("show a.img --nopl")).unwrap(),
            Command::Decode {
                input: Some("a.img".into()),
                output: None,
                pretty: true,
                nopl: true
            }
        );
        assert_eq!(
            parse(&args("x dir rss")).unwrap(),
            Command::Explore {
                dir: "dir".into(),
                what: "rss".into()
            }
        );
        assert_eq!(
            parse(&args("info f")).unwrap(),
            Command::Info { input: "f".into() }
        );
    }

    #[test]
    fn rejects_bad_lines() {
        for bad in [
            "",
            "frob",
            "x dir",
            "x dir nope",
            "info",
            "decode -i",
            "encode --pretty",
            "info a b",
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
