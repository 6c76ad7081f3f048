//! `cpuinfo.img`: the CPU a dump was taken on, and the check before restore.
//!
//! CRIU counterpart: `criu/arch/x86/cpu.c` (`cpu_dump_cpuinfo`,
//! `cpu_validate_cpuinfo`) over compel's CPU identification. The image holds
//! one `CpuinfoEntry` with one `CpuinfoX86Entry`, byte-compatible with CRIU
//! 4.2 (same capability layout, same quirks), so CRIU and `crit` read ours and
//! we check theirs.
//!
//! `cpu_cap` selects what [`check`] compares (CRIU's `--cpu-cap`):
//!
//! - [`CPU_CAP_FPU`]: FPU features (fpu, fxsr, osxsave, xsaves) the image
//!   needs must exist here; image xfeatures must be a subset of ours; the
//!   XSAVE frame sizes must be equal.
//! - [`CPU_CAP_INS`]: instruction-set features the image has (sse*, avx*,
//!   aes, bmi...) must exist here; more is fine.
//! - [`CPU_CAP_CPU`]: every capability word must be equal.
//! - [`CPU_CAP_NONE`] (0) means all three. [`CPU_CAP_IMAGE`] only says whether
//!   dump writes the image; it does not change the comparison.
//!
//! Image layout (u32 little-endian):
//!
//! ```text
//! 0x54564319 (IMG_COMMON) | 0x61404013 (CPUINFO) | len | CpuinfoEntry (len bytes)
//! ```

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use criu_proto::images::CpuinfoEntry;
use criu_proto::Message;

/// No capability given; [`check`] then compares everything, as CRIU does.
pub const CPU_CAP_NONE: u32 = 0;
/// Compare FPU/XSAVE capabilities.
pub const CPU_CAP_FPU: u32 = 1;
/// Compare all capability words strictly.
pub const CPU_CAP_CPU: u32 = 2;
/// Compare instruction-set capabilities.
pub const CPU_CAP_INS: u32 = 4;
/// Write `cpuinfo.img` on dump (and read it on restore).
pub const CPU_CAP_IMAGE: u32 = 8;
/// FPU, CPU and INS.
pub const CPU_CAP_ALL: u32 = CPU_CAP_FPU | CPU_CAP_CPU | CPU_CAP_INS;
/// What CRIU uses when `cpu_cap` is not given: FPU and INS.
pub const CPU_CAP_DEFAULT: u32 = CPU_CAP_FPU | CPU_CAP_INS;

/// File name of the image inside the images directory.
pub const IMAGE_NAME: &str = "cpuinfo.img";

const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const CPUINFO_MAGIC: u32 = 0x6140_4013;
/// Far above any real entry (about 200 bytes); guards against garbage lengths.
const MAX_ENTRY_LEN: u32 = 64 * 1024;

/// Why `cpuinfo.img` could not be written or did not match this CPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuinfoError {
    /// Not x86-64.
    #[error("cpuinfo images are not supported on this architecture")]
    Unsupported,
    /// The host CPU's vendor is neither Intel, AMD nor Hygon.
    #[error("unsupported cpu vendor {vendor}")]
    HostVendor {
        /// The CPUID vendor string.
        vendor: String,
    },
    /// Writing the image failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The image path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the image failed (including a missing file).
    #[error("cannot read {}", path.display())]
    Read {
        /// The image path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A magic number is wrong.
    #[error("{} has magic {found:#010x} where {expected:#010x} was expected", path.display())]
    BadMagic {
        /// The image path.
        path: PathBuf,
        /// What the file holds.
        found: u32,
        /// What a cpuinfo image holds.
        expected: u32,
    },
    /// The image ends early or has no entry.
    #[error("{} is truncated or has no cpuinfo entry", path.display())]
    Truncated {
        /// The image path.
        path: PathBuf,
    },
    /// The entry length is implausible.
    #[error("{} announces a {len}-byte entry", path.display())]
    EntryTooLarge {
        /// The image path.
        path: PathBuf,
        /// The announced length.
        len: u32,
    },
    /// The entry is not a valid `CpuinfoEntry`.
    #[error("cannot decode the cpuinfo entry of {}", path.display())]
    Decode {
        /// The image path.
        path: PathBuf,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// The entry does not carry exactly one x86 entry.
    #[error("image carries {count} x86 cpuinfo entries instead of 1")]
    X86Entries {
        /// How many there are.
        count: usize,
    },
    /// The image vendor is neither INTEL (1) nor AMD (2).
    #[error("image carries unknown cpu vendor {vendor}")]
    ImageVendor {
        /// The raw enum value.
        vendor: i32,
    },
    /// Unknown `capability_ver`.
    #[error("image carries unknown capability version {version}")]
    CapabilityVersion {
        /// The version found.
        version: u32,
    },
    /// Wrong number of capability words for the version.
    #[error("image carries {found} capability words while {expected} expected")]
    CapabilityWords {
        /// Words in the image.
        found: usize,
        /// Words the version defines.
        expected: usize,
    },
    /// FPU features of the image are missing here.
    #[error("fpu features required by the image are not supported on this host: {missing}")]
    FpuFeatures {
        /// Names of the missing features.
        missing: String,
    },
    /// XSAVE components of the image are missing here.
    #[error("cpu xfeatures of the image have bits this host lacks ({bits:#x})")]
    Xfeatures {
        /// The missing component bits.
        bits: u64,
    },
    /// Different XSAVE frame size.
    #[error("cpu xsave size mismatch (image {image}, host {host})")]
    XsaveSize {
        /// Size in the image.
        image: u32,
        /// Size here.
        host: u32,
    },
    /// Different maximal XSAVE frame size.
    #[error("cpu xsave max size mismatch (image {image}, host {host})")]
    XsaveSizeMax {
        /// Size in the image.
        image: u32,
        /// Size here.
        host: u32,
    },
    /// Instruction-set features of the image are missing here.
    #[error("cpu instruction capabilities do not match this host: word {word} bits {bits:#010x} are missing")]
    Instructions {
        /// Capability word index.
        word: usize,
        /// Missing bits of that word.
        bits: u32,
    },
    /// Strict comparison failed.
    #[error("cpu capabilities do not match this host: word {word} is {image:#010x} in the image, {host:#010x} here")]
    Capabilities {
        /// First differing word.
        word: usize,
        /// Its value in the image.
        image: u32,
        /// Its value here.
        host: u32,
    },
}

impl CpuinfoError {
    /// The `cr_errno` a CPUINFO_* reply carries: `ENOTSUP` when the
    /// architecture has no cpuinfo support (rpc-protocol.md 8.1), otherwise 0
    /// (no errno: upstream sends none for these failures).
    pub fn cr_errno(&self) -> i32 {
        match self {
            Self::Unsupported => libc::ENOTSUP,
            _ => 0,
        }
    }
}

/// Writes the framed entry (kept in one place until `criu_proto::img` takes over).
fn write_image(path: &Path, entry: &CpuinfoEntry) -> Result<(), CpuinfoError> {
    let body = entry.encode_to_vec();
    let len = u32::try_from(body.len()).map_err(|_| CpuinfoError::EntryTooLarge {
        path: path.to_owned(),
        len: u32::MAX,
    })?;
    let mut bytes = Vec::with_capacity(12 + body.len());
    for word in [IMG_COMMON_MAGIC, CPUINFO_MAGIC, len] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.extend_from_slice(&body);
    let write_err = |source| CpuinfoError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)
}

/// Reads the framed entry back, checking both magics.
#[cfg_attr(
    not(target_arch = "x86_64"),
    expect(dead_code, reason = "only x86-64 has a cpuinfo check")
)]
fn read_image(path: &Path) -> Result<CpuinfoEntry, CpuinfoError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| CpuinfoError::Read {
            path: path.to_owned(),
            source,
        })?;
    let word = |i: usize| {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| CpuinfoError::Truncated {
                path: path.to_owned(),
            })
    };
    for (i, expected) in [(0, IMG_COMMON_MAGIC), (1, CPUINFO_MAGIC)] {
        let found = word(i)?;
        if found != expected {
            return Err(CpuinfoError::BadMagic {
                path: path.to_owned(),
                found,
                expected,
            });
        }
    }
    let len = word(2)?;
    if len > MAX_ENTRY_LEN {
        return Err(CpuinfoError::EntryTooLarge {
            path: path.to_owned(),
            len,
        });
    }
    let body = bytes
        .get(12..12 + len as usize)
        .ok_or_else(|| CpuinfoError::Truncated {
            path: path.to_owned(),
        })?;
    CpuinfoEntry::decode(body).map_err(|source| CpuinfoError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// The entry CRIU 4.2 would write for this CPU.
#[doc(alias = "cpu_dump_cpuinfo")]
pub fn host_entry() -> Result<CpuinfoEntry, CpuinfoError> {
    x86::host_entry()
}

/// CPUINFO_DUMP: writes `cpuinfo.img` into `dir`.
#[doc(alias = "cpuinfo_dump")]
pub fn dump(dir: &Path) -> Result<(), CpuinfoError> {
    let entry = host_entry()?;
    write_image(&dir.join(IMAGE_NAME), &entry)
}

/// CPUINFO_CHECK: compares `dir/cpuinfo.img` with this CPU according to
/// `cpu_cap` ([`CPU_CAP_NONE`] = everything).
#[doc(alias = "cpuinfo_check")]
pub fn check(dir: &Path, cpu_cap: u32) -> Result<(), CpuinfoError> {
    let cpu_cap = if cpu_cap == CPU_CAP_NONE {
        CPU_CAP_ALL
    } else {
        cpu_cap
    };
    x86::check(&dir.join(IMAGE_NAME), cpu_cap)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::path::Path;

    use criu_proto::images::cpuinfo_x86_entry::Vendor as ImgVendor;
    use criu_proto::images::{CpuinfoEntry, CpuinfoX86Entry};

    use super::{read_image, CpuinfoError, CPU_CAP_CPU, CPU_CAP_FPU, CPU_CAP_INS};
    use crate::arch::x86_64::{
        feature, ins_mask, test_bit, CpuInfo, Vendor, CAPABILITY_VER, NCAPINTS, NCAPINTS_V1,
        NCAPINTS_V2,
    };

    fn host() -> Result<CpuInfo, CpuinfoError> {
        CpuInfo::host().map_err(|vendor| CpuinfoError::HostVendor { vendor })
    }

    pub(super) fn host_entry() -> Result<CpuinfoEntry, CpuinfoError> {
        let c = host()?;
        let vendor = match c.vendor {
            Vendor::Intel => ImgVendor::Intel,
            Vendor::Amd => ImgVendor::Amd,
        };
        let x86 = CpuinfoX86Entry {
            vendor_id: vendor as i32,
            cpu_family: c.family,
            model: c.model,
            stepping: c.stepping,
            capability_ver: CAPABILITY_VER,
            capability: c.capability.to_vec(),
            model_id: (!c.model_id.is_empty()).then(|| c.model_id.clone()),
            xfeatures_mask: Some(c.xfeatures_mask),
            xsave_size: Some(c.xsave_size),
            xsave_size_max: Some(c.xsave_size_max),
        };
        Ok(CpuinfoEntry {
            x86_entry: vec![x86],
            ..CpuinfoEntry::default()
        })
    }

    /// The image's view of the CPU, with what old images lack taken from the
    /// host (`img_to_cpuinfo`).
    struct ImageCpu {
        capability: [u32; NCAPINTS],
        xfeatures_mask: u64,
        xsave_size: u32,
        xsave_size_max: u32,
    }

    fn image_cpu(e: &CpuinfoX86Entry, host: &CpuInfo) -> Result<ImageCpu, CpuinfoError> {
        if e.vendor_id != ImgVendor::Intel as i32 && e.vendor_id != ImgVendor::Amd as i32 {
            return Err(CpuinfoError::ImageVendor {
                vendor: e.vendor_id,
            });
        }
        let expected = match e.capability_ver {
            1 => NCAPINTS_V1,
            2 => NCAPINTS_V2,
            version => return Err(CpuinfoError::CapabilityVersion { version }),
        };
        if e.capability.len() != expected {
            return Err(CpuinfoError::CapabilityWords {
                found: e.capability.len(),
                expected,
            });
        }
        let mut capability = host.capability;
        capability[..expected].copy_from_slice(&e.capability);
        Ok(ImageCpu {
            capability,
            xfeatures_mask: e.xfeatures_mask.unwrap_or(host.xfeatures_mask),
            xsave_size: e.xsave_size.unwrap_or(host.xsave_size),
            xsave_size_max: e.xsave_size_max.unwrap_or(host.xsave_size_max),
        })
    }

    fn check_fpu(img: &ImageCpu, host: &CpuInfo) -> Result<(), CpuinfoError> {
        let missing: Vec<&str> = [
            ("fpu", feature::FPU),
            ("fxsr", feature::FXSR),
            ("osxsave", feature::OSXSAVE),
            ("xsaves", feature::XSAVES),
        ]
        .into_iter()
        .filter(|&(_, f)| test_bit(&img.capability, f) && !host.has(f))
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(CpuinfoError::FpuFeatures {
                missing: missing.join(", "),
            });
        }
        let bits = img.xfeatures_mask & !host.xfeatures_mask;
        if bits != 0 {
            return Err(CpuinfoError::Xfeatures { bits });
        }
        if img.xsave_size != host.xsave_size {
            return Err(CpuinfoError::XsaveSize {
                image: img.xsave_size,
                host: host.xsave_size,
            });
        }
        if img.xsave_size_max != host.xsave_size_max {
            return Err(CpuinfoError::XsaveSizeMax {
                image: img.xsave_size_max,
                host: host.xsave_size_max,
            });
        }
        Ok(())
    }

    fn check_ins(img: &ImageCpu, host: &CpuInfo) -> Result<(), CpuinfoError> {
        let mask = ins_mask();
        let missing = img
            .capability
            .iter()
            .zip(&host.capability)
            .zip(&mask)
            // The destination may offer more, never less.
            .map(|((&i, &h), &m)| i & m & !(h & m))
            .enumerate()
            .find(|&(_, bits)| bits != 0);
        if let Some((word, bits)) = missing {
            return Err(CpuinfoError::Instructions { word, bits });
        }
        Ok(())
    }

    fn check_strict(img: &ImageCpu, host: &CpuInfo) -> Result<(), CpuinfoError> {
        match (0..NCAPINTS).find(|&w| img.capability[w] != host.capability[w]) {
            Some(word) => Err(CpuinfoError::Capabilities {
                word,
                image: img.capability[word],
                host: host.capability[word],
            }),
            None => Ok(()),
        }
    }

    #[doc(alias = "cpu_validate_cpuinfo")]
    pub(super) fn check(path: &Path, cpu_cap: u32) -> Result<(), CpuinfoError> {
        let host = host()?;
        let entry = read_image(path)?;
        let [x86] = entry.x86_entry.as_slice() else {
            return Err(CpuinfoError::X86Entries {
                count: entry.x86_entry.len(),
            });
        };
        let img = image_cpu(x86, &host)?;
        if cpu_cap & CPU_CAP_FPU != 0 {
            check_fpu(&img, &host)?;
        }
        if cpu_cap & CPU_CAP_INS != 0 {
            check_ins(&img, &host)?;
        }
        if cpu_cap & CPU_CAP_CPU != 0 {
            check_strict(&img, &host)?;
        }
        Ok(())
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use std::path::Path;

    use criu_proto::images::CpuinfoEntry;

    use super::CpuinfoError;

    pub(super) fn host_entry() -> Result<CpuinfoEntry, CpuinfoError> {
        Err(CpuinfoError::Unsupported)
    }

    pub(super) fn check(_path: &Path, _cpu_cap: u32) -> Result<(), CpuinfoError> {
        Err(CpuinfoError::Unsupported)
    }
}
