//! Generic socket options of a socket (`sk_opts_entry`), read at dump and
//! set again at restore (CRIU's `dump_socket_opts` and
//! `restore_socket_opts` in `criu/sockets.c`).
//!
//! The kernel doubles the buffer sizes it is given, so the saved values are
//! halved when set again, with the `*FORCE` variants that ignore
//! `net.core.*mem_max`.
//!
//! # References
//!
//! - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html)

use std::os::fd::AsFd;

use criu_proto::images::SkOptsEntry;
use libc::SOL_SOCKET;

use crate::sys::sockopt::{get_int, get_linger, get_timeval, set_int, set_linger, set_timeval};

/// Reads the options CRIU saves for a unix socket.
pub(crate) fn dump(sock: impl AsFd) -> nix::Result<SkOptsEntry> {
    let sk = sock.as_fd();
    let int = |name| get_int(sk, SOL_SOCKET, name);
    let flag = |name| int(name).map(|v| Some(v != 0));
    let uint = |name| int(name).map(|v| v as u32);
    let (snd_sec, snd_usec) = get_timeval(sk, libc::SO_SNDTIMEO)?;
    let (rcv_sec, rcv_usec) = get_timeval(sk, libc::SO_RCVTIMEO)?;
    let mark = uint(libc::SO_MARK)?;
    Ok(SkOptsEntry {
        so_sndbuf: uint(libc::SO_SNDBUF)?,
        so_rcvbuf: uint(libc::SO_RCVBUF)?,
        so_buf_lock: int(libc::SO_BUF_LOCK).ok().map(|v| v as u32),
        so_priority: Some(uint(libc::SO_PRIORITY)?),
        so_rcvlowat: Some(uint(libc::SO_RCVLOWAT)?),
        so_mark: (mark != 0).then_some(mark),
        so_snd_tmo_sec: snd_sec,
        so_snd_tmo_usec: snd_usec,
        so_rcv_tmo_sec: rcv_sec,
        so_rcv_tmo_usec: rcv_usec,
        reuseaddr: flag(libc::SO_REUSEADDR)?,
        so_reuseport: flag(libc::SO_REUSEPORT)?,
        so_passcred: flag(libc::SO_PASSCRED)?,
        so_passsec: flag(libc::SO_PASSSEC)?,
        so_dontroute: flag(libc::SO_DONTROUTE)?,
        so_no_check: flag(libc::SO_NO_CHECK)?,
        so_broadcast: flag(libc::SO_BROADCAST)?,
        so_keepalive: flag(libc::SO_KEEPALIVE)?,
        so_oobinline: Some(uint(libc::SO_OOBINLINE)?),
        so_linger: get_linger(sk)?.map(|s| s as u32),
        ..Default::default()
    })
}

/// Sets the saved options on a new socket (plain syscalls only).
pub(crate) fn restore(sock: impl AsFd, o: &SkOptsEntry) -> nix::Result<()> {
    let sk = sock.as_fd();
    let set = |name, v: u32| set_int(sk, SOL_SOCKET, name, v as i32);
    let on = |name, v: Option<bool>| {
        if v == Some(true) {
            set_int(sk, SOL_SOCKET, name, 1)
        } else {
            Ok(())
        }
    };
    set(libc::SO_SNDBUFFORCE, o.so_sndbuf / 2)?;
    set(libc::SO_RCVBUFFORCE, o.so_rcvbuf / 2)?;
    if let Some(v) = o.so_buf_lock {
        set(libc::SO_BUF_LOCK, v)?;
    }
    if let Some(v) = o.so_priority {
        set(libc::SO_PRIORITY, v)?;
    }
    if let Some(v) = o.so_rcvlowat {
        set(libc::SO_RCVLOWAT, v)?;
    }
    if let Some(v) = o.so_mark {
        set(libc::SO_MARK, v)?;
    }
    on(libc::SO_PASSCRED, o.so_passcred)?;
    on(libc::SO_PASSSEC, o.so_passsec)?;
    on(libc::SO_DONTROUTE, o.so_dontroute)?;
    on(libc::SO_NO_CHECK, o.so_no_check)?;
    on(libc::SO_BROADCAST, o.so_broadcast)?;
    on(libc::SO_OOBINLINE, o.so_oobinline.map(|v| v != 0))?;
    on(libc::SO_KEEPALIVE, o.so_keepalive)?;
    on(libc::SO_REUSEADDR, o.reuseaddr)?;
    on(libc::SO_REUSEPORT, o.so_reuseport)?;
    if let Some(s) = o.so_linger {
        set_linger(sk, s as i32)?;
    }
    set_timeval(sk, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)?;
    set_timeval(sk, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn options_survive_a_round_trip() {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        set_int(&a, SOL_SOCKET, libc::SO_PASSCRED, 1).unwrap();
        set_int(&a, SOL_SOCKET, libc::SO_SNDBUF, 50_000).unwrap();
        set_timeval(&a, libc::SO_RCVTIMEO, 3, 500_000).unwrap();
        set_linger(&a, 7).unwrap();
        let saved = dump(&a).unwrap();
        assert_eq!(saved.so_passcred, Some(true));
        assert_eq!((saved.so_rcv_tmo_sec, saved.so_rcv_tmo_usec), (3, 500_000));
        assert_eq!(saved.so_linger, Some(7));

        let (c, _d) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        restore(&c, &saved).unwrap();
        assert_eq!(dump(&c).unwrap(), saved);
    }
}
