//! `criu lazy-pages -D DIR [-W WORK] [--page-server --address A --port P]`:
//! binds `lazy-pages.socket` in the work directory, serves the memory of
//! one lazy restore (`restore --lazy-pages`) until every page has arrived,
//! then prints its statistics on stdout as one line of `name=value` words.

use criu_engine::config::Config;
use criu_engine::lazy::{self, LazyStats};

/// Exit status 0 once every page has arrived.
pub fn run(cfg: &Config) -> u8 {
    let (ro, _log) = match super::prepare(cfg) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    let daemon = match lazy::prepare(&ro) {
        Ok(d) => d,
        Err(e) => return super::fail(&e),
    };
    match daemon.run() {
        Ok(stats) => {
            println!("{}", stats_line(&stats));
            0
        }
        Err(e) => super::fail(&e),
    }
}

/// The statistics as `name=value` words.
pub fn stats_line(s: &LazyStats) -> String {
    format!(
        "tasks={} forks={} pages_total={} pages_copied={} pages_on_fault={} pages_remote={} \
         faults={} faults_after_finish={} zero_pages={} pages_dropped={} pages_present={}",
        s.tasks,
        s.forks,
        s.pages_total,
        s.pages_copied,
        s.pages_on_fault,
        s.pages_remote,
        s.faults,
        s.faults_after_finish,
        s.zero_pages,
        s.pages_dropped,
        s.pages_present
    )
}
