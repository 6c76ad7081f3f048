//! Any bytes as an image file: the magic-dispatching reader of every image
//! kind (headers, framing, each message type). The first byte picks the file
//! name, which tells kinds sharing a magic apart.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = [
    "inventory.img",
    "core-1.img",
    "mm-1.img",
    "pagemap-1.img",
    "pages-1.img",
    "files.img",
    "pstree.img",
    "stats-dump",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let _ = criu_proto::img::decode_any_bytes(bytes, Path::new(name));
});
