//! Any text as `/proc/<pid>/{status,stat,smaps,maps}` and an fdinfo file.
#![no_main]

use criu_engine::proc::{fdinfo, maps, smaps, stat, status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = status::parse(&text);
    let _ = stat::parse(&text);
    let _ = smaps::parse(&text);
    let _ = fdinfo::parse(&text);
    for line in text.lines() {
        if maps::MapsLine::is_range(line) {
            let _ = maps::MapsLine::parse(line);
        }
    }
});
