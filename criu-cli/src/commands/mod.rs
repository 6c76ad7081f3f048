//! One adapter per `criu` action.

use criu_engine::config::Config;
use criu_engine::log::LogGuard;
use criu_engine::opts::RequestOpts;
use criu_engine::worker::error_chain;

pub mod check;
pub mod cpuinfo;
pub mod dump;
pub mod lazy_pages;
pub mod page_server;
pub mod pre_dump;
pub mod restore;

/// `criu --help`.
pub const USAGE: &str = "\
Usage:
  criu dump|pre-dump -t PID [<options>]
  criu restore [<options>]
  criu check [--feature FEAT] [--all]
  criu page-server -D DIR [--address A] [--port N] [-d] [--prev-images-dir D]
  criu service [<options>]
  criu swrk <fd>
  criu lazy-pages -D DIR [-W DIR] [--page-server --address A --port N]
  criu cpuinfo dump|check

Common options:
  -D|--images-dir DIR   directory for image files
  -W|--work-dir DIR     directory for logs and other files (default: images dir)
  -o|--log-file NAME    log file name, inside the work directory
  -v[0-4]               log verbosity
  --config FILE         read options from FILE
  --no-default-config   skip /etc/criu/default.conf and ~/.criu/default.conf
  -V|--version          print the version and exit

Incremental dumps:
  --prev-images-dir DIR parent images (relative to -D), linked as 'parent'
  --track-mem           keep tracking written pages after a dump that leaves
                        the task running
  --pre-dump-mode splice|read

Page server:
  --page-server --address A --port N  (dump, pre-dump) send pages to it
  page-server prints its port (--port 0: any free one), then with -d the
  daemon's pid

Lazy pages:
  lazy-pages            serve the memory of one 'restore --lazy-pages' from
                        the images (or, with --page-server, from a
                        'page-server --lazy-pages'); start it first: it
                        listens on lazy-pages.socket in the work dir, exits
                        once every page has arrived and prints statistics
  restore --lazy-pages  leave private anonymous memory to the daemon
";

/// The validated options of an action and its log, opened where CRIU puts
/// it; on failure the reason is printed and the exit status returned.
pub fn prepare(cfg: &Config) -> Result<(RequestOpts, LogGuard), u8> {
    let ro = criu_engine::opts::from_config(cfg).map_err(|e| fail(&e))?;
    let log = criu_engine::log::start(&ro).map_err(|e| fail(&e))?;
    Ok((ro, log))
}

/// Reports an action's failure on stderr and in its log; exit status 1.
pub fn fail(err: &dyn std::error::Error) -> u8 {
    let msg = error_chain(err);
    tracing::error!("{msg}");
    eprintln!("Error: {msg}");
    1
}
