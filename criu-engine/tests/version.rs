//! VERSION answers.

use criu_engine::version::{version, version_string, CRIU_COMPAT};
use criu_proto::Message;

#[test]
fn version_is_criu_4_2_without_gitid() {
    let v = version();
    assert_eq!((v.major_number, v.minor_number), (4, 2));
    assert_eq!(CRIU_COMPAT, (4, 2));
    assert_eq!(v.gitid, None);
    assert_eq!(v.sublevel, None);
    assert_eq!(v.extra, None);
    assert_eq!(
        v.name.as_deref(),
        Some(concat!("criu-rs ", env!("CARGO_PKG_VERSION")))
    );
    // Clients compute major*10000 + minor*100 + sublevel.
    let n = v.major_number * 10000 + v.minor_number * 100 + v.sublevel.unwrap_or(0);
    assert_eq!(n, 40200);
    let decoded = criu_proto::rpc::CriuVersion::decode(v.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, v);
}

#[test]
fn version_string_like_criu() {
    let s = version_string();
    assert!(s.starts_with("Version: 4.2\n"), "{s:?}");
    assert_eq!(
        s.lines().nth(1),
        Some(concat!("Name: criu-rs ", env!("CARGO_PKG_VERSION")))
    );
}
