//! The table of every CRIU image kind (CRIU's `criu/image-desc.c`).
//!
//! Each [`ImageKind`] has a file name pattern, a type magic, a header layout,
//! the protobuf message its entries carry and the rule that sizes the raw
//! payload following each entry, if any. The table follows CRIU 4.2; legacy
//! kinds (only read by CRIU, never written) are marked.
//!
//! File name patterns use one printf-style number: `%u`/`%lu`/`%d`/`%ld` in
//! decimal, `%x` in lower-case hexadecimal (`ghost-file-%x.img`,
//! `tcp-stream-%x.img`).

use super::magic;

/// How a file of some kind starts.
///
/// ```text
/// Regular    | IMG_COMMON_MAGIC | type magic | entries...
/// Inventory  | INVENTORY_MAGIC  | entries...
/// Service    | IMG_SERVICE_MAGIC| type magic | entries...
/// Raw        | bytes (no magic, no framing)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Format v1.1: common magic, then the type magic.
    Regular,
    /// `inventory.img`: the type magic alone.
    Inventory,
    /// Service files (`stats-*`, `irmap-cache`): service magic, type magic.
    Service,
    /// No magic and no entries (`pages-%u.img`, tool dumps, tarballs).
    Raw,
}

/// What the entries of a file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entries {
    /// Any number of entries of one message (fully qualified proto name).
    Many(&'static str),
    /// One entry of this message; CRIU reads only the first.
    Single(&'static str),
    /// A `pagemap_head`, then `pagemap_entry`s.
    Pagemap,
    /// A `ghost_file_entry`, then either the file contents up to end of file
    /// or, when `chunks` is set, `ghost_chunk_entry` + `len` bytes pairs.
    GhostFile,
    /// Not decodable as entries (raw images, the pre-pagemap page format).
    Opaque,
}

/// Raw bytes stored right after each entry, sized from the entry's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extra {
    /// Nothing follows the entries.
    None,
    /// `pipe_data_entry.bytes` bytes of pipe contents.
    PipeData,
    /// `sk_packet_entry.length` bytes of queued data.
    SkQueue,
    /// `tcp_stream_entry.inq_len` then `outq_len` bytes.
    TcpStream,
    /// `bpfmap_data_entry.keys_bytes + values_bytes` bytes.
    BpfmapData,
    /// `ipc_sem_entry.nsems` `u16` values, zero-padded to 8 bytes.
    IpcSem,
    /// `ipc_msg_entry.qnum` messages: `u32` size, `ipc_msg`, text padded to 8.
    IpcMsg,
    /// `ipc_shm_entry.size` bytes padded to 4, unless `in_pagemaps` is set.
    IpcShm,
}

/// How the number in a file name is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdFormat {
    /// The name has no number (`pstree.img`).
    None,
    /// Decimal (`core-%u.img`).
    Decimal,
    /// Lower-case hexadecimal (`ghost-file-%x.img`).
    Hex,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageDesc {
    /// The kind this row describes.
    pub kind: ImageKind,
    /// CRIU's name for it (the `magic.h` macro without `_MAGIC`), as `crit`
    /// prints it in `"magic"`.
    pub name: &'static str,
    /// File name pattern, for example `"core-%u.img"`.
    pub pattern: &'static str,
    /// Type magic ([`magic::RAW_IMAGE_MAGIC`] for raw images).
    pub magic: u32,
    /// Header layout.
    pub layout: Layout,
    /// Entry message(s).
    pub entries: Entries,
    /// Payload after each entry.
    pub extra: Extra,
    /// Only read by CRIU 4.2, never written.
    pub legacy: bool,
}

macro_rules! msg {
    ($name:literal) => {
        concat!("criu.images.", $name)
    };
}

macro_rules! image_kinds {
    ($(
        $(#[$doc:meta])*
        $variant:ident => $name:literal, $pattern:literal, $magic:ident, $layout:ident,
            $entries:expr, $extra:ident, $legacy:literal;
    )*) => {
        /// Every kind of file CRIU 4.2 reads or writes in an image directory.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ImageKind {
            $( $(#[$doc])* $variant, )*
        }

        static TABLE: &[ImageDesc] = &[
            $( ImageDesc {
                kind: ImageKind::$variant,
                name: $name,
                pattern: $pattern,
                magic: magic::$magic,
                layout: Layout::$layout,
                entries: $entries,
                extra: Extra::$extra,
                legacy: $legacy,
            }, )*
        ];
    };
}

use Entries::{GhostFile, Many, Opaque, Pagemap, Single};

// Order matters for `from_magic`: of the kinds sharing a magic, the first one
// listed is the one `crit` reports (PAGEMAP, SIGNAL, BINFMT_MISC).
image_kinds! {
    /// `inventory.img`.
    Inventory => "INVENTORY", "inventory.img", INVENTORY_MAGIC, Inventory,
        Single(msg!("inventory_entry")), None, false;
    /// `pstree.img`.
    Pstree => "PSTREE", "pstree.img", PSTREE_MAGIC, Regular,
        Many(msg!("pstree_entry")), None, false;
    /// `core-<tid>.img`.
    Core => "CORE", "core-%u.img", CORE_MAGIC, Regular,
        Single(msg!("core_entry")), None, false;
    /// `ids-<pid>.img`.
    Ids => "IDS", "ids-%u.img", IDS_MAGIC, Regular,
        Single(msg!("task_kobj_ids_entry")), None, false;
    /// `mm-<pid>.img`.
    Mm => "MM", "mm-%u.img", MM_MAGIC, Regular, Single(msg!("mm_entry")), None, false;
    /// `fs-<pid>.img`.
    Fs => "FS", "fs-%u.img", FS_MAGIC, Regular, Single(msg!("fs_entry")), None, false;
    /// `pagemap-<pid>.img`.
    Pagemap => "PAGEMAP", "pagemap-%lu.img", PAGEMAP_MAGIC, Regular, Pagemap, None, false;
    /// `pagemap-shmem-<shmid>.img`.
    ShmemPagemap => "SHMEM_PAGEMAP", "pagemap-shmem-%lu.img", SHMEM_PAGEMAP_MAGIC, Regular,
        Pagemap, None, false;
    /// `pages-<id>.img` (raw pages).
    Pages => "PAGES", "pages-%u.img", PAGES_MAGIC, Raw, Opaque, None, false;
    /// `fdinfo-<files_id>.img`.
    Fdinfo => "FDINFO", "fdinfo-%u.img", FDINFO_MAGIC, Regular,
        Many(msg!("fdinfo_entry")), None, false;
    /// `files.img`.
    Files => "FILES", "files.img", FILES_MAGIC, Regular, Many(msg!("file_entry")), None, false;
    /// `seccomp.img`.
    Seccomp => "SECCOMP", "seccomp.img", SECCOMP_MAGIC, Regular,
        Single(msg!("seccomp_entry")), None, false;
    /// `timens-<id>.img`.
    Timens => "TIMENS", "timens-%u.img", TIMENS_MAGIC, Regular,
        Single(msg!("timens_entry")), None, false;
    /// `memfd.img`.
    MemfdInode => "MEMFD_INODE", "memfd.img", MEMFD_INODE_MAGIC, Regular,
        Many(msg!("memfd_inode_entry")), None, false;
    /// `remap-fpath.img`.
    RemapFpath => "REMAP_FPATH", "remap-fpath.img", REMAP_FPATH_MAGIC, Regular,
        Many(msg!("remap_file_path_entry")), None, false;
    /// `ghost-file-<id in hex>.img`.
    GhostFile => "GHOST_FILE", "ghost-file-%x.img", GHOST_FILE_MAGIC, Regular,
        GhostFile, None, false;
    /// `pipes-data.img`.
    PipesData => "PIPES_DATA", "pipes-data.img", PIPES_DATA_MAGIC, Regular,
        Many(msg!("pipe_data_entry")), PipeData, false;
    /// `fifo-data.img`.
    FifoData => "FIFO_DATA", "fifo-data.img", FIFO_DATA_MAGIC, Regular,
        Many(msg!("pipe_data_entry")), PipeData, false;
    /// `sk-queues.img`.
    SkQueues => "SK_QUEUES", "sk-queues.img", SK_QUEUES_MAGIC, Regular,
        Many(msg!("sk_packet_entry")), SkQueue, false;
    /// `tcp-stream-<inode in hex>.img`.
    TcpStream => "TCP_STREAM", "tcp-stream-%x.img", TCP_STREAM_MAGIC, Regular,
        Many(msg!("tcp_stream_entry")), TcpStream, false;
    /// `tty-info.img`.
    TtyInfo => "TTY_INFO", "tty-info.img", TTY_INFO_MAGIC, Regular,
        Many(msg!("tty_info_entry")), None, false;
    /// `tty-data.img`.
    TtyData => "TTY_DATA", "tty-data.img", TTY_DATA_MAGIC, Regular,
        Many(msg!("tty_data_entry")), None, false;
    /// `filelocks.img`.
    FileLocks => "FILE_LOCKS", "filelocks.img", FILE_LOCKS_MAGIC, Regular,
        Many(msg!("file_lock_entry")), None, false;
    /// `cgroup.img`.
    Cgroup => "CGROUP", "cgroup.img", CGROUP_MAGIC, Regular,
        Single(msg!("cgroup_entry")), None, false;
    /// `apparmor.img`.
    Apparmor => "APPARMOR", "apparmor.img", APPARMOR_MAGIC, Regular,
        Many(msg!("apparmor_entry")), None, false;
    /// `bpfmap-data.img`.
    BpfmapData => "BPFMAP_DATA", "bpfmap-data.img", BPFMAP_DATA_MAGIC, Regular,
        Many(msg!("bpfmap_data_entry")), BpfmapData, false;
    /// `cpuinfo.img`.
    Cpuinfo => "CPUINFO", "cpuinfo.img", CPUINFO_MAGIC, Regular,
        Many(msg!("cpuinfo_entry")), None, false;
    /// `mountpoints-<mnt ns id>.img`.
    Mnts => "MNTS", "mountpoints-%u.img", MNTS_MAGIC, Regular,
        Many(msg!("mnt_entry")), None, false;
    /// `utsns-<id>.img`.
    Utsns => "UTSNS", "utsns-%u.img", UTSNS_MAGIC, Regular,
        Many(msg!("utsns_entry")), None, false;
    /// `ipcns-var-<id>.img`.
    IpcVar => "IPC_VAR", "ipcns-var-%u.img", IPC_VAR_MAGIC, Regular,
        Many(msg!("ipc_var_entry")), None, false;
    /// `ipcns-shm-<id>.img`.
    IpcnsShm => "IPCNS_SHM", "ipcns-shm-%u.img", IPCNS_SHM_MAGIC, Regular,
        Many(msg!("ipc_shm_entry")), IpcShm, false;
    /// `ipcns-msg-<id>.img`.
    IpcnsMsg => "IPCNS_MSG", "ipcns-msg-%u.img", IPCNS_MSG_MAGIC, Regular,
        Many(msg!("ipc_msg_entry")), IpcMsg, false;
    /// `ipcns-sem-<id>.img`.
    IpcnsSem => "IPCNS_SEM", "ipcns-sem-%u.img", IPCNS_SEM_MAGIC, Regular,
        Many(msg!("ipc_sem_entry")), IpcSem, false;
    /// `netdev-<net ns id>.img`.
    Netdev => "NETDEV", "netdev-%u.img", NETDEV_MAGIC, Regular,
        Many(msg!("net_device_entry")), None, false;
    /// `netns-<id>.img`.
    Netns => "NETNS", "netns-%u.img", NETNS_MAGIC, Regular,
        Many(msg!("netns_entry")), None, false;
    /// `ifaddr-<id>.img` (raw `ip addr save`).
    Ifaddr => "IFADDR", "ifaddr-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `route-<id>.img` (raw).
    Route => "ROUTE", "route-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `route6-<id>.img` (raw).
    Route6 => "ROUTE6", "route6-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `rule-<id>.img` (raw).
    Rule => "RULE", "rule-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `iptables-<id>.img` (raw text).
    Iptables => "IPTABLES", "iptables-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `ip6tables-<id>.img` (raw text).
    Ip6tables => "IP6TABLES", "ip6tables-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `nftables-<id>.img` (raw).
    Nftables => "NFTABLES", "nftables-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `netns-ct-<id>.img` (raw conntrack dump).
    NetnfCt => "NETNF_CT", "netns-ct-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `netns-exp-<id>.img` (raw conntrack expectations).
    NetnfExp => "NETNF_EXP", "netns-exp-%u.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `userns-<id>.img`.
    Userns => "USERNS", "userns-%u.img", USERNS_MAGIC, Regular,
        Many(msg!("userns_entry")), None, false;
    /// `pidns-<id>.img`.
    Pidns => "PIDNS", "pidns-%u.img", PIDNS_MAGIC, Regular,
        Many(msg!("pidns_entry")), None, false;
    /// `tmpfs-dev-<dev>.tar.gz.img` (raw tarball).
    TmpfsDev => "TMPFS_DEV", "tmpfs-dev-%u.tar.gz.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, false;
    /// `autofs-<dev>.img`.
    Autofs => "AUTOFS", "autofs-%u.img", AUTOFS_MAGIC, Regular,
        Many(msg!("autofs_entry")), None, false;
    /// `binfmt-misc.img`.
    BinfmtMisc => "BINFMT_MISC", "binfmt-misc.img", BINFMT_MISC_MAGIC, Regular,
        Many(msg!("binfmt_misc_entry")), None, false;
    /// `stats-dump` (service file).
    StatsDump => "STATS", "stats-dump", STATS_MAGIC, Service,
        Single(msg!("stats_entry")), None, false;
    /// `stats-restore` (service file).
    StatsRestore => "STATS", "stats-restore", STATS_MAGIC, Service,
        Single(msg!("stats_entry")), None, false;
    /// `irmap-cache` (service file).
    IrmapCache => "IRMAP_CACHE", "irmap-cache", IRMAP_CACHE_MAGIC, Service,
        Many(msg!("irmap_cache_entry")), None, false;

    /// Legacy `reg-files.img`.
    RegFiles => "REG_FILES", "reg-files.img", REG_FILES_MAGIC, Regular,
        Many(msg!("reg_file_entry")), None, true;
    /// Legacy `ext-files.img`.
    ExtFiles => "EXT_FILES", "ext-files.img", EXT_FILES_MAGIC, Regular,
        Many(msg!("ext_file_entry")), None, true;
    /// Legacy `ns-files.img`.
    NsFiles => "NS_FILES", "ns-files.img", NS_FILES_MAGIC, Regular,
        Many(msg!("ns_file_entry")), None, true;
    /// Legacy `eventfd.img`.
    EventfdFile => "EVENTFD_FILE", "eventfd.img", EVENTFD_FILE_MAGIC, Regular,
        Many(msg!("eventfd_file_entry")), None, true;
    /// Legacy `eventpoll.img`.
    EventpollFile => "EVENTPOLL_FILE", "eventpoll.img", EVENTPOLL_FILE_MAGIC, Regular,
        Many(msg!("eventpoll_file_entry")), None, true;
    /// Legacy `eventpoll-tfd.img`.
    EventpollTfd => "EVENTPOLL_TFD", "eventpoll-tfd.img", EVENTPOLL_TFD_MAGIC, Regular,
        Many(msg!("eventpoll_tfd_entry")), None, true;
    /// Legacy `signalfd.img`.
    Signalfd => "SIGNALFD", "signalfd.img", SIGNALFD_MAGIC, Regular,
        Many(msg!("signalfd_entry")), None, true;
    /// Legacy `inotify.img`.
    InotifyFile => "INOTIFY_FILE", "inotify.img", INOTIFY_FILE_MAGIC, Regular,
        Many(msg!("inotify_file_entry")), None, true;
    /// Legacy `inotify-wd.img`.
    InotifyWd => "INOTIFY_WD", "inotify-wd.img", INOTIFY_WD_MAGIC, Regular,
        Many(msg!("inotify_wd_entry")), None, true;
    /// Legacy `fanotify.img`.
    FanotifyFile => "FANOTIFY_FILE", "fanotify.img", FANOTIFY_FILE_MAGIC, Regular,
        Many(msg!("fanotify_file_entry")), None, true;
    /// Legacy `fanotify-mark.img`.
    FanotifyMark => "FANOTIFY_MARK", "fanotify-mark.img", FANOTIFY_MARK_MAGIC, Regular,
        Many(msg!("fanotify_mark_entry")), None, true;
    /// Legacy `vmas-<pid>.img`.
    Vmas => "VMAS", "vmas-%u.img", VMAS_MAGIC, Regular, Many(msg!("vma_entry")), None, true;
    /// Legacy `pipes.img`.
    Pipes => "PIPES", "pipes.img", PIPES_MAGIC, Regular, Many(msg!("pipe_entry")), None, true;
    /// Legacy `fifo.img`.
    Fifo => "FIFO", "fifo.img", FIFO_MAGIC, Regular, Many(msg!("fifo_entry")), None, true;
    /// Legacy `sigacts-<pid>.img`.
    Sigact => "SIGACT", "sigacts-%u.img", SIGACT_MAGIC, Regular,
        Many(msg!("sa_entry")), None, true;
    /// Legacy `unixsk.img`.
    Unixsk => "UNIXSK", "unixsk.img", UNIXSK_MAGIC, Regular,
        Many(msg!("unix_sk_entry")), None, true;
    /// Legacy `inetsk.img`.
    Inetsk => "INETSK", "inetsk.img", INETSK_MAGIC, Regular,
        Many(msg!("inet_sk_entry")), None, true;
    /// Legacy `packetsk.img`.
    Packetsk => "PACKETSK", "packetsk.img", PACKETSK_MAGIC, Regular,
        Many(msg!("packet_sock_entry")), None, true;
    /// Legacy `netlinksk.img`.
    NetlinkSk => "NETLINK_SK", "netlinksk.img", NETLINK_SK_MAGIC, Regular,
        Many(msg!("netlink_sk_entry")), None, true;
    /// Legacy `itimers-<pid>.img`.
    Itimers => "ITIMERS", "itimers-%u.img", ITIMERS_MAGIC, Regular,
        Many(msg!("itimer_entry")), None, true;
    /// Legacy `posix-timers-<pid>.img`.
    PosixTimers => "POSIX_TIMERS", "posix-timers-%u.img", POSIX_TIMERS_MAGIC, Regular,
        Many(msg!("posix_timer_entry")), None, true;
    /// Legacy `creds-<pid>.img`.
    Creds => "CREDS", "creds-%u.img", CREDS_MAGIC, Regular,
        Many(msg!("creds_entry")), None, true;
    /// Legacy `tty.img`.
    TtyFiles => "TTY_FILES", "tty.img", TTY_FILES_MAGIC, Regular,
        Many(msg!("tty_file_entry")), None, true;
    /// Legacy `rlimit-<pid>.img`.
    Rlimit => "RLIMIT", "rlimit-%u.img", RLIMIT_MAGIC, Regular,
        Many(msg!("rlimit_entry")), None, true;
    /// Legacy `signal-s-<pid>.img` (shared pending signals).
    Signal => "SIGNAL", "signal-s-%u.img", SIGNAL_MAGIC, Regular,
        Many(msg!("siginfo_entry")), None, true;
    /// Legacy `signal-p-<tid>.img` (private pending signals).
    Psignal => "PSIGNAL", "signal-p-%u.img", PSIGNAL_MAGIC, Regular,
        Many(msg!("siginfo_entry")), None, true;
    /// Legacy `tunfile.img`.
    Tunfile => "TUNFILE", "tunfile.img", TUNFILE_MAGIC, Regular,
        Many(msg!("tunfile_entry")), None, true;
    /// Legacy `timerfd.img`.
    Timerfd => "TIMERFD", "timerfd.img", TIMERFD_MAGIC, Regular,
        Many(msg!("timerfd_entry")), None, true;
    /// Legacy `bpfmap-file.img`.
    BpfmapFile => "BPFMAP_FILE", "bpfmap-file.img", BPFMAP_FILE_MAGIC, Regular,
        Many(msg!("bpfmap_file_entry")), None, true;
    /// Legacy `pidfd.img`.
    Pidfd => "PIDFD", "pidfd.img", PIDFD_MAGIC, Regular, Many(msg!("pidfd_entry")), None, true;
    /// Legacy `binfmt-misc-<id>.img`.
    BinfmtMiscOld => "BINFMT_MISC_OLD", "binfmt-misc-%u.img", BINFMT_MISC_OLD_MAGIC, Regular,
        Many(msg!("binfmt_misc_entry")), None, true;
    /// Legacy `pages-<id>.img` of the pre-pagemap format.
    PagesOld => "PAGES_OLD", "pages-%d.img", PAGES_OLD_MAGIC, Regular, Opaque, None, true;
    /// Legacy `pages-shmem-<id>.img` of the pre-pagemap format.
    ShmPagesOld => "SHM_PAGES_OLD", "pages-shmem-%ld.img", SHM_PAGES_OLD_MAGIC, Regular,
        Opaque, None, true;
    /// Legacy `tmpfs-<dev>.tar.gz.img` (raw tarball).
    TmpfsImg => "TMPFS_IMG", "tmpfs-%u.tar.gz.img", RAW_IMAGE_MAGIC, Raw, Opaque, None, true;
}

impl ImageKind {
    /// Every kind, in table order.
    pub fn all() -> impl Iterator<Item = ImageKind> {
        TABLE.iter().map(|d| d.kind)
    }

    /// This kind's row of the table.
    pub fn desc(self) -> &'static ImageDesc {
        // The table is generated from the enum in the same order.
        &TABLE[self as usize]
    }

    /// CRIU's name (`"PAGEMAP"`, `"CORE"`, ...).
    pub fn name(self) -> &'static str {
        self.desc().name
    }

    /// Type magic.
    pub fn magic(self) -> u32 {
        self.desc().magic
    }

    /// Header layout.
    pub fn layout(self) -> Layout {
        self.desc().layout
    }

    /// File name pattern (`"core-%u.img"`).
    pub fn pattern(self) -> &'static str {
        self.desc().pattern
    }

    /// How the number in the file name is printed.
    pub fn id_format(self) -> IdFormat {
        match self.split_pattern() {
            None => IdFormat::None,
            Some((_, 'x', _)) => IdFormat::Hex,
            Some(_) => IdFormat::Decimal,
        }
    }

    /// The file name for object `id`; `id` is ignored by kinds whose name has
    /// no number (`pstree.img`, `files.img`, ...).
    pub fn file_name(self, id: u64) -> String {
        match self.split_pattern() {
            None => self.pattern().to_owned(),
            Some((prefix, 'x', suffix)) => format!("{prefix}{id:x}{suffix}"),
            Some((prefix, _, suffix)) => format!("{prefix}{id}{suffix}"),
        }
    }

    /// Recognises a file name; returns the kind and the number in the name
    /// (`0` for names without one).
    pub fn from_file_name(name: &str) -> Option<(ImageKind, u64)> {
        Self::all().find_map(|kind| {
            let Some((prefix, conv, suffix)) = kind.split_pattern() else {
                return (name == kind.pattern()).then_some((kind, 0));
            };
            let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
            let radix = if conv == 'x' { 16 } else { 10 };
            let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
            valid
                .then(|| u64::from_str_radix(digits, radix).ok())
                .flatten()
                .map(|id| (kind, id))
        })
    }

    /// The kind `crit` reports for a type magic: the first kind of the table
    /// with that magic. Raw images have no magic and are never returned.
    pub fn from_magic(magic: u32) -> Option<ImageKind> {
        if magic == magic::RAW_IMAGE_MAGIC {
            return None;
        }
        Self::all().find(|k| k.magic() == magic)
    }

    /// The fully qualified proto message of entry number `index` (0-based),
    /// or `None` for opaque kinds.
    pub fn entry_message(self, index: u64) -> Option<&'static str> {
        match self.desc().entries {
            Entries::Many(m) | Entries::Single(m) => Some(m),
            Entries::Pagemap if index == 0 => Some(msg!("pagemap_head")),
            Entries::Pagemap => Some(msg!("pagemap_entry")),
            Entries::GhostFile if index == 0 => Some(msg!("ghost_file_entry")),
            Entries::GhostFile => Some(msg!("ghost_chunk_entry")),
            Entries::Opaque => None,
        }
    }

    /// Splits the pattern around its printf conversion: `(prefix, conversion
    /// letter, suffix)`.
    fn split_pattern(self) -> Option<(&'static str, char, &'static str)> {
        let pattern = self.pattern();
        let start = pattern.find('%')?;
        let rest = &pattern[start + 1..];
        let conv_len = rest.find(|c: char| c.is_ascii_alphabetic() && c != 'l')? + 1;
        let conv = rest[..conv_len].chars().last()?;
        Some((&pattern[..start], conv, &rest[conv_len..]))
    }
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_enum() {
        for (i, d) in TABLE.iter().enumerate() {
            assert_eq!(d.kind as usize, i, "{:?}", d.kind);
            assert!(std::ptr::eq(d.kind.desc(), d));
        }
    }

    #[test]
    fn file_names_round_trip() {
        for kind in ImageKind::all() {
            let name = kind.file_name(0x1234);
            let id = if kind.id_format() == IdFormat::None {
                0
            } else {
                0x1234
            };
            let (found, found_id) = ImageKind::from_file_name(&name).expect("own name parses");
            assert_eq!(found_id, id, "{name}");
            // Legacy pre-pagemap `pages-%d.img` is named like `pages-%u.img`;
            // the current kind wins.
            if found != kind {
                assert!(
                    kind.desc().legacy && !found.desc().legacy,
                    "{name}: {found:?}"
                );
            }
        }
        assert_eq!(ImageKind::GhostFile.file_name(26), "ghost-file-1a.img");
        assert_eq!(ImageKind::Pagemap.file_name(24125), "pagemap-24125.img");
        assert_eq!(
            ImageKind::from_file_name("pagemap-shmem-7.img"),
            Some((ImageKind::ShmemPagemap, 7))
        );
        assert_eq!(
            ImageKind::from_file_name("pages-1.img"),
            Some((ImageKind::Pages, 1))
        );
        assert_eq!(ImageKind::from_file_name("dump.log"), None);
        assert_eq!(ImageKind::from_file_name("core-.img"), None);
    }

    #[test]
    fn shared_magics_resolve_like_crit() {
        assert_eq!(
            ImageKind::from_magic(magic::PAGEMAP_MAGIC),
            Some(ImageKind::Pagemap)
        );
        assert_eq!(
            ImageKind::from_magic(magic::SIGNAL_MAGIC),
            Some(ImageKind::Signal)
        );
        assert_eq!(
            ImageKind::from_magic(magic::BINFMT_MISC_MAGIC),
            Some(ImageKind::BinfmtMisc)
        );
        assert_eq!(
            ImageKind::from_magic(magic::STATS_MAGIC),
            Some(ImageKind::StatsDump)
        );
        assert_eq!(ImageKind::from_magic(magic::RAW_IMAGE_MAGIC), None);
        assert_eq!(ImageKind::from_magic(0xdead_beef), None);
    }

    #[test]
    fn layouts_follow_magic() {
        for kind in ImageKind::all() {
            let d = kind.desc();
            assert_eq!(
                d.layout == Layout::Raw,
                d.magic == magic::RAW_IMAGE_MAGIC,
                "{kind:?}"
            );
            assert_eq!(
                d.layout == Layout::Raw,
                d.entries == Entries::Opaque
                    && !matches!(kind, ImageKind::PagesOld | ImageKind::ShmPagesOld),
                "{kind:?}"
            );
        }
    }
}
