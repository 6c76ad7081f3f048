//! Where the contents of each saved page are: the task's pagemap, followed
//! through the `parent` links of incremental dumps (CRIU's `page-read`
//! in `criu/pagemap.c`, which opens the parent's pagemap for `PE_PARENT`
//! ranges, recursively).
//!
//! Every present page of the top pagemap, and every `PE_PARENT` range, is
//! resolved to one place in one pages file: the nearest image that holds
//! it. Ancestors may cut a range differently, so a range is assembled from
//! as many ancestor entries as it takes; a range no ancestor holds is an
//! error, as in CRIU. Each page is therefore read exactly once.

use std::fs::File;

use criu_proto::images::VmaEntry;
use criu_proto::img::pages::PAGE_SIZE;
use criu_proto::img::{ImageKind, ImagesDir, PageRun};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::images::ImagesError;

/// Most `parent` links followed (a loop of links ends here).
const MAX_CHAIN: usize = 256;

/// A pages file of the chain.
#[derive(Debug)]
pub(crate) struct PagesFile {
    /// Its name, relative to the top images directory (for errors).
    pub(crate) name: String,
    /// The open file.
    pub(crate) file: File,
    /// Bytes its pagemap needs.
    pub(crate) need: u64,
}

/// A range of pages and where its contents are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageSeg {
    /// First address.
    pub(crate) vaddr: u64,
    /// Bytes.
    pub(crate) len: u64,
    /// Index into [`TaskPages::files`].
    pub(crate) file: usize,
    /// Offset in that file.
    pub(crate) offset: u64,
}

/// The resolved pages of one task.
#[derive(Debug, Default)]
pub(crate) struct TaskPages {
    /// Ranges in address order.
    pub(crate) segs: Vec<PageSeg>,
    /// Pages files they point into.
    pub(crate) files: Vec<PagesFile>,
}

impl TaskPages {
    /// The saved ranges cut at VMA boundaries, in address order, each with
    /// the VMA of `vmas` (in address order, covering every saved page, as
    /// the image checks make sure) it lies in.
    pub(crate) fn in_vmas<'a>(
        &'a self,
        vmas: &'a [VmaEntry],
    ) -> impl Iterator<Item = (&'a VmaEntry, PageSeg)> + 'a {
        let (mut si, mut vi) = (0, 0);
        let mut addr = self.segs.first().map_or(0, |s| s.vaddr);
        std::iter::from_fn(move || {
            let seg = loop {
                let seg = self.segs.get(si)?;
                if addr < seg.vaddr + seg.len {
                    break seg;
                }
                si += 1;
                addr = self.segs.get(si)?.vaddr;
            };
            while vmas.get(vi)?.end <= addr {
                vi += 1;
            }
            let vma = &vmas[vi];
            let stop = vma.end.min(seg.vaddr + seg.len);
            let piece = PageSeg {
                vaddr: addr,
                len: stop - addr,
                file: seg.file,
                offset: seg.offset + (addr - seg.vaddr),
            };
            addr = stop;
            Some((vma, piece))
        })
    }
}

struct Level {
    dir: ImagesDir,
    prefix: String,
    pages_id: u32,
    runs: Vec<PageRun>,
    need: u64,
    file: Option<usize>,
}

struct Resolver {
    pid: u32,
    levels: Vec<Level>,
    out: TaskPages,
}

/// Resolves the runs of `pagemap-<pid>.img` of `dir` (already checked:
/// ascending, inside private VMAs; `top_pages_id` names its pages file).
pub(crate) fn resolve(
    dir: &ImagesDir,
    pid: u32,
    top_pages_id: u32,
    top: &[PageRun],
) -> Result<TaskPages, ImagesError> {
    let fd = nix::unistd::dup(dir.fd()).map_err(|e| open_error(String::new(), e))?;
    let mut r = Resolver {
        pid,
        levels: vec![Level {
            dir: ImagesDir::from_fd(fd, dir.path()),
            prefix: String::new(),
            pages_id: top_pages_id,
            runs: top.to_vec(),
            need: top
                .iter()
                .filter(|r| r.is_present())
                .map(PageRun::len_bytes)
                .sum(),
            file: None,
        }],
        out: TaskPages::default(),
    };
    for run in top {
        r.take(0, run.vaddr, run.vaddr + run.len_bytes())?;
    }
    Ok(r.out)
}

fn open_error(name: String, source: impl Into<std::io::Error>) -> ImagesError {
    ImagesError::Read {
        image: name.clone(),
        source: criu_proto::img::ImageError::Open {
            path: name.into(),
            source: source.into(),
        },
    }
}

impl Resolver {
    fn missing(&self, vaddr: u64, end: u64) -> ImagesError {
        ImagesError::Pagemap {
            pid: self.pid,
            vaddr,
            nr_pages: (end - vaddr) / PAGE_SIZE,
            reason: "are missing from the parent images",
        }
    }

    /// Loads the parent of level `k - 1` as level `k`.
    fn ensure(&mut self, k: usize, vaddr: u64, end: u64) -> Result<(), ImagesError> {
        if k < self.levels.len() {
            return Ok(());
        }
        if k > MAX_CHAIN {
            return Err(self.missing(vaddr, end));
        }
        let below = &self.levels[k - 1];
        let prefix = format!("{}parent/", below.prefix);
        let fd = openat(
            below.dir.fd(),
            "parent",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(prefix.clone(), e))?;
        let dir = ImagesDir::from_fd(fd, below.dir.path().join("parent"));
        let name = format!("{prefix}{}", ImageKind::Pagemap.file_name(self.pid.into()));
        let map = dir
            .pagemap(self.pid)
            .map_err(|source| ImagesError::Read {
                image: name.clone(),
                source,
            })?
            .ok_or(ImagesError::Missing { image: name })?;
        let runs: Vec<PageRun> = map.runs().collect();
        if runs
            .windows(2)
            .any(|w| w[0].vaddr + w[0].len_bytes() > w[1].vaddr)
        {
            return Err(ImagesError::Pagemap {
                pid: self.pid,
                vaddr,
                nr_pages: (end - vaddr) / PAGE_SIZE,
                reason: "have a parent pagemap out of order",
            });
        }
        self.levels.push(Level {
            dir,
            prefix,
            pages_id: map.head.pages_id,
            need: map.present_bytes(),
            runs,
            file: None,
        });
        Ok(())
    }

    fn file_of(&mut self, k: usize) -> Result<usize, ImagesError> {
        if let Some(i) = self.levels[k].file {
            return Ok(i);
        }
        let level = &self.levels[k];
        let base = ImageKind::Pages.file_name(level.pages_id.into());
        let name = format!("{}{base}", level.prefix);
        let fd = openat(
            level.dir.fd(),
            base.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(name.clone(), e))?;
        let file = File::from(fd);
        let have = file
            .metadata()
            .map_err(|e| open_error(name.clone(), e))?
            .len();
        if have < level.need {
            return Err(ImagesError::PagesTooShort {
                image: name,
                need: level.need,
                have,
            });
        }
        let need = level.need;
        self.out.files.push(PagesFile { name, file, need });
        let i = self.out.files.len() - 1;
        self.levels[k].file = Some(i);
        Ok(i)
    }

    /// Resolves `[vaddr, end)` from level `k` down the chain.
    fn take(&mut self, k: usize, vaddr: u64, end: u64) -> Result<(), ImagesError> {
        self.ensure(k, vaddr, end)?;
        let first = self.levels[k]
            .runs
            .partition_point(|r| r.vaddr + r.len_bytes() <= vaddr);
        let mut at = vaddr;
        let mut i = first;
        while at < end {
            let Some(run) = self.levels[k].runs.get(i).copied() else {
                break;
            };
            if run.vaddr > at {
                break;
            }
            let stop = (run.vaddr + run.len_bytes()).min(end);
            if run.is_present() {
                let file = self.file_of(k)?;
                let offset = run.pages_offset.unwrap_or(0) + (at - run.vaddr);
                self.push(PageSeg {
                    vaddr: at,
                    len: stop - at,
                    file,
                    offset,
                });
            } else if run.flags & criu_proto::img::pages::PE_PARENT != 0 {
                self.take(k + 1, at, stop)?;
            } else {
                return Err(ImagesError::Unsupported {
                    what: format!("lazy pages (pagemap-{}.img)", self.pid),
                });
            }
            at = stop;
            i += 1;
        }
        if at < end {
            return Err(self.missing(at, end));
        }
        Ok(())
    }

    fn push(&mut self, seg: PageSeg) {
        match self.out.segs.last_mut() {
            Some(last)
                if last.file == seg.file
                    && last.vaddr + last.len == seg.vaddr
                    && last.offset + last.len == seg.offset =>
            {
                last.len += seg.len
            }
            _ => self.out.segs.push(seg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64) -> VmaEntry {
        VmaEntry {
            start,
            end,
            ..Default::default()
        }
    }

    #[test]
    fn saved_ranges_are_cut_at_vma_boundaries() {
        let seg = |vaddr, len, file, offset| PageSeg {
            vaddr,
            len,
            file,
            offset,
        };
        let pages = TaskPages {
            segs: vec![seg(0x1000, 0x3000, 0, 0), seg(0x6000, 0x1000, 1, 0x8000)],
            files: Vec::new(),
        };
        let vmas = [
            vma(0x1000, 0x2000),
            vma(0x2000, 0x5000),
            vma(0x5000, 0x9000),
        ];
        let got: Vec<(u64, PageSeg)> = pages.in_vmas(&vmas).map(|(v, s)| (v.start, s)).collect();
        assert_eq!(
            got,
            vec![
                (0x1000, seg(0x1000, 0x1000, 0, 0)),
                (0x2000, seg(0x2000, 0x2000, 0, 0x1000)),
                (0x5000, seg(0x6000, 0x1000, 1, 0x8000)),
            ]
        );
        assert_eq!(TaskPages::default().in_vmas(&vmas).count(), 0);
    }
}
