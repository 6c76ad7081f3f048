//! `crit x DIR ps|fds|mems|rss`: text summaries of an image directory
//! (the explorers of CRIU's `crit/crit/__main__.py`).
//!
//! The output matches CRIU 4.2's `crit` line for line, with these
//! additions: `rss` takes the page count from `nr_pages` (CRIU 4.2) or, in
//! older images, from `compat_nr_pages`; it marks runs whose pages are not in
//! this directory (` [parent]`, checked against the pagemap of the same name
//! in the `parent` directory chain, ` [parent missing]` if no ancestor covers
//! them, ` [lazy]` for lazy-only runs); and it lists the shared-memory
//! pagemaps (`pagemap-shmem-<id>.img`) behind the task's shared mappings.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use criu_proto::images::{
    CoreEntry, FdTypes, FdinfoEntry, FileEntry, FsEntry, MemfdInodeEntry, MmEntry, PagemapEntry,
    PagemapHead, PipeEntry, PstreeEntry, RegFileEntry, TaskKobjIdsEntry, UnixSkEntry, VmaEntry,
};
use criu_proto::img::{ImageKind, ImageReader};
use prost::{Message, Name};

use crate::quopri;

/// Why a directory could not be explored.
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    /// An image could not be read.
    #[error("cannot read {path}")]
    Image {
        /// The image.
        path: PathBuf,
        /// Cause.
        #[source]
        source: criu_proto::img::ImageError,
    },
    /// An image that must hold an entry is empty.
    #[error("{path} has no entry")]
    Empty {
        /// The image.
        path: PathBuf,
    },
    /// A task names a parent that is not in the process tree.
    #[error("pstree.img: task {pid} has parent {ppid}, which is not in the tree")]
    NoParent {
        /// The task.
        pid: u32,
        /// Its missing parent.
        ppid: u32,
    },
    /// No task has parent 0.
    #[error("pstree.img has no root task")]
    NoRoot,
    /// The explorer name is not one of `ps`, `fds`, `mems`, `rss`.
    #[error("unknown explorer {0:?} (choose from ps, fds, mems, rss)")]
    Unknown(String),
}

const VMA_AREA_REGULAR: u32 = 1 << 0;
const VMA_AREA_STACK: u32 = 1 << 1;
const VMA_AREA_VSYSCALL: u32 = 1 << 2;
const VMA_AREA_VDSO: u32 = 1 << 3;
const VMA_FILE_PRIVATE: u32 = 1 << 6;
const VMA_FILE_SHARED: u32 = 1 << 7;
const VMA_ANON_SHARED: u32 = 1 << 8;
const VMA_AREA_SYSVIPC: u32 = 1 << 10;
const VMA_AREA_SOCKET: u32 = 1 << 11;
const VMA_AREA_MEMFD: u32 = 1 << 14;
const MAP_GROWSDOWN: u32 = 0x100;
const PE_PARENT: u32 = 1;
const PE_LAZY: u32 = 2;
const PE_PRESENT: u32 = 4;
const PAGE_SHIFT: u32 = 12;

/// Runs explorer `what` on `dir` and returns its output.
pub fn explore(dir: &Path, what: &str) -> Result<String, ExploreError> {
    let mut x = Explorer::new(dir);
    match what {
        "ps" => x.ps(),
        "fds" => x.fds(),
        "mems" => x.mems(),
        "rss" => x.rss(),
        other => return Err(ExploreError::Unknown(other.to_owned())),
    }?;
    Ok(x.out)
}

/// Reads every entry of `dir/name` as `M`.
fn read_all<M: Message + Name + Default>(
    dir: &Path,
    name: &str,
    kind: ImageKind,
) -> Result<Vec<M>, ExploreError> {
    let path = dir.join(name);
    let wrap = |source| ExploreError::Image {
        path: path.clone(),
        source,
    };
    let mut reader = ImageReader::open(&path, kind).map_err(wrap)?;
    if matches!(kind, ImageKind::Pagemap | ImageKind::ShmemPagemap) {
        reader.read_entry::<PagemapHead>().map_err(wrap)?;
    }
    reader.read_all().map_err(wrap)
}

fn read_first<M: Message + Name + Default>(
    dir: &Path,
    name: &str,
    kind: ImageKind,
) -> Result<M, ExploreError> {
    read_all(dir, name, kind)?
        .into_iter()
        .next()
        .ok_or_else(|| ExploreError::Empty {
            path: dir.join(name),
        })
}

/// Page count of a pagemap entry: CRIU 4.2's `nr_pages`, else the older
/// field.
pub fn entry_pages(pe: &PagemapEntry) -> u64 {
    pe.nr_pages.unwrap_or(pe.compat_nr_pages.into())
}

/// Flags of a pagemap entry as CRIU normalises them.
pub fn entry_flags(pe: &PagemapEntry) -> u32 {
    if pe.in_parent == Some(true) {
        pe.flags.unwrap_or(0) | PE_PARENT
    } else {
        pe.flags.unwrap_or(PE_PRESENT)
    }
}

struct Explorer<'a> {
    dir: &'a Path,
    out: String,
    files: Option<Vec<FileEntry>>,
    cache: HashMap<(String, u64), String>,
}

impl<'a> Explorer<'a> {
    fn new(dir: &'a Path) -> Self {
        Explorer {
            dir,
            out: String::new(),
            files: None,
            cache: HashMap::new(),
        }
    }

    fn line(&mut self, text: &str) {
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn pstree(&self) -> Result<Vec<PstreeEntry>, ExploreError> {
        read_all(self.dir, "pstree.img", ImageKind::Pstree)
    }

    fn ps(&mut self) -> Result<(), ExploreError> {
        let tasks = self.pstree()?;
        let mut comms = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let core: CoreEntry =
                read_first(self.dir, &format!("core-{}.img", t.pid), ImageKind::Core)?;
            comms.push(core.tc.map(|tc| tc.comm).unwrap_or_default());
        }
        let mut by_pid: HashMap<u32, usize> = HashMap::new();
        let mut order: Vec<u32> = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            if by_pid.insert(t.pid, i).is_none() {
                order.push(t.pid);
            }
        }
        let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut root = None;
        for pid in &order {
            let t = &tasks[by_pid[pid]];
            if t.ppid == 0 {
                root = Some(t.pid);
                continue;
            }
            if !by_pid.contains_key(&t.ppid) {
                return Err(ExploreError::NoParent {
                    pid: t.pid,
                    ppid: t.ppid,
                });
            }
            kids.entry(t.ppid).or_default().push(t.pid);
        }
        let root = root.ok_or(ExploreError::NoRoot)?;
        self.line(&format!(
            "{:>7}{:>7}{:>7}   {}",
            "PID", "PGID", "SID", "COMM"
        ));
        let mut stack = vec![(root, 0usize)];
        let mut seen = std::collections::HashSet::new();
        while let Some((pid, depth)) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            let i = by_pid[&pid];
            let t = &tasks[i];
            let text = format!(
                "{:>7}{:>7}{:>7}   {}{}",
                t.pid,
                t.pgid,
                t.sid,
                " ".repeat(4 * depth),
                comms[i]
            );
            self.line(&text);
            if let Some(children) = kids.get(&pid) {
                stack.extend(children.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
        Ok(())
    }

    fn files(&mut self) -> &[FileEntry] {
        if self.files.is_none() {
            self.files =
                Some(read_all(self.dir, "files.img", ImageKind::Files).unwrap_or_default());
        }
        self.files.as_deref().unwrap_or_default()
    }

    /// `crit`'s description of the file `(type, id)`.
    fn file_str(&mut self, ty: &str, id: u64) -> String {
        let key = (ty.to_owned(), id);
        if let Some(s) = self.cache.get(&key) {
            return s.clone();
        }
        let s = self.describe(ty, id);
        self.cache.insert(key, s.clone());
        s
    }

    fn describe(&mut self, ty: &str, id: u64) -> String {
        let found = self.files().iter().find(|f| u64::from(f.id) == id).cloned();
        match ty {
            "REG" => {
                let reg = match found {
                    Some(f) => f.reg,
                    None => self.legacy::<RegFileEntry>("reg-files.img", ImageKind::RegFiles, id),
                };
                match reg {
                    Some(r) if !r.name.is_empty() => r.name,
                    _ => "unknown path".to_owned(),
                }
            }
            "PIPE" => {
                let pipe = match found {
                    Some(f) => f.pipe,
                    None => self.legacy::<PipeEntry>("pipes.img", ImageKind::Pipes, id),
                };
                pipe.map_or_else(|| "pipe[?]".to_owned(), |p| format!("pipe[{}]", p.pipe_id))
            }
            "UNIXSK" => {
                let usk = match found {
                    Some(f) => f.usk,
                    None => self.legacy::<UnixSkEntry>("unixsk.img", ImageKind::Unixsk, id),
                };
                match usk {
                    Some(u) => {
                        let name = if u.name.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", quopri::encode(&u.name))
                        };
                        format!("unix[{} ({}){name}]", u.ino, u.peer)
                    }
                    None => "unix[?]".to_owned(),
                }
            }
            _ => format!("{ty}.{id}"),
        }
    }

    /// Looks `id` up in a legacy per-type image (`reg-files.img`, ...).
    fn legacy<M: Message + Name + Default + HasId>(
        &mut self,
        name: &'static str,
        kind: ImageKind,
        id: u64,
    ) -> Option<M> {
        read_all::<M>(self.dir, name, kind)
            .ok()?
            .into_iter()
            .find(|e| u64::from(e.id()) == id)
    }

    fn fds(&mut self) -> Result<(), ExploreError> {
        for t in self.pstree()? {
            let pid = t.pid;
            let ids: TaskKobjIdsEntry =
                read_first(self.dir, &format!("ids-{pid}.img"), ImageKind::Ids)?;
            let fdinfo: Vec<FdinfoEntry> = read_all(
                self.dir,
                &format!("fdinfo-{}.img", ids.files_id),
                ImageKind::Fdinfo,
            )?;
            self.line(&pid.to_string());
            for fd in fdinfo {
                let ty = FdTypes::try_from(fd.r#type).map_or("UNKNOWN", |t| t.as_str_name());
                let s = self.file_str(ty, fd.id.into());
                self.line(&format!("\t{:>7}: {s}", fd.fd));
            }
            let fs: FsEntry = read_first(self.dir, &format!("fs-{pid}.img"), ImageKind::Fs)?;
            let cwd = self.file_str("REG", fs.cwd_id.into());
            self.line(&format!("\t{:>7}: {cwd}", "cwd"));
            let root = self.file_str("REG", fs.root_id.into());
            self.line(&format!("\t{:>7}: {root}", "root"));
        }
        Ok(())
    }

    fn mm(&self, pid: u32) -> Result<MmEntry, ExploreError> {
        read_first(self.dir, &format!("mm-{pid}.img"), ImageKind::Mm)
    }

    fn mems(&mut self) -> Result<(), ExploreError> {
        let mut ids: HashMap<u64, u64> = HashMap::new();
        let mut vid = |shmid: u64| {
            let next = ids.len() as u64 + 1;
            *ids.entry(shmid).or_insert(next)
        };
        for t in self.pstree()? {
            let mm = self.mm(t.pid)?;
            self.line(&t.pid.to_string());
            let exe = self.file_str("REG", mm.exe_file_id.into());
            self.line(&format!("\t{:<36}    {exe}", "exe"));
            for vma in &mm.vmas {
                let st = vma.status;
                let mut name = if st & VMA_AREA_SYSVIPC != 0 {
                    format!(" ips[{:x}]", vid(vma.shmid))
                } else if st & VMA_ANON_SHARED != 0 {
                    format!(" shmem[{:x}]", vid(vma.shmid))
                } else if st & VMA_AREA_SOCKET != 0 {
                    format!(" packet[{:x}]", vid(vma.shmid))
                } else if st & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
                    let mut s = format!(" {}", self.file_str("REG", vma.shmid));
                    if vma.pgoff != 0 {
                        let _ = write!(s, " + {:#x}", vma.pgoff);
                    }
                    if st & VMA_FILE_SHARED != 0 {
                        s.push_str(" (s)");
                    }
                    s
                } else if st & VMA_AREA_STACK != 0 {
                    " [stack]".to_owned()
                } else if st & VMA_AREA_VSYSCALL != 0 {
                    " [vsyscall]".to_owned()
                } else if st & VMA_AREA_VDSO != 0 {
                    " [vdso]".to_owned()
                } else if vma.flags & MAP_GROWSDOWN != 0 {
                    " [stack?]".to_owned()
                } else {
                    String::new()
                };
                if st & VMA_AREA_REGULAR == 0 {
                    name.push_str(" *");
                }
                let prot: String = [(1, 'r'), (2, 'w'), (4, 'x')]
                    .iter()
                    .map(|&(bit, c)| if vma.prot & bit != 0 { c } else { '-' })
                    .collect();
                let range = format!("{:08x}-{:08x}", vma.start, vma.end);
                self.line(&format!("\t{range:<36}{prot}{name}"));
            }
        }
        Ok(())
    }

    fn rss(&mut self) -> Result<(), ExploreError> {
        for t in self.pstree()? {
            let pid = t.pid;
            let vmas = self.mm(pid)?.vmas;
            let name = format!("pagemap-{pid}.img");
            let pms: Vec<PagemapEntry> = read_all(self.dir, &name, ImageKind::Pagemap)?;
            self.line(&pid.to_string());
            // Indices follow crit, including Python's negative indexing
            // when the walk steps back before the first VMA.
            let len = vmas.len() as isize;
            let at = |i: isize| {
                let i = if i < 0 { len + i } else { i };
                usize::try_from(i).ok().and_then(|i| vmas.get(i))
            };
            let mut vmi: isize = 0;
            let mut pvmi: isize = -1;
            for pm in &pms {
                let nr = entry_pages(pm);
                let pstr = format!("\t{:x} / {:<8}", pm.vaddr, nr);
                while vmi < len && at(vmi).is_some_and(|v| v.end <= pm.vaddr) {
                    vmi += 1;
                }
                let pme = pm.vaddr.wrapping_add(nr << PAGE_SHIFT);
                let mut vstr = String::new();
                while vmi < len {
                    let Some(vma) = at(vmi).filter(|v| v.start < pme) else {
                        break;
                    };
                    if vmi == pvmi {
                        vstr.push_str(" ~");
                    } else {
                        let _ = write!(
                            vstr,
                            " {:08x} / {:<8}",
                            vma.start,
                            (vma.end.wrapping_sub(vma.start)) >> PAGE_SHIFT
                        );
                        if vma.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0 {
                            let s = self.file_str("REG", vma.shmid);
                            vstr.push(' ');
                            vstr.push_str(&s);
                        }
                        pvmi = vmi;
                    }
                    let _ = write!(vstr, "\n\t{:23}", "");
                    vmi += 1;
                }
                vmi -= 1;
                let mut text = format!("{pstr:<24}{vstr}");
                if let Some(mark) = self.mark(&name, pm, nr) {
                    let at = text.find('\n').unwrap_or(text.len());
                    text.insert_str(at, mark);
                }
                self.line(&text);
            }
            self.shmem_lines(&vmas)?;
        }
        Ok(())
    }

    /// The marker for a run whose pages are not in this directory.
    fn mark(&self, name: &str, pm: &PagemapEntry, nr: u64) -> Option<&'static str> {
        let flags = entry_flags(pm);
        if flags & PE_PARENT != 0 {
            let end = pm.vaddr.saturating_add(nr << PAGE_SHIFT);
            return Some(
                if parent_covers(&self.dir.join("parent"), name, pm.vaddr, end) {
                    " [parent]"
                } else {
                    " [parent missing]"
                },
            );
        }
        (flags & PE_PRESENT == 0 && flags & PE_LAZY != 0).then_some(" [lazy]")
    }

    /// Lists the shmem pagemaps behind the task's shared mappings.
    fn shmem_lines(&mut self, vmas: &[VmaEntry]) -> Result<(), ExploreError> {
        let mut memfd: Option<Vec<MemfdInodeEntry>> = None;
        for vma in vmas {
            let shmid = if vma.status & VMA_ANON_SHARED != 0 {
                Some(vma.shmid)
            } else if vma.status & VMA_AREA_MEMFD != 0 {
                let inode = self
                    .files()
                    .iter()
                    .find(|f| u64::from(f.id) == vma.shmid)
                    .and_then(|f| f.memfd.as_ref())
                    .map(|m| m.inode_id);
                let inodes = memfd.get_or_insert_with(|| {
                    read_all(self.dir, "memfd.img", ImageKind::MemfdInode).unwrap_or_default()
                });
                inode.and_then(|id| {
                    inodes
                        .iter()
                        .find(|i| i.inode_id == u64::from(id))
                        .map(|i| u64::from(i.shmid))
                })
            } else {
                None
            };
            let Some(shmid) = shmid else {
                continue;
            };
            let name = format!("pagemap-shmem-{shmid}.img");
            if !self.dir.join(&name).exists() {
                continue;
            }
            let entries: Vec<PagemapEntry> = read_all(self.dir, &name, ImageKind::ShmemPagemap)?;
            let (mut here, mut parent) = (0u64, 0u64);
            for e in &entries {
                let flags = entry_flags(e);
                if flags & PE_PRESENT != 0 {
                    here += entry_pages(e);
                } else if flags & PE_PARENT != 0 {
                    parent += entry_pages(e);
                }
            }
            let mut text = format!(
                "\tshmem {:08x}-{:08x} {name}: {here} pages",
                vma.start, vma.end
            );
            if parent != 0 {
                let _ = write!(text, ", {parent} in parent");
            }
            self.line(&text);
        }
        Ok(())
    }
}

/// Whether `[start, end)` is covered by the pagemap `name` of `dir` or,
/// for its own parent runs, of the directories further up.
fn parent_covers(dir: &Path, name: &str, start: u64, end: u64) -> bool {
    const MAX_CHAIN: usize = 64;
    let mut dir = dir.to_owned();
    let mut want = vec![(start, end)];
    for _ in 0..MAX_CHAIN {
        let Ok(entries) = read_all::<PagemapEntry>(&dir, name, ImageKind::Pagemap) else {
            return false;
        };
        let mut next = Vec::new();
        for &(s, e) in &want {
            let mut pos = s;
            for pe in &entries {
                let pe_end = pe.vaddr.saturating_add(entry_pages(pe) << PAGE_SHIFT);
                if pe_end <= pos || pe.vaddr >= e {
                    continue;
                }
                if pe.vaddr > pos {
                    return false;
                }
                let covered_end = pe_end.min(e);
                if entry_flags(pe) & PE_PARENT != 0 {
                    next.push((pos, covered_end));
                }
                pos = covered_end;
                if pos >= e {
                    break;
                }
            }
            if pos < e {
                return false;
            }
        }
        if next.is_empty() {
            return true;
        }
        want = next;
        dir = dir.join("parent");
    }
    false
}

/// Entries of legacy per-type images found by id.
trait HasId {
    fn id(&self) -> u32;
}

impl HasId for RegFileEntry {
    fn id(&self) -> u32 {
        self.id
    }
}

impl HasId for PipeEntry {
    fn id(&self) -> u32 {
        self.id
    }
}

impl HasId for UnixSkEntry {
    fn id(&self) -> u32 {
        self.id
    }
}
