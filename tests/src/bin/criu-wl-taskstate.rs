//! Test target for per-task kernel state: pending signals, timers, `prctl`
//! state, seccomp filters, rseq and `madvise`/`mlock` state, each checked
//! from the inside after a restore.
//!
//! `criu-wl-taskstate DIR [guard] [tsync] [pidns]`
//!
//! It forks: the parent prints the child's pid and exits; the child leads
//! its own session, sets everything up (see [`setup`]), appends
//! `ready TIMER_A TIMER_C TIMER_D DELETED` to `DIR/log` and then polls
//! `DIR/go`. When that file holds a tag it has not handled yet, the main
//! thread and the extra thread check their state and append
//! `TAG NAME ok` or `TAG NAME FAIL: DETAIL` lines, then `TAG done`.
//!
//! With `guard`, one page of a 4-page region carries a
//! `MADV_GUARD_INSTALL` guard, checked through `/proc/self/pagemap`. The
//! main thread installs two seccomp filters, the first with
//! `SECCOMP_FILTER_FLAG_TSYNC` (so the extra thread has it too); with
//! `tsync`, both. With `pidns`, the process is the init of a new pid
//! namespace (its pid printed as the host sees it).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Real-time signal queued twice to the process (shared queue).
const RT_SIG: i32 = 40;
/// Signal of the periodic POSIX timer A.
const TIMER_SIG: i32 = 39;
/// Signal of the thread-targeted POSIX timer D.
const THREAD_TIMER_SIG: i32 = 41;
/// `sigev_value` of timer A.
const TIMER_A_VALUE: u64 = 0xabc;
/// Values queued with the signals.
const RT_VALUES: [u32; 2] = [111, 222];
const MAIN_USR2_VALUE: u32 = 444;
const THREAD_USR2_VALUE: u32 = 333;
/// Audit login uid set.
const LOGINUID: u32 = 4321;
/// Supplementary groups set.
const GROUPS: [u32; 2] = [1234, 5678];
/// `SECBIT_KEEP_CAPS`.
const SECBITS: u64 = 0x10;
/// `CAP_SYS_BOOT`, dropped from every set.
const DROPPED_CAP: u32 = 22;
/// `ADDR_NO_RANDOMIZE`.
const PERSONALITY: u64 = 0x0040000;
/// Errnos the seccomp filters return.
const MINCORE_ERRNO: i32 = 77;
const SYSINFO_ERRNO: i32 = 78;
/// `PR_GET_THP_DISABLE` and friends not in every libc.
const PR_SET_THP_DISABLE: i32 = 41;
const PR_GET_THP_DISABLE: i32 = 42;
/// `MADV_GUARD_INSTALL`.
const MADV_GUARD_INSTALL: i32 = 102;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`, `MEMBARRIER_CMD_GET_REGISTRATIONS`.
const MEMBARRIER_REGISTER: usize = 1 << 4;
const MEMBARRIER_GET_REGISTRATIONS: usize = 1 << 9;
/// x86-64 `RSEQ_SIG`.
const RSEQ_SIG: u64 = 0x5305_3053;
const PAGE: usize = 4096;

/// Signals recorded by the handler: `main << 63 | sig << 32 | value`.
static REC: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];
static REC_N: AtomicUsize = AtomicUsize::new(0);
static ALARMS: AtomicU64 = AtomicU64::new(0);
static TICKS_A: AtomicU64 = AtomicU64::new(0);
static BAD_TICKS_A: AtomicU64 = AtomicU64::new(0);
static TIMER_A_ID: AtomicI32 = AtomicI32::new(-1);
static MAIN_TID: AtomicI32 = AtomicI32::new(0);
static THREAD_TID: AtomicI32 = AtomicI32::new(0);
static THREAD_READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
/// With `tsync`: both seccomp filters reach every thread.
static TSYNC: AtomicBool = AtomicBool::new(false);
static THREAD_DONE: AtomicBool = AtomicBool::new(false);
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static TAG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn die(what: &str) -> ! {
    eprintln!(
        "criu-wl-taskstate: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

/// A raw syscall; `Err(errno)` on failure.
fn sc(nr: libc::c_long, a: [usize; 5]) -> Result<i64, i32> {
    // SAFETY: every caller passes integers or pointers to live buffers of
    // the sizes the syscall `nr` reads or writes.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn gettid() -> i32 {
    sc(libc::SYS_gettid, [0; 5]).unwrap_or(0) as i32
}

fn prctl(op: i32, arg: usize) -> Result<i64, i32> {
    sc(libc::SYS_prctl, [op as usize, arg, 0, 0, 0])
}

fn log_line(line: &str) {
    let fd = LOG_FD.load(Ordering::Relaxed);
    let bytes = format!("{line}\n");
    // SAFETY: writes from a live buffer to the log fd this process owns.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn report(name: &str, result: Result<(), String>) {
    let tag = TAG.lock().map(|t| t.clone()).unwrap_or_default();
    match result {
        Ok(()) => log_line(&format!("{tag} {name} ok")),
        Err(e) => log_line(&format!("{tag} {name} FAIL: {e}")),
    }
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // x86-64 siginfo: timer id at 16 (`_timer`), value at 24 (`_rt`/`_timer`).
    let raw = info.cast::<u8>();
    // SAFETY: the kernel hands a full siginfo; both reads stay inside it.
    let (id, value) = unsafe {
        (
            raw.add(16).cast::<i32>().read_unaligned(),
            raw.add(24).cast::<u64>().read_unaligned(),
        )
    };
    match sig {
        libc::SIGALRM => {
            ALARMS.fetch_add(1, Ordering::Relaxed);
        }
        TIMER_SIG => {
            if id == TIMER_A_ID.load(Ordering::Relaxed) && value == TIMER_A_VALUE {
                TICKS_A.fetch_add(1, Ordering::Relaxed);
            } else {
                BAD_TICKS_A.fetch_add(1, Ordering::Relaxed);
            }
        }
        libc::SIGUSR2 | RT_SIG => {
            let main = u64::from(gettid() == MAIN_TID.load(Ordering::Relaxed));
            let i = REC_N.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = REC.get(i) {
                slot.store(
                    (main << 63) | ((sig as u64) << 32) | (value & 0xffff_ffff),
                    Ordering::Relaxed,
                );
            }
        }
        _ => {}
    }
}

fn handle(sig: i32, ignore: bool) {
    // SAFETY: installs a handler that only touches atomics, or SIG_IGN.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = if ignore {
            libc::SIG_IGN
        } else {
            on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as usize
        };
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            die("sigaction");
        }
    }
}

fn sigset(sigs: &[i32]) -> u64 {
    sigs.iter().fold(0u64, |m, &s| m | (1 << (s - 1)))
}

/// `rt_sigprocmask(how, set)`; returns the old mask.
fn sigmask(how: i32, set: u64) -> u64 {
    let mut old = 0u64;
    sc(
        libc::SYS_rt_sigprocmask,
        [
            how as usize,
            &raw const set as usize,
            &raw mut old as usize,
            8,
            0,
        ],
    )
    .unwrap_or_else(|_| die("rt_sigprocmask"));
    old
}

fn pending() -> u64 {
    let mut set = 0u64;
    sc(libc::SYS_rt_sigpending, [&raw mut set as usize, 8, 0, 0, 0])
        .unwrap_or_else(|_| die("rt_sigpending"));
    set
}

/// Queues `sig` with `value`: to the process, or to thread `tid`.
fn queue(sig: i32, value: u32, tid: Option<i32>) {
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    info[8..12].copy_from_slice(&(-1i32).to_le_bytes()); // SI_QUEUE
                                                         // SAFETY: getpid/getuid cannot fail.
    let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    info[16..20].copy_from_slice(&pid.to_le_bytes());
    info[20..24].copy_from_slice(&uid.to_le_bytes());
    info[24..28].copy_from_slice(&value.to_le_bytes());
    let p = info.as_ptr() as usize;
    let r = match tid {
        None => sc(
            libc::SYS_rt_sigqueueinfo,
            [pid as usize, sig as usize, p, 0, 0],
        ),
        Some(t) => sc(
            libc::SYS_rt_tgsigqueueinfo,
            [pid as usize, t as usize, sig as usize, p, 0],
        ),
    };
    r.unwrap_or_else(|_| die("sigqueueinfo"));
}

/// `timer_create` with a kernel `sigevent`; returns the kernel timer id.
fn timer_create(clock: i32, notify: i32, sig: i32, value: u64, tid: i32) -> i32 {
    let mut ev = [0u8; 64];
    ev[0..8].copy_from_slice(&value.to_le_bytes());
    ev[8..12].copy_from_slice(&sig.to_le_bytes());
    ev[12..16].copy_from_slice(&notify.to_le_bytes());
    ev[16..20].copy_from_slice(&tid.to_le_bytes());
    let mut id = 0i32;
    sc(
        libc::SYS_timer_create,
        [
            clock as usize,
            ev.as_ptr() as usize,
            &raw mut id as usize,
            0,
            0,
        ],
    )
    .unwrap_or_else(|_| die("timer_create"));
    id
}

/// `[interval_sec, interval_nsec, value_sec, value_nsec]`.
fn timer_settime(id: i32, t: [i64; 4]) {
    sc(
        libc::SYS_timer_settime,
        [id as usize, 0, t.as_ptr() as usize, 0, 0],
    )
    .unwrap_or_else(|_| die("timer_settime"));
}

fn timer_gettime(id: i32) -> Result<[i64; 4], i32> {
    let mut t = [0i64; 4];
    sc(
        libc::SYS_timer_gettime,
        [id as usize, t.as_mut_ptr() as usize, 0, 0, 0],
    )?;
    Ok(t)
}

/// `[interval_sec, interval_usec, value_sec, value_usec]`.
fn setitimer(which: i32, t: [i64; 4]) {
    sc(
        libc::SYS_setitimer,
        [which as usize, t.as_ptr() as usize, 0, 0, 0],
    )
    .unwrap_or_else(|_| die("setitimer"));
}

fn getitimer(which: i32) -> [i64; 4] {
    let mut t = [0i64; 4];
    sc(
        libc::SYS_getitimer,
        [which as usize, t.as_mut_ptr() as usize, 0, 0, 0],
    )
    .unwrap_or_else(|_| die("getitimer"));
    t
}

/// A seccomp filter returning `errno` for syscall `nr` (x86-64 only).
fn seccomp_block(nr: libc::c_long, errno: i32, flags: usize) {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let prog = [
        stmt(ld, 4),
        jump(0xc000_003e, 0, 3),
        stmt(ld, 0),
        jump(nr as u32, 0, 1),
        stmt(ret, 0x0005_0000 | errno as u32),
        stmt(ret, 0x7fff_0000),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    sc(
        libc::SYS_seccomp,
        [1, flags, &raw const fprog as usize, 0, 0],
    )
    .unwrap_or_else(|_| die("seccomp"));
}

/// Maps `pages` anonymous private pages (with extra `flags`) and touches them.
fn map(pages: usize, flags: i32) -> usize {
    // SAFETY: a fresh mapping at an address the kernel picks.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    for i in 0..pages {
        // SAFETY: inside the fresh writable mapping.
        unsafe { p.cast::<u8>().add(i * PAGE).write_volatile(i as u8 + 1) };
    }
    p as usize
}

fn madvise(addr: usize, pages: usize, advice: i32) {
    sc(
        libc::SYS_madvise,
        [addr, pages * PAGE, advice as usize, 0, 0],
    )
    .unwrap_or_else(|_| die("madvise"));
}

/// Addresses of what [`setup`] made, for the checks.
#[derive(Clone, Copy)]
struct Setup {
    advised: usize,
    locked: usize,
    growsdown: usize,
    guard: Option<usize>,
    timer_a: i32,
    timer_c: i32,
    timer_d: i32,
    deleted: i32,
}

/// Everything the checks look at.
fn setup(guard: bool) -> Setup {
    MAIN_TID.store(gettid(), Ordering::Relaxed);
    for sig in [
        libc::SIGUSR2,
        RT_SIG,
        TIMER_SIG,
        THREAD_TIMER_SIG,
        libc::SIGALRM,
        libc::SIGWINCH,
    ] {
        handle(sig, false);
    }
    handle(libc::SIGHUP, true);
    sigmask(libc::SIG_BLOCK, sigset(&[libc::SIGUSR2, RT_SIG]));
    std::thread::spawn(thread_main);
    while !THREAD_READY.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ttid = THREAD_TID.load(Ordering::Relaxed);
    for v in RT_VALUES {
        queue(RT_SIG, v, None);
    }
    queue(libc::SIGUSR2, MAIN_USR2_VALUE, Some(gettid()));
    queue(libc::SIGUSR2, THREAD_USR2_VALUE, Some(ttid));

    setitimer(libc::ITIMER_REAL, [0, 50_000, 0, 50_000]);
    setitimer(libc::ITIMER_VIRTUAL, [7, 0, 1000, 0]);
    setitimer(libc::ITIMER_PROF, [3, 0, 900, 0]);

    let timer_a = timer_create(
        libc::CLOCK_MONOTONIC,
        libc::SIGEV_SIGNAL,
        TIMER_SIG,
        TIMER_A_VALUE,
        0,
    );
    TIMER_A_ID.store(timer_a, Ordering::Relaxed);
    let deleted = timer_create(libc::CLOCK_MONOTONIC, libc::SIGEV_NONE, 0, 0, 0);
    let timer_c = timer_create(libc::CLOCK_REALTIME, libc::SIGEV_NONE, 0, 0, 0);
    let timer_d = timer_create(
        libc::CLOCK_BOOTTIME,
        libc::SIGEV_THREAD_ID,
        THREAD_TIMER_SIG,
        0x77,
        ttid,
    );
    sc(libc::SYS_timer_delete, [deleted as usize, 0, 0, 0, 0])
        .unwrap_or_else(|_| die("timer_delete"));
    timer_settime(timer_a, [0, 30_000_000, 0, 30_000_000]);
    timer_settime(timer_c, [5, 0, 1000, 0]);
    timer_settime(timer_d, [9, 0, 800, 0]);

    sc(libc::SYS_membarrier, [MEMBARRIER_REGISTER, 0, 0, 0, 0])
        .unwrap_or_else(|_| die("membarrier"));
    std::fs::write("/proc/self/loginuid", LOGINUID.to_string()).unwrap_or_else(|_| die("loginuid"));
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1).unwrap_or_else(|_| die("subreaper"));
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGWINCH as usize).unwrap_or_else(|_| die("pdeath"));
    prctl(PR_SET_THP_DISABLE, 1).unwrap_or_else(|_| die("thp"));
    prctl(libc::PR_SET_DUMPABLE, 0).unwrap_or_else(|_| die("dumpable"));
    prctl(libc::PR_SET_SECUREBITS, SECBITS as usize).unwrap_or_else(|_| die("securebits"));
    sc(libc::SYS_personality, [PERSONALITY as usize, 0, 0, 0, 0])
        .unwrap_or_else(|_| die("personality"));
    sc(
        libc::SYS_setgroups,
        [GROUPS.len(), GROUPS.as_ptr() as usize, 0, 0, 0],
    )
    .unwrap_or_else(|_| die("setgroups"));
    prctl(libc::PR_CAPBSET_DROP, DROPPED_CAP as usize).unwrap_or_else(|_| die("capbset"));
    let (hdr, mut data) = caps();
    data[0][0] &= !(1 << DROPPED_CAP);
    data[0][1] &= !(1 << DROPPED_CAP);
    sc(
        libc::SYS_capset,
        [hdr.as_ptr() as usize, data.as_ptr() as usize, 0, 0, 0],
    )
    .unwrap_or_else(|_| die("capset"));
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).unwrap_or_else(|_| die("no_new_privs"));
    // The first filter reaches the other thread too, the second not.
    seccomp_block(libc::SYS_mincore, MINCORE_ERRNO, 1);
    let tsync = usize::from(TSYNC.load(Ordering::Relaxed));
    seccomp_block(libc::SYS_sysinfo, SYSINFO_ERRNO, tsync);

    let advised = map(24, 0);
    for (i, advice) in [
        libc::MADV_DONTFORK,
        libc::MADV_WIPEONFORK,
        libc::MADV_HUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        libc::MADV_DONTDUMP,
    ]
    .into_iter()
    .enumerate()
    {
        madvise(advised + i * 4 * PAGE, 4, advice);
    }
    let locked = map(4, 0);
    sc(libc::SYS_mlock, [locked, 4 * PAGE, 0, 0, 0]).unwrap_or_else(|_| die("mlock"));
    let growsdown = map(4, libc::MAP_GROWSDOWN);
    let guard = guard.then(|| {
        let g = map(4, 0);
        madvise(g + PAGE, 1, MADV_GUARD_INSTALL);
        g
    });
    Setup {
        advised,
        locked,
        growsdown,
        guard,
        timer_a,
        timer_c,
        timer_d,
        deleted,
    }
}

/// `capget`: the v3 header and `[effective, permitted, inheritable]` words.
fn caps() -> ([u32; 2], [[u32; 3]; 2]) {
    let hdr = [0x2008_0522u32, 0];
    let mut data = [[0u32; 3]; 2];
    sc(
        libc::SYS_capget,
        [hdr.as_ptr() as usize, data.as_mut_ptr() as usize, 0, 0, 0],
    )
    .unwrap_or_else(|_| die("capget"));
    (hdr, data)
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// Waits up to 5 s for `cond`.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Signals recorded so far, as `(main, sig, value)`.
fn recorded() -> Vec<(bool, i32, u32)> {
    let n = REC_N.load(Ordering::Relaxed).min(REC.len());
    REC[..n]
        .iter()
        .map(|r| {
            let v = r.load(Ordering::Relaxed);
            (v >> 63 == 1, ((v >> 32) & 0x7fff_ffff) as i32, v as u32)
        })
        .collect()
}

fn check_signals() -> Result<(), String> {
    let usr2_rt = sigset(&[libc::SIGUSR2, RT_SIG]);
    let blocked = sigmask(libc::SIG_BLOCK, 0);
    expect("blocked", blocked & usr2_rt, usr2_rt)?;
    expect("pending", pending() & usr2_rt, usr2_rt)?;
    // SAFETY: reads the current disposition into a zeroed struct.
    let hup = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut sa);
        sa.sa_sigaction
    };
    expect("SIGHUP ignored", hup, libc::SIG_IGN)?;
    sigmask(libc::SIG_UNBLOCK, usr2_rt);
    let want = vec![
        (true, libc::SIGUSR2, MAIN_USR2_VALUE),
        (true, RT_SIG, RT_VALUES[0]),
        (true, RT_SIG, RT_VALUES[1]),
    ];
    eventually(|| recorded().iter().filter(|r| r.0).count() >= 3);
    // Handlers of different signals nest in any order; a signal's own
    // queue is delivered in order.
    let mut main: Vec<_> = recorded().into_iter().filter(|r| r.0).collect();
    main.sort_by_key(|r| r.1);
    expect("delivered to the main thread", main, want)
}

fn check_itimers() -> Result<(), String> {
    expect(
        "real interval",
        getitimer(libc::ITIMER_REAL)[..2].to_vec(),
        vec![0, 50_000],
    )?;
    let v = getitimer(libc::ITIMER_VIRTUAL);
    expect("virtual interval", v[..2].to_vec(), vec![7, 0])?;
    if !(v[2] > 0 && v[2] <= 1000) {
        return Err(format!("virtual value {v:?}"));
    }
    let p = getitimer(libc::ITIMER_PROF);
    expect("prof interval", p[..2].to_vec(), vec![3, 0])?;
    if !(p[2] > 0 && p[2] <= 900) {
        return Err(format!("prof value {p:?}"));
    }
    let start = ALARMS.load(Ordering::Relaxed);
    if !eventually(|| ALARMS.load(Ordering::Relaxed) >= start + 3) {
        return Err("SIGALRM stopped arriving".into());
    }
    Ok(())
}

fn check_posix_timers(s: &Setup) -> Result<(), String> {
    let a = timer_gettime(s.timer_a).map_err(|e| format!("timer A: errno {e}"))?;
    expect("timer A interval", a[..2].to_vec(), vec![0, 30_000_000])?;
    let start = TICKS_A.load(Ordering::Relaxed);
    if !eventually(|| TICKS_A.load(Ordering::Relaxed) >= start + 3) {
        return Err("timer A stopped firing".into());
    }
    expect(
        "foreign timer signals",
        BAD_TICKS_A.load(Ordering::Relaxed),
        0,
    )?;
    let c = timer_gettime(s.timer_c).map_err(|e| format!("timer C: errno {e}"))?;
    expect("timer C interval", c[..2].to_vec(), vec![5, 0])?;
    if !(c[2] > 0 && c[2] <= 1000) {
        return Err(format!("timer C value {c:?}"));
    }
    let d = timer_gettime(s.timer_d).map_err(|e| format!("timer D: errno {e}"))?;
    expect("timer D interval", d[..2].to_vec(), vec![9, 0])?;
    if !(d[2] > 0 && d[2] <= 800) {
        return Err(format!("timer D value {d:?}"));
    }
    expect(
        "deleted timer",
        timer_gettime(s.deleted).err(),
        Some(libc::EINVAL),
    )?;
    // Signal, value, target and clock as the kernel shows them.
    // `/proc` is the host's: it names threads by their host ids.
    let pid = host_tid(MAIN_TID.load(Ordering::Relaxed))?;
    let ttid = host_tid(THREAD_TID.load(Ordering::Relaxed))?;
    let mut want = vec![
        format!(
            "ID: {}|signal: 39/0000000000000abc|notify: signal/pid.{pid}|ClockID: 1",
            s.timer_a
        ),
        format!(
            "ID: {}|signal: 0/0000000000000000|notify: none/pid.{pid}|ClockID: 0",
            s.timer_c
        ),
        format!(
            "ID: {}|signal: 41/0000000000000077|notify: signal/tid.{ttid}|ClockID: 7",
            s.timer_d
        ),
    ];
    let text = std::fs::read_to_string("/proc/self/timers").map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    let mut got: Vec<String> = lines.chunks(4).map(|c| c.join("|")).collect();
    want.sort();
    got.sort();
    expect("/proc/self/timers", got, want)
}

/// The host id of our thread `tid` (as `gettid` says it), from the
/// `NSpid:` lines of `/proc/self/task/*/status`.
fn host_tid(tid: i32) -> Result<i32, String> {
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())?;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let ids: Vec<i32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ids.last() == Some(&tid) {
            return Ok(ids[0]);
        }
    }
    Err(format!("no thread {tid} in /proc/self/task"))
}

fn check_prctl() -> Result<(), String> {
    let mut v = 0i32;
    prctl(libc::PR_GET_CHILD_SUBREAPER, &raw mut v as usize).map_err(|e| e.to_string())?;
    expect("child subreaper", v, 1)?;
    prctl(libc::PR_GET_PDEATHSIG, &raw mut v as usize).map_err(|e| e.to_string())?;
    expect("pdeath signal", v, libc::SIGWINCH)?;
    expect("thp disable", prctl(PR_GET_THP_DISABLE, 0), Ok(1))?;
    expect("dumpable", prctl(libc::PR_GET_DUMPABLE, 0), Ok(0))?;
    expect("no_new_privs", prctl(libc::PR_GET_NO_NEW_PRIVS, 0), Ok(1))?;
    expect(
        "securebits",
        prctl(libc::PR_GET_SECUREBITS, 0),
        Ok(SECBITS as i64),
    )?;
    expect(
        "personality",
        sc(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0]),
        Ok(PERSONALITY as i64),
    )?;
    expect(
        "login uid",
        std::fs::read_to_string("/proc/self/loginuid")
            .map(|t| t.trim().to_owned())
            .ok(),
        Some(LOGINUID.to_string()),
    )?;
    expect(
        "membarrier registrations",
        sc(
            libc::SYS_membarrier,
            [MEMBARRIER_GET_REGISTRATIONS, 0, 0, 0, 0],
        )
        .map(|m| m as usize & MEMBARRIER_REGISTER),
        Ok(MEMBARRIER_REGISTER),
    )
}

fn check_creds() -> Result<(), String> {
    let mut groups = [0u32; 16];
    let n = sc(
        libc::SYS_getgroups,
        [16, groups.as_mut_ptr() as usize, 0, 0, 0],
    )
    .map_err(|e| e.to_string())?;
    let mut got = groups[..n as usize].to_vec();
    got.sort_unstable();
    expect("groups", got, GROUPS.to_vec())?;
    expect(
        "bounding CAP_SYS_BOOT",
        prctl(libc::PR_CAPBSET_READ, DROPPED_CAP as usize),
        Ok(0),
    )?;
    let (_, data) = caps();
    expect("effective CAP_SYS_BOOT", data[0][0] & (1 << DROPPED_CAP), 0)?;
    expect("permitted CAP_SYS_BOOT", data[0][1] & (1 << DROPPED_CAP), 0)?;
    // Something else is still there.
    expect(
        "effective CAP_SYS_ADMIN",
        data[0][0] & (1 << 21u32),
        1 << 21u32,
    )
}

/// The `Seccomp_filters:` count of this thread.
fn seccomp_filters() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no Seccomp_filters line".into())
}

fn check_seccomp(main: bool) -> Result<(), String> {
    let mut vec = [0u8; 1];
    let page = (vec.as_ptr() as usize) & !(PAGE - 1);
    expect(
        "mincore",
        sc(
            libc::SYS_mincore,
            [page, PAGE, vec.as_mut_ptr() as usize, 0, 0],
        ),
        Err(MINCORE_ERRNO),
    )?;
    // SAFETY: sysinfo fills a zeroed struct of the right type.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    let r = sc(libc::SYS_sysinfo, [&raw mut si as usize, 0, 0, 0, 0]);
    if main || TSYNC.load(Ordering::Relaxed) {
        expect("sysinfo", r, Err(SYSINFO_ERRNO))?;
        expect("filters", seccomp_filters()?, 2)
    } else {
        expect("sysinfo", r, Ok(0))?;
        expect("filters", seccomp_filters()?, 1)
    }
}

extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The thread's rseq area is registered: registering it again is `EBUSY`.
fn check_rseq() -> Result<(), String> {
    // SAFETY: glibc exports both as plain read-only data.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return Err("glibc did not register rseq".into());
    }
    let tp: usize;
    // SAFETY: reads the thread pointer (the TCB's self pointer at fs:0).
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp) };
    let area = tp.wrapping_add_signed(off);
    let r = [32usize, size as usize]
        .into_iter()
        .map(|len| sc(libc::SYS_rseq, [area, len, 0, RSEQ_SIG as usize, 0]))
        .find(|r| *r != Err(libc::EINVAL))
        .unwrap_or(Err(libc::EINVAL));
    expect("rseq registration again", r, Err(libc::EBUSY))
}

/// `(VmFlags, Locked kB)` of the smaps entry starting at `addr`.
fn smaps_of(addr: usize) -> Option<(Vec<String>, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{addr:x}-");
    let mut it = smaps.lines().skip_while(|l| !l.starts_with(&head)).skip(1);
    let mut locked = None;
    for l in it.by_ref() {
        if let Some(v) = l.strip_prefix("Locked:") {
            locked = v.trim().trim_end_matches("kB").trim().parse().ok();
        }
        if let Some(v) = l.strip_prefix("VmFlags:") {
            return Some((v.split_whitespace().map(str::to_owned).collect(), locked?));
        }
    }
    None
}

fn check_memory(s: &Setup) -> Result<(), String> {
    for (i, flag) in ["dc", "wf", "hg", "nh", "dd"].into_iter().enumerate() {
        let (flags, _) = smaps_of(s.advised + i * 4 * PAGE)
            .ok_or_else(|| format!("no smaps entry for advised region {i}"))?;
        if !flags.iter().any(|f| f == flag) {
            return Err(format!("region {i} lacks {flag}: {flags:?}"));
        }
    }
    let (flags, locked) = smaps_of(s.locked).ok_or("no smaps entry for the locked region")?;
    if !flags.iter().any(|f| f == "lo") || locked != 16 {
        return Err(format!("locked region: {flags:?} Locked {locked} kB"));
    }
    let (flags, _) = smaps_of(s.growsdown).ok_or("no smaps entry for the growsdown region")?;
    if !flags.iter().any(|f| f == "gd") {
        return Err(format!("growsdown region: {flags:?}"));
    }
    for (base, pages) in [(s.advised, 24), (s.locked, 4), (s.growsdown, 4)] {
        for i in 0..pages {
            // SAFETY: inside a mapping of `setup`, never unmapped.
            let b = unsafe { ((base + i * PAGE) as *const u8).read_volatile() };
            expect("page content", b, i as u8 + 1)?;
        }
    }
    Ok(())
}

fn check_guard(g: usize) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let pm = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    let mut words = [0u8; 24];
    pm.read_exact_at(&mut words, (g / PAGE * 8) as u64)
        .map_err(|e| e.to_string())?;
    let w = |i: usize| u64::from_le_bytes(words[i * 8..i * 8 + 8].try_into().unwrap());
    const GUARD_BIT: u64 = 1 << 58;
    expect(
        "guard bits",
        [w(0), w(1), w(2)].map(|x| x & GUARD_BIT != 0),
        [false, true, false],
    )?;
    for i in [0, 2] {
        // SAFETY: pages 0 and 2 of the guard region are ordinary memory.
        let b = unsafe { ((g + i * PAGE) as *const u8).read_volatile() };
        expect("page content", b, i as u8 + 1)?;
    }
    Ok(())
}

fn thread_main() {
    THREAD_TID.store(gettid(), Ordering::Relaxed);
    THREAD_READY.store(true, Ordering::Release);
    loop {
        while !GO.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let usr2 = sigset(&[libc::SIGUSR2]);
        report(
            "thread-signals",
            (|| {
                expect("pending", pending() & usr2, usr2)?;
                sigmask(libc::SIG_UNBLOCK, usr2);
                eventually(|| recorded().iter().any(|r| !r.0));
                let mine: Vec<_> = recorded().into_iter().filter(|r| !r.0).collect();
                expect(
                    "delivered to the thread",
                    mine,
                    vec![(false, libc::SIGUSR2, THREAD_USR2_VALUE)],
                )
            })(),
        );
        report("thread-seccomp", check_seccomp(false));
        report("thread-rseq", check_rseq());
        GO.store(false, Ordering::Release);
        THREAD_DONE.store(true, Ordering::Release);
    }
}

fn run_checks(s: &Setup) {
    THREAD_DONE.store(false, Ordering::Release);
    GO.store(true, Ordering::Release);
    report("signals", check_signals());
    report("itimers", check_itimers());
    report("posix-timers", check_posix_timers(s));
    report("prctl", check_prctl());
    report("creds", check_creds());
    report("seccomp", check_seccomp(true));
    report("rseq", check_rseq());
    report("memory", check_memory(s));
    if let Some(g) = s.guard {
        report("guard", check_guard(g));
    }
    if !eventually(|| THREAD_DONE.load(Ordering::Acquire)) {
        report("thread", Err("the thread did not finish its checks".into()));
    }
    let tag = TAG.lock().map(|t| t.clone()).unwrap_or_default();
    log_line(&format!("{tag} done"));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: criu-wl-taskstate DIR [guard]");
        std::process::exit(2);
    };
    let guard = args[2..].iter().any(|a| a == "guard");
    TSYNC.store(args[2..].iter().any(|a| a == "tsync"), Ordering::Relaxed);
    if args[2..].iter().any(|a| a == "pidns") {
        // SAFETY: plain flag argument; the child forked below is the init.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            die("unshare(CLONE_NEWPID)");
        }
    }
    // SAFETY: close_range takes plain integers; no Rust object owns fds >= 3 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: getpid cannot fail.
    let launcher = unsafe { libc::getpid() };
    criu_tests::daemonize();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap_or_else(|_| die("open log"));
    LOG_FD.store(std::os::fd::IntoRawFd::into_raw_fd(log), Ordering::Relaxed);
    // Let the launcher be gone, so the parent-death signal refers to the reaper.
    // SAFETY: getppid cannot fail.
    while unsafe { libc::getppid() } == launcher {
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = setup(guard);
    log_line(&format!(
        "ready {} {} {} {}",
        s.timer_a, s.timer_c, s.timer_d, s.deleted
    ));
    let go = dir.join("go");
    let mut done = String::new();
    loop {
        if let Ok(tag) = std::fs::read_to_string(&go) {
            let tag = tag.trim().to_owned();
            if !tag.is_empty() && tag != done {
                if let Ok(mut t) = TAG.lock() {
                    t.clone_from(&tag);
                }
                run_checks(&s);
                done = tag;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
