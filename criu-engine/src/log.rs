//! Per-request logging with `tracing` (upstream `criu/log.c`: `log_init()`, `log_set_loglevel()`,
//! `log_keep_err()` / `log_first_err()`).
//!
//! [`start`] installs a subscriber for the current thread only (`tracing::subscriber::set_default`), so each
//! request of a connection logs to its own file and nothing leaks into the next one. Every event is written
//! with a single `write(2)` on a file opened `O_APPEND`, so lines from forked children do not interleave and
//! nothing stays buffered. Error events read `Error (<target>): <message>`: runc prints the log lines that
//! contain "Error" when CRIU fails. The first error of the request is also kept in memory for `cr_errmsg`,
//! whatever the log level and even without a log file.
//!
//! Levels (`log_level`, `-v`): 0 and 1 errors only, 2 adds warnings (default), 3 adds info and timestamps,
//! 4 and above add debug and trace.
//!
//! # References
//! - [open(2)](https://man7.org/linux/man-pages/man2/open.2.html): `O_APPEND` writes are atomic per call.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tracing::field::{Field, Visit};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::opts::{LogTarget, RequestOpts, WorkDir};

/// Errors of log set-up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file cannot be created.
    #[error("can't open log file {}: {errno}", path.display())]
    Open {
        /// The path (relative paths are relative to the work directory).
        path: PathBuf,
        /// Failure.
        errno: Errno,
    },
    /// [`init_process_logging`] was called while a global subscriber exists.
    #[error("a process-wide log subscriber is already installed")]
    AlreadyInitialized,
}

/// Maps a CRIU log level to the most verbose `tracing` level shown.
pub fn level_filter(level: u32) -> LevelFilter {
    match level {
        0 | 1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        _ => LevelFilter::TRACE,
    }
}

/// Keeps the request's subscriber installed on this thread; dropping it restores the previous one.
#[derive(Debug)]
pub struct LogGuard {
    // Dropped first, so no event reaches the sink after the guard is gone.
    _default: DefaultGuard,
    first_error: Arc<Mutex<Option<String>>>,
    sink: Option<Sink>,
}

impl LogGuard {
    /// The first error-level message logged on this thread since the guard was created (for `cr_errmsg`).
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Files are written unbuffered; only the standard streams may hold a partial line.
        match self.sink {
            Some(Sink::Stdout) => {
                let _ = std::io::stdout().flush();
            }
            Some(Sink::Stderr) => {
                let _ = std::io::stderr().flush();
            }
            Some(Sink::File(_)) | None => {}
        }
    }
}

/// Starts the log of one request on the current thread: `opts.log_file` (relative to the work directory),
/// at `opts.log_level`. With no log target only the first error is captured.
#[doc(alias = "log_init")]
pub fn start(opts: &RequestOpts) -> Result<LogGuard, LogError> {
    let sink = match &opts.log_file {
        None => None,
        Some(LogTarget::Stdout) => Some(Sink::Stdout),
        Some(LogTarget::Stderr) => Some(Sink::Stderr),
        Some(LogTarget::File(path)) => Some(Sink::File(Arc::new(open_log(
            opts.work_dir.as_ref(),
            path,
        )?))),
    };
    Ok(install(sink, opts.log_level))
}

/// Captures the first error on the current thread without writing anything, for the part of a request that
/// runs before its log file is known (options processing).
pub fn capture_only() -> LogGuard {
    install(None, 0)
}

/// Installs the process-wide subscriber of a binary: `target` `None` is stderr, `-` is stdout, anything
/// else a file created like a request log (relative to the current directory).
pub fn init_process_logging(level: u32, target: Option<&Path>) -> Result<(), LogError> {
    let sink = match target {
        None => Sink::Stderr,
        Some(p) if p == Path::new("-") => Sink::Stdout,
        Some(p) => Sink::File(Arc::new(open_log(None, p)?)),
    };
    let subscriber = Registry::default().with(fmt_layer(sink, level));
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadyInitialized)
}

fn install(sink: Option<Sink>, level: u32) -> LogGuard {
    let first_error = Arc::new(Mutex::new(None));
    let capture = FirstError(Arc::clone(&first_error)).with_filter(LevelFilter::ERROR);
    let subscriber = Registry::default()
        .with(sink.clone().map(|s| fmt_layer(s, level)))
        .with(capture);
    LogGuard {
        _default: tracing::subscriber::set_default(subscriber),
        first_error,
        sink,
    }
}

fn fmt_layer<S>(sink: Sink, level: u32) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(CriuFormat {
            start: Instant::now(),
            timestamps: level >= 3,
        })
        .with_writer(sink)
        .with_filter(level_filter(level))
}

/// `O_CREAT | O_TRUNC | O_WRONLY | O_APPEND`, mode 0600, close-on-exec, as upstream `log_init()`.
fn open_log(work_dir: Option<&WorkDir>, path: &Path) -> Result<File, LogError> {
    let flags =
        OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    let fd = match work_dir {
        Some(dir) if path.is_relative() => nix::fcntl::openat(&dir.fd, path, flags, mode),
        _ => nix::fcntl::open(path, flags, mode),
    };
    fd.map(File::from).map_err(|errno| LogError::Open {
        path: path.to_owned(),
        errno,
    })
}

/// Where formatted events go.
#[derive(Debug, Clone)]
enum Sink {
    File(Arc<File>),
    Stdout,
    Stderr,
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => (&**f).write(buf),
            Sink::Stdout => std::io::stdout().write(buf),
            Sink::Stderr => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(_) => Ok(()),
            Sink::Stdout => std::io::stdout().flush(),
            Sink::Stderr => std::io::stderr().flush(),
        }
    }
}

/// CRIU-like lines: `(SS.UUUUUU) ` at level 3 and above, then `Error (<target>): ` or `Warn  (<target>): `
/// for those levels, then the message and fields.
struct CriuFormat {
    start: Instant,
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for CriuFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.timestamps {
            let t = self.start.elapsed();
            write!(writer, "({:02}.{:06}) ", t.as_secs(), t.subsec_micros())?;
        }
        let meta = event.metadata();
        match *meta.level() {
            Level::ERROR => write!(writer, "Error ({}): ", meta.target())?,
            Level::WARN => write!(writer, "Warn  ({}): ", meta.target())?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Keeps the first error event's text.
struct FirstError(Arc<Mutex<Option<String>>>);

impl<S: Subscriber> Layer<S> for FirstError {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let mut text = MessageText::default();
            event.record(&mut text);
            *slot = Some(text.0);
        }
    }
}

/// The message followed by ` name=value` for every other field.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }
}

impl MessageText {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value}{rest}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use criu_proto::rpc::{CriuOpts, CriuReqType};

    use super::*;
    use crate::config::Config;
    use crate::opts::{from_rpc, OptsContext};

    fn request(dir: &Path, log_file: Option<&str>, level: i32) -> RequestOpts {
        let o = CriuOpts {
            images_dir: Some(dir.to_str().unwrap().to_owned()),
            log_file: log_file.map(str::to_owned),
            log_level: Some(level),
            ..CriuOpts::default()
        };
        let ctx = OptsContext {
            service: false,
            peer_pid: 1,
        };
        from_rpc(CriuReqType::Restore, Some(&o), &Config::default(), &ctx).unwrap()
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn existing_log_file_is_truncated_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("restore.log"), "stale content\n").unwrap();
        let opts = request(dir.path(), Some("restore.log"), 2);
        {
            let _log = start(&opts).unwrap();
            tracing::info!("hidden at level 2");
            tracing::warn!(fd = 3, "odd descriptor");
            tracing::error!(target: "criu::restore", "boom");
        }
        tracing::error!("after the guard");
        assert_eq!(
            read(dir.path().join("restore.log")),
            "Warn  (criu_engine::log::tests): odd descriptor fd=3\nError (criu::restore): boom\n"
        );
    }

    #[test]
    fn default_log_is_created_in_the_work_dir_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let opts = request(dir.path(), None, 4);
        {
            let _log = start(&opts).unwrap();
            tracing::debug!("debug line");
            tracing::trace!("trace line");
        }
        let path = dir.path().join("criu.log");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = read(path);
        assert!(
            text.starts_with('(')
                && text.contains(") debug line\n")
                && text.contains(") trace line\n"),
            "{text}"
        );
    }

    #[test]
    fn level_zero_and_one_keep_errors_only() {
        for level in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            let opts = request(dir.path(), Some("l.log"), level);
            {
                let _log = start(&opts).unwrap();
                tracing::warn!("warning");
                tracing::error!("failure");
            }
            assert!(read(dir.path().join("l.log")).ends_with("): failure\n"));
            assert!(!read(dir.path().join("l.log")).contains("warning"));
        }
    }

    #[test]
    fn first_error_is_captured_even_without_output() {
        let guard = capture_only();
        tracing::warn!("not an error");
        assert_eq!(guard.first_error(), None);
        tracing::error!(pid = 42, "can't seize task");
        tracing::error!("second error");
        assert_eq!(
            guard.first_error().as_deref(),
            Some("can't seize task pid=42")
        );
        drop(guard);

        let dir = tempfile::tempdir().unwrap();
        let opts = request(dir.path(), Some("x.log"), 0);
        let log = start(&opts).unwrap();
        tracing::error!("{} is within dumped tree", "The criu itself");
        assert_eq!(
            log.first_error().as_deref(),
            Some("The criu itself is within dumped tree")
        );
    }

    #[test]
    fn unopenable_log_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = request(dir.path(), None, 2);
        opts.log_file = Some(LogTarget::File("missing-subdir/x.log".into()));
        let e = start(&opts).unwrap_err();
        assert!(
            matches!(
                e,
                LogError::Open {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn level_map() {
        assert_eq!(level_filter(0), LevelFilter::ERROR);
        assert_eq!(level_filter(2), LevelFilter::WARN);
        assert_eq!(level_filter(3), LevelFilter::INFO);
        assert_eq!(level_filter(9), LevelFilter::TRACE);
    }
}
