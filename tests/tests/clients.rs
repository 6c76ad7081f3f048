//! CRIU's own clients against our binaries: pycriu (Python) and libcriu (C),
//! both from Debian's `criu` package, in swrk mode and through the service.

use std::path::Path;
use std::process::Command;

use criu_tests::{bin, require_root, Service, TempDir, FRONTENDS};

const PYCRIU: &str = r#"
import os, sys, pycriu
mode, where, images, pid = sys.argv[1:5]
c = pycriu.criu()
if mode == "bin":
    c.use_binary(where)
else:
    c.use_sk(where)
c.check()
print("check ok")
c.opts.images_dir_fd = os.open(images, os.O_RDONLY)
c.opts.pid = int(pid)
c.opts.log_file = "sub/dump.log"
try:
    c.dump()
    print("dump succeeded")
except pycriu.CRIUExceptionExternal as e:
    print("dump failed errno", e.errno)
"#;

const LIBCRIU: &str = r#"
#include <criu/criu.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    criu_init_opts();
    if (strcmp(argv[1], "bin") == 0)
        criu_set_service_binary(argv[2]);
    else
        criu_set_service_address(argv[2]);
    printf("check %d\n", criu_check());
    printf("version %d\n", criu_get_version());
    criu_set_images_dir_fd(open(argv[3], O_RDONLY | O_DIRECTORY));
    criu_set_pid(atoi(argv[4]));
    criu_set_log_file("sub/dump.log");
    errno = 0;
    int ret = criu_dump();
    printf("dump %d errno %d\n", ret, errno);
    return 0;
}
"#;

/// Runs `body` against every front-end in swrk mode ("bin") and as a
/// service ("sk"), passing the mode and the binary or socket path.
fn each_transport(mut body: impl FnMut(&str, &Path)) {
    require_root();
    for name in FRONTENDS {
        let path = bin(name);
        body("bin", &path);
        let service = Service::start(&path);
        body("sk", &service.socket);
    }
}

#[test]
fn pycriu_checks_and_gets_bad_options_errno() {
    assert!(
        Path::new("/usr/lib/python3/dist-packages/pycriu").exists(),
        "pycriu is missing: install Debian's criu package"
    );
    let images = TempDir::new("pycriu");
    each_transport(|mode, where_| {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", PYCRIU, mode])
            .arg(where_)
            .arg(images.path())
            .arg(std::process::id().to_string())
            .output()
            .expect("run python3");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pycriu via {mode} {}: {text}{}",
            where_.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("check ok"), "{text}");
        // A log file with a directory part: EBADRQC, as from CRIU.
        assert!(text.contains("dump failed errno 56"), "{text}");
    });
}

#[test]
fn libcriu_checks_reads_the_version_and_gets_bad_options_errno() {
    assert!(
        Path::new("/usr/include/criu/criu.h").exists(),
        "libcriu is missing: install Debian's criu package"
    );
    let build = TempDir::new("libcriu");
    let src = build.path().join("client.c");
    let exe = build.path().join("client");
    std::fs::write(&src, LIBCRIU).unwrap();
    let cc = Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-lcriu")
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let images = TempDir::new("libcriu-images");
    each_transport(|mode, where_| {
        let out = Command::new(&exe)
            .arg(mode)
            .arg(where_)
            .arg(images.path())
            .arg(std::process::id().to_string())
            .output()
            .expect("run libcriu client");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("check 0"), "via {mode}: {text}");
        assert!(text.contains("version 40200"), "via {mode}: {text}");
        // libcriu: success = false -> -EBADE, errno = cr_errno (EBADRQC).
        assert!(text.contains("dump -52 errno 56"), "via {mode}: {text}");
    });
}
