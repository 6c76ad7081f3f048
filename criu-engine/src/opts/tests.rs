//! Options processing against real directories and descriptors of this test process (its own pid plays
//! the RPC peer, so `/proc/<peer>/fd/<n>` is real).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use criu_proto::rpc::{
    CriuCgMode, CriuOpts, CriuPageServerInfo, CriuReqType, InheritFd as RpcInheritFd,
};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::*;
use crate::config::{cpu_cap, EMPTY_NS_NET};

fn pid() -> i32 {
    i32::try_from(std::process::id()).expect("pids fit in i32")
}

fn swrk() -> OptsContext {
    OptsContext {
        service: false,
        peer_pid: pid(),
    }
}

fn service() -> OptsContext {
    OptsContext {
        service: true,
        peer_pid: pid(),
    }
}

struct Dir {
    tmp: tempfile::TempDir,
    fd: OwnedFd,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let fd = nix::fcntl::open(
        tmp.path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    Dir { tmp, fd }
}

fn with_dir(d: &Dir) -> CriuOpts {
    CriuOpts {
        images_dir_fd: d.fd.as_raw_fd(),
        ..CriuOpts::default()
    }
}

fn rpc(t: CriuReqType, o: &CriuOpts) -> Result<RequestOpts, OptsError> {
    from_rpc(t, Some(o), &Config::default(), &swrk())
}

fn err(t: CriuReqType, o: &CriuOpts) -> OptsError {
    let e = rpc(t, o).expect_err("options must be refused");
    assert_eq!(e.cr_errno(), 56, "{e}");
    e
}

#[test]
fn images_dir_fd_is_reopened_through_proc_of_the_peer() {
    let d = dir();
    let o = rpc(CriuReqType::Dump, &with_dir(&d)).unwrap();
    let images = o.images_dir.as_ref().unwrap();
    let n = d.fd.as_raw_fd();
    assert_eq!(images.source, ImagesDirSource::PeerFd(n));
    assert_eq!(
        images.path,
        PathBuf::from(format!("/proc/{}/fd/{n}", pid()))
    );
    let st = nix::sys::stat::fstat(&images.fd).unwrap();
    let want = nix::sys::stat::stat(d.tmp.path()).unwrap();
    assert_eq!((st.st_dev, st.st_ino), (want.st_dev, want.st_ino));
    assert_eq!(o.work_dir.as_ref().unwrap().path, images.path);
    assert_eq!(o.target, Some(Target::Peer(pid())));
    assert_eq!(o.log_file, Some(LogTarget::File(PathBuf::from("criu.log"))));
    assert_eq!(o.log_level, 2);
}

#[test]
fn absent_fields_keep_criu_defaults() {
    let d = dir();
    let o = rpc(CriuReqType::Dump, &with_dir(&d)).unwrap();
    assert_eq!(o.cpu_cap, None);
    assert_eq!(o.timeout, 10);
    assert_eq!(o.manage_cgroups, CgroupMode::Soft);
    assert_eq!(o.pre_dump_mode, PreDumpMode::Splice);
    assert_eq!(o.network_lock, NetworkLock::Iptables);
    assert_eq!(o.ghost_limit, 1 << 20);
    assert_eq!(o.final_state, FinalState::Dead);
}

#[test]
fn present_fields_apply_even_with_proto_default_values() {
    let d = dir();
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            cpu_cap: Some(0),
            timeout: Some(0),
            manage_cgroups: Some(false),
            pid: Some(4242),
            leave_running: Some(true),
            leave_stopped: Some(true),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(o.cpu_cap, Some(cpu_cap::IMAGE));
    assert_eq!(o.timeout, 0);
    assert_eq!(o.manage_cgroups, CgroupMode::Ignore);
    assert_eq!(o.target, Some(Target::Pid(4242)));
    assert_eq!(o.final_state, FinalState::Stopped);
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            manage_cgroups: Some(false),
            manage_cgroups_mode: Some(CriuCgMode::Default as i32),
            leave_running: Some(true),
            leave_stopped: Some(false),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(o.manage_cgroups, CgroupMode::Soft);
    assert_eq!(o.final_state, FinalState::Alive);
}

#[test]
fn images_dir_path_and_missing_images_dir() {
    let d = dir();
    let o = rpc(
        CriuReqType::Restore,
        &CriuOpts {
            images_dir: Some(d.tmp.path().to_str().unwrap().to_owned()),
            ..CriuOpts::default()
        },
    )
    .unwrap();
    assert_eq!(
        o.images_dir.as_ref().unwrap().source,
        ImagesDirSource::RpcPath
    );
    assert!(o.restore_detached);
    assert_eq!(o.target, None);

    let e = err(CriuReqType::Dump, &CriuOpts::default());
    assert_eq!(
        e.to_string(),
        "Neither images_dir_fd nor images_dir was passed by RPC client."
    );
    let e = err(
        CriuReqType::Dump,
        &CriuOpts {
            images_dir_fd: -2,
            ..CriuOpts::default()
        },
    );
    assert!(matches!(e, OptsError::OpenImagesDir { .. }), "{e}");
}

#[test]
fn check_needs_directories_only_for_a_log_file() {
    let none = from_rpc(CriuReqType::Check, None, &Config::default(), &swrk()).unwrap();
    assert!(none.log_file.is_none() && none.images_dir.is_none() && none.work_dir.is_none());
    let no_log = rpc(CriuReqType::Check, &CriuOpts::default()).unwrap();
    assert!(no_log.log_file.is_none());
    let stderr = rpc(
        CriuReqType::Check,
        &CriuOpts {
            log_file: Some("c.log".into()),
            log_to_stderr: Some(true),
            ..CriuOpts::default()
        },
    )
    .unwrap();
    assert_eq!(stderr.log_file, Some(LogTarget::Stderr));

    let e = err(
        CriuReqType::Check,
        &CriuOpts {
            log_file: Some("c.log".into()),
            ..CriuOpts::default()
        },
    );
    assert_eq!(
        e.to_string(),
        "images-dir or work-dir is required when using log file"
    );

    let d = dir();
    let o = rpc(
        CriuReqType::Check,
        &CriuOpts {
            log_file: Some("c.log".into()),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert!(o.images_dir.is_none());
    assert!(o.work_dir.is_some());
    assert_eq!(o.log_file, Some(LogTarget::File("c.log".into())));
}

#[test]
fn log_file_must_be_a_bare_name() {
    let d = dir();
    let e = err(
        CriuReqType::Dump,
        &CriuOpts {
            log_file: Some("../dump.log".into()),
            ..with_dir(&d)
        },
    );
    assert!(
        e.to_string()
            .contains("No subdirs are allowed in log_file name"),
        "{e}"
    );
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            log_file: Some("-".into()),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(o.log_file, Some(LogTarget::Stdout));
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            log_to_stderr: Some(true),
            log_level: Some(4),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!((o.log_file, o.log_level), (Some(LogTarget::Stderr), 4));
}

#[test]
fn work_dir_fd_wins_over_images_dir() {
    let (images, work) = (dir(), dir());
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            work_dir_fd: Some(work.fd.as_raw_fd()),
            ..with_dir(&images)
        },
    )
    .unwrap();
    assert_eq!(
        o.work_dir.unwrap().path,
        PathBuf::from(format!("/proc/{}/fd/{}", pid(), work.fd.as_raw_fd()))
    );
}

#[test]
fn out_of_range_enums_and_masks_are_refused() {
    let d = dir();
    let cases = [
        CriuOpts {
            empty_ns: Some(EMPTY_NS_NET | 0x2000_0000),
            ..with_dir(&d)
        },
        CriuOpts {
            manage_cgroups_mode: Some(9),
            ..with_dir(&d)
        },
        CriuOpts {
            network_lock: Some(0),
            ..with_dir(&d)
        },
        CriuOpts {
            pre_dump_mode: Some(3),
            ..with_dir(&d)
        },
    ];
    for (o, name) in cases.iter().zip([
        "empty_ns",
        "manage_cgroups_mode",
        "network_lock",
        "pre_dump_mode",
    ]) {
        let e = err(CriuReqType::Dump, o);
        assert!(
            matches!(e, OptsError::OutOfRange { option, .. } if option == name),
            "{name}"
        );
    }
}

#[test]
fn swrk_only_options_are_refused_in_service_mode() {
    let d = dir();
    let in_service = |o: CriuOpts| {
        from_rpc(
            CriuReqType::Restore,
            Some(&o),
            &Config::default(),
            &service(),
        )
    };
    let e = in_service(CriuOpts {
        rst_sibling: Some(false),
        ..with_dir(&d)
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            OptsError::SwrkOnly {
                option: "rst_sibling"
            }
        ),
        "{e}"
    );
    let inh = RpcInheritFd {
        key: "pipe:[1]".into(),
        fd: 0,
    };
    let e = in_service(CriuOpts {
        inherit_fd: vec![inh],
        ..with_dir(&d)
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            OptsError::SwrkOnly {
                option: "inherit_fd"
            }
        ),
        "{e}"
    );
    let ps = CriuPageServerInfo {
        fd: Some(5),
        ..CriuPageServerInfo::default()
    };
    let e = in_service(CriuOpts {
        ps: Some(ps.clone()),
        ..with_dir(&d)
    })
    .unwrap_err();
    assert!(matches!(e, OptsError::SwrkOnly { option: "ps.fd" }), "{e}");
    // With lazy_pages the fd is not looked at (the restore gives it to
    // nobody: the lazy-pages daemon talks to the page server).
    let o = in_service(CriuOpts {
        ps: Some(ps),
        lazy_pages: Some(true),
        ..with_dir(&d)
    })
    .unwrap();
    assert!(o.lazy_pages && !o.page_server && o.ps_socket.is_none());
    // Restoring lazily while punching holes in the pages is refused.
    let e = in_service(CriuOpts {
        auto_dedup: Some(true),
        lazy_pages: Some(true),
        ..with_dir(&d)
    })
    .unwrap_err();
    assert!(e.to_string().contains("auto_dedup"), "{e}");
    // The same options are fine in swrk mode.
    let o = rpc(
        CriuReqType::Restore,
        &CriuOpts {
            rst_sibling: Some(true),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert!(o.restore_sibling);
}

#[test]
fn inherit_fds_must_be_open() {
    let d = dir();
    let (r, _w) = nix::unistd::pipe().unwrap();
    let open = RpcInheritFd {
        key: "pipe:[7]".into(),
        fd: r.as_raw_fd(),
    };
    let o = rpc(
        CriuReqType::Restore,
        &CriuOpts {
            inherit_fd: vec![open],
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(o.inherit_fds[0].fd, r.as_raw_fd());
    let closed = RpcInheritFd {
        key: "pipe:[8]".into(),
        fd: 1_000_000,
    };
    let e = err(
        CriuReqType::Restore,
        &CriuOpts {
            inherit_fd: vec![closed],
            ..with_dir(&d)
        },
    );
    assert!(
        matches!(e, OptsError::InheritFdClosed { fd: 1_000_000, .. }),
        "{e}"
    );
}

#[test]
fn explicit_pid_zero_is_refused_for_dumps_only() {
    let d = dir();
    let e = err(
        CriuReqType::Dump,
        &CriuOpts {
            pid: Some(0),
            ..with_dir(&d)
        },
    );
    assert!(matches!(e, OptsError::InvalidPid { pid: 0 }));
    let e = err(
        CriuReqType::SinglePreDump,
        &CriuOpts {
            pid: Some(-5),
            ..with_dir(&d)
        },
    );
    assert!(matches!(e, OptsError::InvalidPid { pid: -5 }));
    assert!(rpc(
        CriuReqType::Restore,
        &CriuOpts {
            pid: Some(0),
            ..with_dir(&d)
        }
    )
    .is_ok());
}

#[test]
fn unsupported_and_restore_only_options_are_named() {
    let d = dir();
    let e = err(
        CriuReqType::Dump,
        &CriuOpts {
            mntns_compat_mode: Some(true),
            ..with_dir(&d)
        },
    );
    assert_eq!(e.to_string(), "mntns_compat_mode is only valid on restore");
    assert!(rpc(
        CriuReqType::Restore,
        &CriuOpts {
            mntns_compat_mode: Some(true),
            ..with_dir(&d)
        }
    )
    .is_ok());

    // This machine's kernel tracks memory (uffd-wp async + PAGEMAP_SCAN).
    assert!(rpc(
        CriuReqType::PreDump,
        &CriuOpts {
            track_mem: Some(true),
            ..with_dir(&d)
        }
    )
    .is_ok());
    assert!(rpc(
        CriuReqType::Dump,
        &CriuOpts {
            track_mem: Some(false),
            ..with_dir(&d)
        }
    )
    .is_ok());

    let cases: [(CriuOpts, &str); 7] = [
        (
            CriuOpts {
                tls: Some(true),
                ..with_dir(&d)
            },
            "tls",
        ),
        (
            CriuOpts {
                lazy_pages: Some(true),
                ..with_dir(&d)
            },
            "lazy_pages",
        ),
        (
            CriuOpts {
                empty_ns: Some(EMPTY_NS_NET),
                ..with_dir(&d)
            },
            "empty_ns",
        ),
        (
            CriuOpts {
                lsm_profile: Some("apparmor:x".into()),
                ..with_dir(&d)
            },
            "lsm_profile",
        ),
        (
            CriuOpts {
                ext_sharing: Some(true),
                ..with_dir(&d)
            },
            "ext_sharing",
        ),
        (
            CriuOpts {
                manage_cgroups_mode: Some(CriuCgMode::Full as i32),
                ..with_dir(&d)
            },
            "manage_cgroups_mode full",
        ),
        (
            CriuOpts {
                join_ns: vec![criu_proto::rpc::JoinNamespace {
                    ns: "net".into(),
                    ns_file: "/x".into(),
                    extra_opt: None,
                }],
                ..with_dir(&d)
            },
            "join_ns",
        ),
    ];
    for (o, name) in cases {
        let e = err(CriuReqType::Dump, &o);
        assert!(
            matches!(&e, OptsError::Unsupported { option } if option == name),
            "{name}: {e}"
        );
        assert!(e.to_string().contains(name));
    }
    // tls = false, tls_no_cn_verify and certificates alone are harmless.
    assert!(rpc(
        CriuReqType::Dump,
        &CriuOpts {
            tls: Some(false),
            tls_cert: Some("c".into()),
            ..with_dir(&d)
        }
    )
    .is_ok());
}

#[test]
fn opts_are_required_except_for_check() {
    let e = from_rpc(CriuReqType::Dump, None, &Config::default(), &swrk()).unwrap_err();
    assert_eq!(e.to_string(), "no opts in DUMP request");
    assert_eq!(e.cr_errno(), libc::EBADRQC);
}

#[test]
fn status_fd_is_reopened_write_only() {
    let d = dir();
    let (r, w) = nix::unistd::pipe().unwrap();
    let o = rpc(
        CriuReqType::PageServer,
        &CriuOpts {
            status_fd: Some(w.as_raw_fd()),
            ..with_dir(&d)
        },
    )
    .unwrap();
    drop(w);
    nix::unistd::write(o.status_fd.as_ref().unwrap(), b"\0").unwrap();
    let mut buf = [1u8; 1];
    assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
    assert_eq!(buf, [0]);
    let e = err(
        CriuReqType::PageServer,
        &CriuOpts {
            status_fd: Some(1_000_000),
            ..with_dir(&d)
        },
    );
    assert!(matches!(e, OptsError::OpenStatusFd { .. }), "{e}");
}

#[test]
fn page_server_fields() {
    let d = dir();
    let ps = CriuPageServerInfo {
        address: Some("127.0.0.1".into()),
        port: Some(70_000),
        fd: Some(9),
        pid: None,
    };
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            ps: Some(ps),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert!(o.page_server);
    assert_eq!(o.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(o.port, 70_000u32 as u16);
    assert_eq!(o.ps_socket, Some(9));
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn rpc_config_file_overrides_rpc_fields() {
    let d = dir();
    let conf_dir = tempfile::tempdir().unwrap();
    let log_path = conf_dir.path().join("sub.log");
    let conf = write_file(
        conf_dir.path(),
        "runc.conf",
        &format!(
            "log-file {}\nno-tcp-established\naction-script /bin/true\ntimeout=3\n",
            log_path.display()
        ),
    );
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            log_file: Some("dump.log".into()),
            tcp_established: Some(true),
            timeout: Some(20),
            config_file: Some(conf),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(o.log_file, Some(LogTarget::File(log_path)));
    assert!(!o.tcp_established);
    assert_eq!(o.timeout, 3);
    assert_eq!(o.action_scripts, ["/bin/true"]);

    // A '/' in the RPC log_file is not an error when the configuration file replaces it.
    let conf = write_file(conf_dir.path(), "log.conf", "log-file=x.log\n");
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            log_file: Some("a/b".into()),
            config_file: Some(conf),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(o.log_file, Some(LogTarget::File("x.log".into())));
}

#[test]
fn rpc_config_file_dirs_missing_file_and_errors() {
    let d = dir();
    let (images, work) = (dir(), dir());
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = write_file(
        conf_dir.path(),
        "dirs.conf",
        &format!(
            "images-dir {}\nwork-dir {}\n",
            images.tmp.path().display(),
            work.tmp.path().display()
        ),
    );
    let o = rpc(
        CriuReqType::Dump,
        &CriuOpts {
            config_file: Some(conf),
            ..with_dir(&d)
        },
    )
    .unwrap();
    let i = o.images_dir.unwrap();
    assert_eq!(
        (i.source, i.path.as_path()),
        (ImagesDirSource::RpcConfigFile, images.tmp.path())
    );
    assert_eq!(o.work_dir.unwrap().path, work.tmp.path());

    let missing = conf_dir
        .path()
        .join("absent.conf")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(rpc(
        CriuReqType::Dump,
        &CriuOpts {
            config_file: Some(missing),
            ..with_dir(&d)
        }
    )
    .is_ok());

    let bad = write_file(
        conf_dir.path(),
        "bad.conf",
        "tcp-established\nno-such-thing\n",
    );
    let e = err(
        CriuReqType::Dump,
        &CriuOpts {
            config_file: Some(bad.clone()),
            ..with_dir(&d)
        },
    );
    assert!(
        e.to_string().contains("--no-such-thing") && e.to_string().contains(&bad),
        "{e}"
    );
    let syntax = write_file(conf_dir.path(), "syntax.conf", "root \"/x\n");
    let e = err(
        CriuReqType::Dump,
        &CriuOpts {
            config_file: Some(syntax),
            ..with_dir(&d)
        },
    );
    assert!(matches!(&e, OptsError::RpcConfigFile { .. }), "{e}");
}

#[test]
fn connection_defaults_feed_every_request() {
    let d = dir();
    let mut defaults = Config::default();
    crate::config::parse_config_text("log-file=swrk.log\nshell-job\nverbosity=4\n", &mut defaults)
        .unwrap();
    let o = from_rpc(CriuReqType::Dump, Some(&with_dir(&d)), &defaults, &swrk()).unwrap();
    assert_eq!(o.log_file, Some(LogTarget::File("swrk.log".into())));
    assert!(o.shell_job);
    // The request's log level (default 2) wins over the configuration files, as upstream.
    assert_eq!(o.log_level, 2);
    let o = from_rpc(
        CriuReqType::Dump,
        Some(&CriuOpts {
            log_file: Some("req.log".into()),
            shell_job: Some(false),
            ..with_dir(&d)
        }),
        &defaults,
        &swrk(),
    )
    .unwrap();
    assert_eq!(o.log_file, Some(LogTarget::File("req.log".into())));
    assert!(!o.shell_job);
}

#[test]
fn externals_collect_deprecated_forms() {
    let d = dir();
    let o = rpc(
        CriuReqType::Restore,
        &CriuOpts {
            ext_unix_sk: Some(true),
            unix_sk_ino: vec![criu_proto::rpc::UnixSk { inode: 77 }],
            veths: vec![criu_proto::rpc::CriuVethPair {
                if_in: "eth0".into(),
                if_out: "v0".into(),
            }],
            ext_mnt: vec![criu_proto::rpc::ExtMountMap {
                key: "/m".into(),
                val: "k".into(),
            }],
            external: vec!["net[4026531992]:extRootNetNS".into()],
            exec_cmd: vec!["/bin/sh".into()],
            parent_img: Some("../prev".into()),
            ..with_dir(&d)
        },
    )
    .unwrap();
    assert_eq!(
        o.externals,
        [
            "unix[77]",
            "veth[eth0]:v0",
            "mnt[/m]:k",
            "net[4026531992]:extRootNetNS"
        ]
    );
    assert_eq!(o.exec_cmd, ["/bin/sh"]);
    assert_eq!(o.parent_img.as_deref(), Some("../prev"));
}
