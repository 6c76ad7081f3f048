//! Test target for memfds, shared file mappings, unlinked ("ghost") files,
//! link remaps, SysV shared memory and file locks.
//!
//! `criu-wl-memfiles MODE DIR`, MODE one of:
//!
//! * `memfd`: memfd `wl-memfd` (3 pages and a bit of a pattern, fd at
//!   offset 777, also mapped shared and written through the mapping);
//!   memfd `wl-sealed` (pattern, sealed against writes, growing, shrinking
//!   and further seals, mapped shared read-only); memfd `wl-maponly` mapped
//!   shared, its fd closed (reached only through `map_files`);
//! * `shared`: `DIR/shared.dat` mapped `MAP_SHARED` read-write, fd closed;
//! * `ghost`: `DIR/ghost-small` (100 bytes) and `DIR/ghost-big` (20000
//!   bytes with a hole) open at offsets 10 and 12345 and unlinked;
//!   `DIR/ghost-map` mapped shared, closed and unlinked;
//! * `ghost-huge`: `DIR/huge` (2 MiB of data) open and unlinked;
//! * `linked`: `DIR/linked` with a second hard link `DIR/other`, open at
//!   offset 5, then `DIR/linked` unlinked;
//! * `ghost-exe`: runs from a copy of its executable, `DIR/exe-copy`, which
//!   it unlinks;
//! * `tree`: memfd `wl-tree` (fd and shared mapping), `DIR/tree-ghost`
//!   (open, unlinked) and `DIR/tree-flock` (locked with `flock`), then a
//!   child inheriting all three, which answers `DIR/go-child` in
//!   `DIR/result-child`;
//! * `sysv`: a SysV shared memory segment attached;
//! * `lease`: a read lease on `DIR/lease`;
//! * `locks`: `DIR/flock` locked with `flock(LOCK_EX)`, `DIR/posix` with a
//!   POSIX write lock on bytes 0..100, `DIR/ofd` with an OFD read lock on
//!   bytes 10..20.
//!
//! It forks; the child leads a new session, sets up its objects and creates
//! `DIR/ready`; the parent prints the child's pid once it exists and exits.
//! The child then polls for `DIR/go` every 20 ms: it removes it, checks its
//! objects from the inside and writes `ok` or `bad <reason>` to
//! `DIR/result` (through a rename, so the file is always whole).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// Byte `i` of a pattern tagged `tag`.
fn pattern(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

fn die(what: &str) -> ! {
    eprintln!(
        "criu-wl-memfiles: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

/// Maps `len` bytes of `fd` shared.
fn map_shared(fd: RawFd, len: usize, write: bool) -> &'static mut [u8] {
    let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh shared mapping of a descriptor we own, never unmapped;
    // the slice covers exactly the mapped length.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0);
        if p == libc::MAP_FAILED {
            die("mmap");
        }
        std::slice::from_raw_parts_mut(p.cast::<u8>(), len)
    }
}

fn memfd(name: &str, data: &[u8], sealing: bool) -> File {
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if sealing {
        flags |= MFdFlags::MFD_ALLOW_SEALING;
    }
    let fd = memfd_create(name, flags).unwrap_or_else(|_| die("memfd_create"));
    let mut f = File::from(fd);
    f.write_all(data).unwrap_or_else(|_| die("write memfd"));
    f
}

/// Everything the checks need, by mode.
enum State {
    Memfd {
        fd: File,
        map: &'static mut [u8],
        sealed: File,
        sealed_map: &'static [u8],
        maponly: &'static [u8],
    },
    Shared {
        map: &'static mut [u8],
        path: PathBuf,
    },
    Ghost {
        small: File,
        big: File,
        map: &'static [u8],
    },
    Linked {
        fd: File,
    },
    Exe {
        size: u64,
    },
    Tree {
        memfd: File,
        map: &'static mut [u8],
        ghost: File,
    },
    /// Nothing to check from the inside (SysV, locks, refused kinds).
    Nothing,
}

const MEMFD_LEN: usize = 3 * 4096 + 100;
const MEMFD_POS: i64 = 777;
const SEALS: i32 = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

fn setup(mode: &str, dir: &Path) -> State {
    match mode {
        "memfd" => {
            let fd = memfd("wl-memfd", &pattern(1, MEMFD_LEN), true);
            nix::unistd::lseek(&fd, MEMFD_POS, nix::unistd::Whence::SeekSet)
                .unwrap_or_else(|_| die("lseek"));
            let map = map_shared(fd.as_raw_fd(), MEMFD_LEN, true);
            map[4096] = 0xAB;
            let sealed = memfd("wl-sealed", &pattern(2, 5000), true);
            // Sealed first: a shared mapping of a descriptor open for
            // writing would count as writable and forbid F_SEAL_WRITE.
            nix::fcntl::fcntl(
                &sealed,
                FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(SEALS)),
            )
            .unwrap_or_else(|_| die("seal"));
            let sealed_map = map_shared(sealed.as_raw_fd(), 5000, false);
            let only = memfd("wl-maponly", &pattern(3, 8192), false);
            let maponly = map_shared(only.as_raw_fd(), 8192, false);
            drop(only);
            State::Memfd {
                fd,
                map,
                sealed,
                sealed_map,
                maponly,
            }
        }
        "shared" => {
            let path = dir.join("shared.dat");
            std::fs::write(&path, pattern(4, 8192)).unwrap_or_else(|_| die("write"));
            let f = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap_or_else(|_| die("open"));
            let map = map_shared(f.as_raw_fd(), 8192, true);
            State::Shared { map, path }
        }
        "ghost" | "ghost-huge" => {
            let open_unlinked = |name: &str, data: &[u8], pos: i64| {
                let path = dir.join(name);
                std::fs::write(&path, data).unwrap_or_else(|_| die("write"));
                let f = File::open(&path).unwrap_or_else(|_| die("open"));
                nix::unistd::lseek(&f, pos, nix::unistd::Whence::SeekSet)
                    .unwrap_or_else(|_| die("lseek"));
                std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink"));
                f
            };
            if mode == "ghost-huge" {
                let f = open_unlinked("huge", &pattern(9, 2 << 20), 0);
                std::mem::forget(f);
                return State::Nothing;
            }
            let small = open_unlinked("ghost-small", &pattern(5, 100), 10);
            let mut data = pattern(6, 20000);
            data[4096..8192].fill(0);
            let big = {
                let path = dir.join("ghost-big");
                let f = File::create(&path).unwrap_or_else(|_| die("create"));
                f.write_all_at(&data[..4096], 0)
                    .unwrap_or_else(|_| die("write"));
                f.write_all_at(&data[8192..], 8192)
                    .unwrap_or_else(|_| die("write"));
                drop(f);
                let f = File::open(&path).unwrap_or_else(|_| die("open"));
                nix::unistd::lseek(&f, 12345, nix::unistd::Whence::SeekSet)
                    .unwrap_or_else(|_| die("lseek"));
                std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink"));
                f
            };
            let map = {
                let path = dir.join("ghost-map");
                std::fs::write(&path, pattern(7, 4096)).unwrap_or_else(|_| die("write"));
                let f = File::open(&path).unwrap_or_else(|_| die("open"));
                let map = map_shared(f.as_raw_fd(), 4096, false);
                std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink"));
                map
            };
            State::Ghost { small, big, map }
        }
        "linked" => {
            let path = dir.join("linked");
            std::fs::write(&path, b"hello linked").unwrap_or_else(|_| die("write"));
            std::fs::hard_link(&path, dir.join("other")).unwrap_or_else(|_| die("link"));
            let fd = File::open(&path).unwrap_or_else(|_| die("open"));
            nix::unistd::lseek(&fd, 5, nix::unistd::Whence::SeekSet)
                .unwrap_or_else(|_| die("lseek"));
            std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink"));
            State::Linked { fd }
        }
        "tree" => {
            let memfd = memfd("wl-tree", &pattern(10, 8192), false);
            let map = map_shared(memfd.as_raw_fd(), 8192, true);
            let path = dir.join("tree-ghost");
            std::fs::write(&path, pattern(11, 300)).unwrap_or_else(|_| die("write"));
            let ghost = File::open(&path).unwrap_or_else(|_| die("open"));
            std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink"));
            let fl = File::create(dir.join("tree-flock")).unwrap_or_else(|_| die("create"));
            // SAFETY: flock on a descriptor we own; kept open for good.
            if unsafe { libc::flock(fl.into_raw_fd(), libc::LOCK_EX) } != 0 {
                die("flock");
            }
            State::Tree { memfd, map, ghost }
        }
        "ghost-exe-run" => {
            let path = dir.join("exe-copy");
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|_| die("stat"))
                .len();
            std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink"));
            State::Exe { size }
        }
        "sysv" => {
            // SAFETY: plain SysV calls; the segment is attached where the
            // kernel chooses and never detached.
            unsafe {
                let id = libc::shmget(libc::IPC_PRIVATE, 8192, libc::IPC_CREAT | 0o600);
                if id < 0 {
                    die("shmget");
                }
                if libc::shmat(id, std::ptr::null(), 0) as isize == -1 {
                    die("shmat");
                }
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
            State::Nothing
        }
        "lease" => {
            let path = dir.join("lease");
            std::fs::write(&path, b"lease").unwrap_or_else(|_| die("write"));
            let f = File::open(&path).unwrap_or_else(|_| die("open"));
            // SAFETY: fcntl on a descriptor we own, kept open for good.
            if unsafe { libc::fcntl(f.into_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
                die("F_SETLEASE");
            }
            State::Nothing
        }
        "locks" => {
            let open = |name: &str| {
                let f = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join(name))
                    .unwrap_or_else(|_| die("open"));
                f.set_len(4096).unwrap_or_else(|_| die("truncate"));
                f.into_raw_fd()
            };
            let fl = open("flock");
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(fl, libc::LOCK_EX) } != 0 {
                die("flock");
            }
            let px = open("posix");
            set_lock(px, libc::F_SETLK, libc::F_WRLCK, 0, 100);
            let ofd = open("ofd");
            set_lock(ofd, libc::F_OFD_SETLK, libc::F_RDLCK, 10, 10);
            State::Nothing
        }
        other => {
            eprintln!("criu-wl-memfiles: unknown mode {other}");
            std::process::exit(2)
        }
    }
}

fn set_lock(fd: RawFd, cmd: i32, ltype: i32, start: i64, len: i64) {
    // SAFETY: an all-zero `struct flock` is valid; fcntl reads it only.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ltype as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: `fl` is a live, correctly typed struct flock.
    if unsafe { libc::fcntl(fd, cmd, &fl) } != 0 {
        die("fcntl lock");
    }
}

fn pos(f: &File) -> i64 {
    nix::unistd::lseek(f, 0, nix::unistd::Whence::SeekCur).unwrap_or(-1)
}

fn link(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check(state: &mut State) -> Result<(), String> {
    match state {
        State::Memfd {
            fd,
            map,
            sealed,
            sealed_map,
            maponly,
        } => {
            if link(fd.as_raw_fd()) != "/memfd:wl-memfd (deleted)" {
                return Err(format!("memfd link {}", link(fd.as_raw_fd())));
            }
            if pos(fd) != MEMFD_POS {
                return Err(format!("memfd offset {}", pos(fd)));
            }
            let mut want = pattern(1, MEMFD_LEN);
            want[4096] = 0xAB;
            let mut got = vec![0u8; MEMFD_LEN];
            fd.read_exact_at(&mut got, 0).map_err(|e| e.to_string())?;
            if got != want || map[..] != want[..] {
                return Err("memfd content".into());
            }
            // Fd and mapping still share one inode.
            map[100] ^= 0xFF;
            let mut b = [0u8; 1];
            fd.read_exact_at(&mut b, 100).map_err(|e| e.to_string())?;
            if b[0] != map[100] {
                return Err("memfd mapping and fd differ".into());
            }
            map[100] ^= 0xFF;
            let seals = nix::fcntl::fcntl(&*sealed, FcntlArg::F_GET_SEALS).unwrap_or(-1);
            if seals != SEALS {
                return Err(format!("seals {seals:#x}"));
            }
            if sealed.write_at(b"x", 0).is_ok() {
                return Err("sealed memfd accepted a write".into());
            }
            if sealed_map[..] != pattern(2, 5000)[..] {
                return Err("sealed content".into());
            }
            if maponly[..] != pattern(3, 8192)[..] {
                return Err("map-only memfd content".into());
            }
            let addr = maponly.as_ptr() as usize;
            let name =
                std::fs::read_link(format!("/proc/self/map_files/{addr:x}-{:x}", addr + 8192))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
            if !name.starts_with("/memfd:wl-maponly") {
                return Err(format!("map-only memfd is {name:?}"));
            }
            Ok(())
        }
        State::Shared { map, path } => {
            if map[..] != pattern(4, 8192)[..] {
                return Err("shared mapping content".into());
            }
            map[0] ^= 0x5A;
            let now = std::fs::read(&*path).map_err(|e| e.to_string())?;
            let seen = now[0];
            map[0] ^= 0x5A;
            if seen != pattern(4, 1)[0] ^ 0x5A {
                return Err("a write through the mapping did not reach the file".into());
            }
            Ok(())
        }
        State::Ghost { small, big, map } => {
            for (f, p, len, tag) in [(&*small, 10, 100, 5u8), (&*big, 12345, 20000, 6)] {
                if pos(f) != p {
                    return Err(format!("ghost offset {} != {p}", pos(f)));
                }
                let meta = f.metadata().map_err(|e| e.to_string())?;
                if std::os::unix::fs::MetadataExt::nlink(&meta) != 0 {
                    return Err("ghost file linked again".into());
                }
                let mut want = pattern(tag, len);
                if tag == 6 {
                    want[4096..8192].fill(0);
                }
                let mut got = vec![0u8; len];
                f.read_exact_at(&mut got, 0).map_err(|e| e.to_string())?;
                if got != want || meta.len() != len as u64 {
                    return Err(format!("ghost content ({len} bytes)"));
                }
            }
            if map[..] != pattern(7, 4096)[..] {
                return Err("mapped ghost content".into());
            }
            Ok(())
        }
        State::Linked { fd } => {
            let mut b = vec![0u8; 12];
            fd.read_exact_at(&mut b, 0).map_err(|e| e.to_string())?;
            if b != b"hello linked" || pos(fd) != 5 {
                return Err("linked file content or offset".into());
            }
            Ok(())
        }
        State::Exe { size } => {
            let exe = std::fs::read_link("/proc/self/exe").map_err(|e| e.to_string())?;
            if !exe.to_string_lossy().ends_with(" (deleted)") {
                return Err(format!("executable {exe:?} is linked"));
            }
            let data = std::fs::read("/proc/self/exe").map_err(|e| e.to_string())?;
            if data.len() as u64 != *size || !data.starts_with(b"\x7fELF") {
                return Err("executable content".into());
            }
            Ok(())
        }
        State::Tree { memfd, map, ghost } => {
            if map[..] != pattern(10, 8192)[..] {
                return Err("tree memfd content".into());
            }
            // Parent and child see each other's writes: one inode.
            let mut b = [0u8; 1];
            memfd.read_exact_at(&mut b, 0).map_err(|e| e.to_string())?;
            if b[0] != map[0] {
                return Err("tree memfd fd and mapping differ".into());
            }
            let mut got = vec![0u8; 300];
            ghost
                .read_exact_at(&mut got, 0)
                .map_err(|e| e.to_string())?;
            if got != pattern(11, 300) {
                return Err("tree ghost content".into());
            }
            Ok(())
        }
        State::Nothing => Ok(()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: criu-wl-memfiles MODE DIR");
        std::process::exit(2);
    }
    let (mode, dir) = (args[1].clone(), PathBuf::from(&args[2]));
    if mode == "ghost-exe" {
        use std::os::unix::process::CommandExt;
        let copy = dir.join("exe-copy");
        std::fs::copy("/proc/self/exe", &copy).unwrap_or_else(|_| die("copy"));
        let err = std::process::Command::new(&copy)
            .arg("ghost-exe-run")
            .arg(&dir)
            .exec();
        eprintln!("criu-wl-memfiles: exec: {err}");
        std::process::exit(1);
    }
    let ready = dir.join("ready");
    // SAFETY: single-threaded here; the child only runs plain code.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|_| die("fork")) {
        nix::unistd::ForkResult::Parent { child } => {
            for _ in 0..500 {
                if ready.exists() {
                    println!("{child}");
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("criu-wl-memfiles: the child never got ready");
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Child => {}
    }
    nix::unistd::setsid().unwrap_or_else(|_| die("setsid"));
    let null = CString::new("/dev/null").expect("no NUL");
    let fd = nix::fcntl::open(
        null.as_c_str(),
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|_| die("open /dev/null"));
    for std_fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe { libc::dup2(fd.as_raw_fd(), std_fd) };
    }
    drop(fd);
    for fd in 3..1024 {
        // SAFETY: closes inherited descriptors before anything of ours
        // exists.
        unsafe { libc::close(fd) };
    }
    let mut state = setup(&mode, &dir);
    let mut suffix = "";
    if mode == "tree" {
        // SAFETY: single-threaded; the child runs the same plain loop.
        let forked = unsafe { nix::unistd::fork() };
        if let nix::unistd::ForkResult::Child = forked.unwrap_or_else(|_| die("fork")) {
            suffix = "-child";
        }
    }
    if suffix.is_empty() {
        File::create(&ready).unwrap_or_else(|_| die("ready"));
    }
    let go = dir.join(format!("go{suffix}"));
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if std::fs::remove_file(&go).is_err() {
            continue;
        }
        let verdict = match check(&mut state) {
            Ok(()) => "ok".to_owned(),
            Err(why) => format!("bad {why}"),
        };
        let tmp = dir.join(format!("result{suffix}.tmp"));
        if std::fs::write(&tmp, verdict).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(format!("result{suffix}")));
        }
    }
}
