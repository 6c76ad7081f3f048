use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

use super::{SeqPacket, SeqPacketError};

fn pipe() -> (File, File) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    (File::from(r), File::from(w))
}

/// Reads until EOF: returns once every write end of the pipe is closed.
fn assert_all_writers_closed(mut read_end: File) {
    let mut buf = Vec::new();
    read_end.read_to_end(&mut buf).expect("read pipe");
    assert!(buf.is_empty());
}

#[test]
fn packets_keep_their_boundaries() {
    let (a, b) = SeqPacket::pair().expect("pair");
    a.send(b"first").expect("send");
    a.send(b"second packet").expect("send");
    assert_eq!(b.recv().expect("recv").as_deref(), Some(&b"first"[..]));
    assert_eq!(
        b.recv().expect("recv").as_deref(),
        Some(&b"second packet"[..])
    );
}

#[test]
fn large_packet_is_read_whole() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    a.send(&data).expect("send");
    assert_eq!(b.recv().expect("recv"), Some(data));
}

#[test]
fn eof_and_empty_packet_read_as_none() {
    let (a, b) = SeqPacket::pair().expect("pair");
    a.send(b"").expect("send empty");
    assert_eq!(b.recv().expect("recv"), None);
    a.send(b"after").expect("send");
    assert_eq!(b.recv().expect("recv").as_deref(), Some(&b"after"[..]));
    drop(a);
    assert_eq!(b.recv().expect("recv"), None);
    assert_eq!(b.recv().expect("recv again"), None);
}

#[test]
fn oversized_packet_is_an_error_and_discarded() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let b = b.with_max_packet(1000);
    a.send(&[7u8; 1001]).expect("send");
    a.send(b"next").expect("send");
    match b.recv() {
        Err(SeqPacketError::TooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (1001, 1000));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(b.recv().expect("recv").as_deref(), Some(&b"next"[..]));
}

#[test]
fn one_mebibyte_packet_fits_the_default_cap() {
    let (a, b) = SeqPacket::pair().expect("pair");
    // Let a single packet exceed the default socket buffer.
    socket::setsockopt(&a, sockopt::SndBufForce, &(4 << 20)).expect("SO_SNDBUFFORCE");
    let data = vec![1u8; (1 << 20) + 17];
    a.send(&data).expect("send 1 MiB");
    assert_eq!(b.recv().expect("recv").map(|d| d.len()), Some(data.len()));
}

#[test]
fn from_fd_rejects_other_descriptors() {
    let (r, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    match SeqPacket::from_fd(r) {
        Err(SeqPacketError::NotSocket { source, .. }) => assert_eq!(source, Errno::ENOTSOCK),
        other => panic!("expected NotSocket, got {other:?}"),
    }
    let (s, _t) = socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("stream pair");
    match SeqPacket::from_fd(s) {
        Err(SeqPacketError::WrongType { found, .. }) => assert_eq!(found, SockType::Stream),
        other => panic!("expected WrongType, got {other:?}"),
    }
    let (p, _q) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("seqpacket pair");
    SeqPacket::from_fd(p).expect("a seqpacket socket is accepted");
}

#[test]
fn descriptor_passes_through_scm_rights() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let (mut read_end, write_end) = pipe();
    a.send_with_fd(b"with fd", write_end.as_fd()).expect("send");
    drop(write_end);
    let (data, fd) = b.recv_with_fd().expect("recv").expect("not eof");
    assert_eq!(data, b"with fd");
    let fd: OwnedFd = fd.expect("descriptor received");
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    assert_ne!(
        flags & libc::FD_CLOEXEC,
        0,
        "received fds are close-on-exec"
    );
    let mut writer = File::from(fd);
    writer.write_all(b"through").expect("write via received fd");
    drop(writer);
    let mut got = String::new();
    read_end.read_to_string(&mut got).expect("read");
    assert_eq!(got, "through");
}

#[test]
fn recv_with_fd_without_descriptor() {
    let (a, b) = SeqPacket::pair().expect("pair");
    a.send(b"plain").expect("send");
    let (data, fd) = b.recv_with_fd().expect("recv").expect("not eof");
    assert_eq!(data, b"plain");
    assert!(fd.is_none());
}

#[test]
fn plain_recv_discards_attached_descriptors() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let (read_end, write_end) = pipe();
    a.send_with_fd(b"x", write_end.as_fd()).expect("send");
    drop(write_end);
    assert_eq!(b.recv().expect("recv").as_deref(), Some(&b"x"[..]));
    assert_all_writers_closed(read_end);
}

#[test]
fn two_descriptors_are_an_error_and_both_closed() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let (read1, write1) = pipe();
    let (read2, write2) = pipe();
    let rights = [write1.as_raw_fd(), write2.as_raw_fd()];
    socket::sendmsg::<()>(
        a.as_fd().as_raw_fd(),
        &[IoSlice::new(b"two")],
        &[ControlMessage::ScmRights(&rights)],
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
    drop((write1, write2));
    match b.recv_with_fd() {
        Err(SeqPacketError::ControlTruncated { .. }) => {}
        other => panic!("expected ControlTruncated, got {other:?}"),
    }
    assert_all_writers_closed(read1);
    assert_all_writers_closed(read2);
}

#[test]
fn send_to_closed_peer_is_epipe() {
    let (a, b) = SeqPacket::pair().expect("pair");
    drop(b);
    match a.send(b"lost") {
        Err(SeqPacketError::Send { source, .. }) => assert_eq!(source, Errno::EPIPE),
        other => panic!("expected EPIPE, got {other:?}"),
    }
}

#[test]
fn peer_cred_names_this_process() {
    let (a, _b) = SeqPacket::pair().expect("pair");
    let cred = a.peer_cred().expect("SO_PEERCRED");
    assert_eq!(
        cred.pid,
        i32::try_from(std::process::id()).expect("pid fits")
    );
    assert_eq!(cred.uid, nix::unistd::getuid().as_raw());
    assert_eq!(cred.gid, nix::unistd::getgid().as_raw());
}

#[test]
fn inode_matches_fstat_and_differs_between_ends() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let st = nix::sys::stat::fstat(&a).expect("fstat");
    assert_eq!(a.inode().expect("inode"), st.st_ino);
    assert_ne!(a.inode().expect("inode"), b.inode().expect("inode"));
}
