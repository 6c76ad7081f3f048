//! Magic numbers of CRIU image files (CRIU's `criu/include/magic.h`).
//!
//! Every value is a 32-bit word stored little-endian at the start of a file.
//! Regular images start with [`IMG_COMMON_MAGIC`] and then their type magic,
//! service files with [`IMG_SERVICE_MAGIC`] and then theirs, `inventory.img`
//! with [`INVENTORY_MAGIC`] alone, and raw images with nothing
//! ([`RAW_IMAGE_MAGIC`] only marks them in tables). Several names share one
//! value; see [`super::kind`] for which file uses which.

/// `inventory.img_version` of legacy images without the common magic.
pub const CRTOOLS_IMAGES_V1: u32 = 1;
/// `inventory.img_version` written by every current CRIU (format v1.1).
pub const CRTOOLS_IMAGES_V1_1: u32 = 2;

/// Marks a raw image in the tables; never written to a file.
pub const RAW_IMAGE_MAGIC: u32 = 0x0;
/// First word of every regular (v1.1) image.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// First word of the service files (`stats-*`, `irmap-cache`).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;

/// `inventory.img` (the only regular image without the common magic).
pub const INVENTORY_MAGIC: u32 = 0x5831_3116;
/// `pstree.img`.
pub const PSTREE_MAGIC: u32 = 0x5027_3030;
/// `fdinfo-%u.img`.
pub const FDINFO_MAGIC: u32 = 0x5621_3732;
/// `pagemap-%lu.img`.
pub const PAGEMAP_MAGIC: u32 = 0x5608_4025;
/// `pagemap-shmem-%lu.img` (same value as [`PAGEMAP_MAGIC`]).
pub const SHMEM_PAGEMAP_MAGIC: u32 = PAGEMAP_MAGIC;
/// `pages-%u.img` is raw.
pub const PAGES_MAGIC: u32 = RAW_IMAGE_MAGIC;
/// `core-%u.img`.
pub const CORE_MAGIC: u32 = 0x5505_3847;
/// `ids-%u.img`.
pub const IDS_MAGIC: u32 = 0x5443_2030;
/// Legacy `vmas-%u.img`.
pub const VMAS_MAGIC: u32 = 0x5412_3737;
/// Legacy `pipes.img`.
pub const PIPES_MAGIC: u32 = 0x5651_3555;
/// `pipes-data.img`.
pub const PIPES_DATA_MAGIC: u32 = 0x5645_3709;
/// Legacy `fifo.img`.
pub const FIFO_MAGIC: u32 = 0x5836_4939;
/// `fifo-data.img`.
pub const FIFO_DATA_MAGIC: u32 = 0x5933_3054;
/// Legacy `sigacts-%u.img`.
pub const SIGACT_MAGIC: u32 = 0x5534_4201;
/// Legacy `unixsk.img`.
pub const UNIXSK_MAGIC: u32 = 0x5437_3943;
/// Legacy `inetsk.img`.
pub const INETSK_MAGIC: u32 = 0x5644_3851;
/// Legacy `packetsk.img`.
pub const PACKETSK_MAGIC: u32 = 0x6045_4618;
/// Legacy `itimers-%u.img`.
pub const ITIMERS_MAGIC: u32 = 0x5746_4056;
/// Legacy `posix-timers-%u.img`.
pub const POSIX_TIMERS_MAGIC: u32 = 0x5260_3957;
/// `sk-queues.img`.
pub const SK_QUEUES_MAGIC: u32 = 0x5626_4026;
/// `utsns-%u.img`.
pub const UTSNS_MAGIC: u32 = 0x5447_3203;
/// Legacy `creds-%u.img`.
pub const CREDS_MAGIC: u32 = 0x5402_3547;
/// `ipcns-var-%u.img`.
pub const IPC_VAR_MAGIC: u32 = 0x5311_5007;
/// `ipcns-shm-%u.img`.
pub const IPCNS_SHM_MAGIC: u32 = 0x4628_3044;
/// `ipcns-msg-%u.img`.
pub const IPCNS_MSG_MAGIC: u32 = 0x5545_3737;
/// `ipcns-sem-%u.img`.
pub const IPCNS_SEM_MAGIC: u32 = 0x5957_3019;
/// Legacy `reg-files.img`.
pub const REG_FILES_MAGIC: u32 = 0x5036_3636;
/// Legacy `ext-files.img`.
pub const EXT_FILES_MAGIC: u32 = 0x5925_5641;
/// `fs-%u.img`.
pub const FS_MAGIC: u32 = 0x5140_3912;
/// `mm-%u.img`.
pub const MM_MAGIC: u32 = 0x5749_2820;
/// `remap-fpath.img`.
pub const REMAP_FPATH_MAGIC: u32 = 0x5913_3954;
/// `ghost-file-%x.img`.
pub const GHOST_FILE_MAGIC: u32 = 0x5258_3605;
/// `tcp-stream-%x.img`.
pub const TCP_STREAM_MAGIC: u32 = 0x5146_5506;
/// Legacy `eventfd.img`.
pub const EVENTFD_FILE_MAGIC: u32 = 0x4452_3722;
/// Legacy `eventpoll.img`.
pub const EVENTPOLL_FILE_MAGIC: u32 = 0x4502_3858;
/// Legacy `eventpoll-tfd.img`.
pub const EVENTPOLL_TFD_MAGIC: u32 = 0x4443_3746;
/// Legacy `signalfd.img`.
pub const SIGNALFD_MAGIC: u32 = 0x5732_3820;
/// Legacy `inotify.img`.
pub const INOTIFY_FILE_MAGIC: u32 = 0x4842_4431;
/// Legacy `inotify-wd.img`.
pub const INOTIFY_WD_MAGIC: u32 = 0x5456_2009;
/// `mountpoints-%u.img`.
pub const MNTS_MAGIC: u32 = 0x5556_3928;
/// `netdev-%u.img`.
pub const NETDEV_MAGIC: u32 = 0x5737_3951;
/// `netns-%u.img`.
pub const NETNS_MAGIC: u32 = 0x5593_3752;
/// Legacy `tty.img`.
pub const TTY_FILES_MAGIC: u32 = 0x5943_3025;
/// `tty-info.img`.
pub const TTY_INFO_MAGIC: u32 = 0x5945_3036;
/// `tty-data.img`.
pub const TTY_DATA_MAGIC: u32 = 0x5941_3026;
/// `filelocks.img`.
pub const FILE_LOCKS_MAGIC: u32 = 0x5432_3616;
/// Legacy `rlimit-%u.img`.
pub const RLIMIT_MAGIC: u32 = 0x5711_3925;
/// Legacy `fanotify.img`.
pub const FANOTIFY_FILE_MAGIC: u32 = 0x5509_6122;
/// Legacy `fanotify-mark.img`.
pub const FANOTIFY_MARK_MAGIC: u32 = 0x5650_6035;
/// Legacy `signal-s-%u.img`.
pub const SIGNAL_MAGIC: u32 = 0x5925_5647;
/// Legacy `signal-p-%u.img` (same value as [`SIGNAL_MAGIC`]).
pub const PSIGNAL_MAGIC: u32 = SIGNAL_MAGIC;
/// Legacy `netlinksk.img`.
pub const NETLINK_SK_MAGIC: u32 = 0x5800_5614;
/// Legacy `ns-files.img`.
pub const NS_FILES_MAGIC: u32 = 0x6139_4011;
/// Legacy `tunfile.img`.
pub const TUNFILE_MAGIC: u32 = 0x5714_3751;
/// `cgroup.img`.
pub const CGROUP_MAGIC: u32 = 0x5938_3330;
/// Legacy `timerfd.img`.
pub const TIMERFD_MAGIC: u32 = 0x5049_3712;
/// `cpuinfo.img`.
pub const CPUINFO_MAGIC: u32 = 0x6140_4013;
/// `userns-%u.img`.
pub const USERNS_MAGIC: u32 = 0x5547_4906;
/// `seccomp.img`.
pub const SECCOMP_MAGIC: u32 = 0x6441_3049;
/// `binfmt-misc.img`.
pub const BINFMT_MISC_MAGIC: u32 = 0x6734_3323;
/// `autofs-%u.img`.
pub const AUTOFS_MAGIC: u32 = 0x4935_3943;
/// `files.img`.
pub const FILES_MAGIC: u32 = 0x5630_3138;
/// `memfd.img`.
pub const MEMFD_INODE_MAGIC: u32 = 0x4845_3499;
/// `timens-%u.img`.
pub const TIMENS_MAGIC: u32 = 0x4311_4433;
/// `pidns-%u.img`.
pub const PIDNS_MAGIC: u32 = 0x6115_7326;
/// Legacy `bpfmap-file.img`.
pub const BPFMAP_FILE_MAGIC: u32 = 0x5750_6142;
/// `bpfmap-data.img`.
pub const BPFMAP_DATA_MAGIC: u32 = 0x6432_4033;
/// `apparmor.img`.
pub const APPARMOR_MAGIC: u32 = 0x5942_3047;
/// Legacy `pidfd.img` (only ever read).
pub const PIDFD_MAGIC: u32 = 0x5443_5556;

/// Legacy `pages-%d.img` (same value as [`PAGEMAP_MAGIC`]).
pub const PAGES_OLD_MAGIC: u32 = PAGEMAP_MAGIC;
/// Legacy `pages-shmem-%ld.img` (same value as [`PAGEMAP_MAGIC`]).
pub const SHM_PAGES_OLD_MAGIC: u32 = PAGEMAP_MAGIC;
/// Legacy `binfmt-misc-%u.img` (same value as [`BINFMT_MISC_MAGIC`]).
pub const BINFMT_MISC_OLD_MAGIC: u32 = BINFMT_MISC_MAGIC;

/// `stats-dump` and `stats-restore` (service files).
pub const STATS_MAGIC: u32 = 0x5709_3306;
/// `irmap-cache` (service file).
pub const IRMAP_CACHE_MAGIC: u32 = 0x5700_4059;

/// CRIU's kernel-feature cache outside the image directory; not an image.
pub const KDAT_MAGIC: u32 = 0x5702_3458;
