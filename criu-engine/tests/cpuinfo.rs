//! cpuinfo.img: dump, decode, check on the same host, doctored images.

use std::path::{Path, PathBuf};

use criu_engine::cpuinfo::{
    self, CpuinfoError, CPU_CAP_ALL, CPU_CAP_CPU, CPU_CAP_DEFAULT, CPU_CAP_FPU, CPU_CAP_IMAGE,
    CPU_CAP_INS, CPU_CAP_NONE, IMAGE_NAME,
};
use criu_proto::images::{CpuinfoEntry, CpuinfoX86Entry};
use criu_proto::Message;

const MAGICS: [u8; 8] = [0x19, 0x43, 0x56, 0x54, 0x13, 0x40, 0x40, 0x61];

/// A fresh directory under the target dir, removed first if left over.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cpuinfo-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_entry(dir: &Path) -> CpuinfoEntry {
    let bytes = std::fs::read(dir.join(IMAGE_NAME)).unwrap();
    assert_eq!(bytes[..8], MAGICS);
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 12 + len, "exactly one entry");
    CpuinfoEntry::decode(&bytes[12..]).unwrap()
}

fn write_entry(dir: &Path, entry: &CpuinfoEntry) {
    let body = entry.encode_to_vec();
    let mut bytes = MAGICS.to_vec();
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(dir.join(IMAGE_NAME), bytes).unwrap();
}

/// Dumps, lets `edit` change the x86 entry, writes it back.
fn doctored(name: &str, edit: impl FnOnce(&mut CpuinfoX86Entry)) -> PathBuf {
    let dir = scratch(name);
    cpuinfo::dump(&dir).unwrap();
    let mut entry = read_entry(&dir);
    edit(&mut entry.x86_entry[0]);
    write_entry(&dir, &entry);
    dir
}

fn proc_cpuinfo(key: &str) -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/cpuinfo"))
}

fn bit(caps: &[u32], word: usize, bit: u32) -> bool {
    caps[word] & (1 << bit) != 0
}

#[test]
fn dump_writes_criu_layout_matching_this_cpu() {
    let dir = scratch("dump");
    cpuinfo::dump(&dir).unwrap();
    let entry = read_entry(&dir);
    assert_eq!(entry, cpuinfo::host_entry().unwrap());
    assert!(entry.ppc64_entry.is_empty() && entry.s390_entry.is_empty());
    let [x86] = entry.x86_entry.as_slice() else {
        panic!("{entry:?}")
    };

    let vendor = match proc_cpuinfo("vendor_id").as_str() {
        "GenuineIntel" => 1,
        "AuthenticAMD" | "HygonGenuine" => 2,
        other => panic!("vendor {other}"),
    };
    assert_eq!(x86.vendor_id, vendor);
    assert_eq!(x86.cpu_family.to_string(), proc_cpuinfo("cpu family"));
    assert_eq!(x86.model.to_string(), proc_cpuinfo("model"));
    assert_eq!(x86.stepping.to_string(), proc_cpuinfo("stepping"));
    assert_eq!(
        x86.model_id.as_deref().map(str::trim_end),
        Some(proc_cpuinfo("model name").as_str())
    );
    assert_eq!(x86.capability_ver, 2);
    assert_eq!(x86.capability.len(), 19);

    let caps = &x86.capability;
    let flags = proc_cpuinfo("flags");
    let flags: Vec<&str> = flags.split_whitespace().collect();
    for (flag, word, b) in [
        ("fpu", 0, 0),
        ("sse2", 0, 26),
        ("syscall", 1, 11),
        ("pni", 4, 0),
        ("xsave", 4, 26),
        ("avx", 4, 28),
        ("avx2", 9, 5),
    ] {
        assert_eq!(bit(caps, word, b), flags.contains(&flag), "flag {flag}");
    }
    // Synthesised by CRIU on every x86-64: cpuid and nopl.
    assert!(bit(caps, 3, 25) && bit(caps, 3, 20));

    let mask = x86.xfeatures_mask.unwrap();
    assert!(mask & 1 != 0, "x87 state");
    // CRIU 4.2's supervisor-mask slip clears SSE (bit 1) and BNDREGS (bit 3).
    assert_eq!(mask & 0b1010, 0, "{mask:#x}");
    if flags.contains(&"avx") {
        assert!(mask & 0b100 != 0, "ymm state {mask:#x}");
    }
    let size = x86.xsave_size.unwrap();
    assert!(
        size >= 576 && size <= x86.xsave_size_max.unwrap(),
        "{x86:?}"
    );
}

#[test]
fn check_on_the_same_host_passes_for_every_cpu_cap() {
    let dir = scratch("same-host");
    cpuinfo::dump(&dir).unwrap();
    for cap in [
        CPU_CAP_NONE,
        CPU_CAP_FPU,
        CPU_CAP_CPU,
        CPU_CAP_INS,
        CPU_CAP_IMAGE,
        CPU_CAP_DEFAULT,
        CPU_CAP_ALL,
        CPU_CAP_ALL | CPU_CAP_IMAGE,
    ] {
        cpuinfo::check(&dir, cap).unwrap_or_else(|e| panic!("cpu_cap {cap}: {e}"));
    }
}

#[test]
fn changed_capability_word_fails_strict_check_only() {
    let dir = doctored("word2", |x| x.capability[2] |= 1);
    let err = cpuinfo::check(&dir, CPU_CAP_NONE).unwrap_err();
    assert!(
        matches!(err, CpuinfoError::Capabilities { word: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("word 2"), "{err}");
    assert!(matches!(
        cpuinfo::check(&dir, CPU_CAP_CPU),
        Err(CpuinfoError::Capabilities { word: 2, .. })
    ));
    // Word 2 holds no instruction or FPU feature.
    cpuinfo::check(&dir, CPU_CAP_INS | CPU_CAP_FPU).unwrap();
}

#[test]
fn missing_instruction_feature_fails_ins_check() {
    let host = cpuinfo::host_entry().unwrap().x86_entry[0]
        .capability
        .clone();
    // 3dnow, 3dnowext, xop, fma4, tbm, avx512pf, avx512er, avx512_4vnniw:
    // instruction features at least one of which a current CPU lacks.
    let candidates = [
        (1, 31),
        (1, 30),
        (6, 11),
        (6, 16),
        (6, 21),
        (9, 26),
        (9, 27),
        (18, 2),
    ];
    let (word, b) = *candidates
        .iter()
        .find(|&&(w, b)| !bit(&host, w, b))
        .expect("this CPU has every candidate feature");
    let dir = doctored("ins", |x| x.capability[word] |= 1 << b);
    let err = cpuinfo::check(&dir, CPU_CAP_INS).unwrap_err();
    match &err {
        CpuinfoError::Instructions { word: w, bits } => {
            assert_eq!((*w, *bits), (word, 1 << b));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("instruction capabilities"),
        "{err}"
    );
    cpuinfo::check(&dir, CPU_CAP_FPU).unwrap();
}

#[test]
fn image_with_fewer_features_passes_ins_check() {
    // The destination may be richer than the source.
    let dir = doctored("fewer", |x| x.capability[4] &= !(1 << 25)); // aes
    cpuinfo::check(&dir, CPU_CAP_INS).unwrap();
    cpuinfo::check(&dir, CPU_CAP_FPU).unwrap();
    let host_has_aes = bit(
        &cpuinfo::host_entry().unwrap().x86_entry[0].capability,
        4,
        25,
    );
    assert_eq!(cpuinfo::check(&dir, CPU_CAP_CPU).is_err(), host_has_aes);
}

#[test]
fn xsave_differences_fail_fpu_check() {
    let dir = doctored("xsave", |x| x.xsave_size = x.xsave_size.map(|s| s + 64));
    let err = cpuinfo::check(&dir, CPU_CAP_FPU).unwrap_err();
    assert!(matches!(err, CpuinfoError::XsaveSize { .. }), "{err:?}");
    assert!(err.to_string().contains("xsave size mismatch"), "{err}");
    cpuinfo::check(&dir, CPU_CAP_INS | CPU_CAP_CPU).unwrap();

    let dir = doctored("xfeatures", |x| x.xfeatures_mask = Some(1 << 62));
    let err = cpuinfo::check(&dir, CPU_CAP_NONE).unwrap_err();
    assert!(
        matches!(err, CpuinfoError::Xfeatures { bits } if bits == 1 << 62),
        "{err:?}"
    );
}

#[test]
fn doctored_vendor_and_versions_are_rejected() {
    let dir = doctored("vendor", |x| x.vendor_id = 0);
    let err = cpuinfo::check(&dir, CPU_CAP_INS).unwrap_err();
    assert!(
        matches!(err, CpuinfoError::ImageVendor { vendor: 0 }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "image carries unknown cpu vendor 0");

    let dir = doctored("ver3", |x| x.capability_ver = 3);
    assert!(matches!(
        cpuinfo::check(&dir, CPU_CAP_ALL),
        Err(CpuinfoError::CapabilityVersion { version: 3 })
    ));

    let dir = doctored("words", |x| {
        x.capability.pop();
    });
    let err = cpuinfo::check(&dir, CPU_CAP_ALL).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image carries 18 capability words while 19 expected"
    );

    // Version 1 images hold 12 words; the rest is taken from the host.
    let dir = doctored("ver1", |x| {
        x.capability_ver = 1;
        x.capability.truncate(12);
    });
    cpuinfo::check(&dir, CPU_CAP_ALL).unwrap();

    // Images without the optional xsave fields are compared with the host's.
    let dir = doctored("old", |x| {
        x.xfeatures_mask = None;
        x.xsave_size = None;
        x.xsave_size_max = None;
        x.model_id = None;
    });
    cpuinfo::check(&dir, CPU_CAP_ALL).unwrap();
}

#[test]
fn broken_files_give_clear_errors() {
    let dir = scratch("missing");
    let err = cpuinfo::check(&dir, CPU_CAP_NONE).unwrap_err();
    assert!(matches!(err, CpuinfoError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("cpuinfo.img"), "{err}");

    let dir = scratch("magic");
    let mut bytes = MAGICS.to_vec();
    bytes[4] = 0x14; // another image kind
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(dir.join(IMAGE_NAME), &bytes).unwrap();
    let err = cpuinfo::check(&dir, CPU_CAP_NONE).unwrap_err();
    assert!(
        matches!(
            err,
            CpuinfoError::BadMagic {
                found: 0x6140_4014,
                expected: 0x6140_4013,
                ..
            }
        ),
        "{err:?}"
    );

    let dir = scratch("truncated");
    std::fs::write(dir.join(IMAGE_NAME), &MAGICS[..6]).unwrap();
    assert!(matches!(
        cpuinfo::check(&dir, CPU_CAP_NONE),
        Err(CpuinfoError::Truncated { .. })
    ));

    let dir = scratch("short-entry");
    let mut bytes = MAGICS.to_vec();
    bytes.extend_from_slice(&100u32.to_le_bytes());
    bytes.extend_from_slice(&[0x08, 0x01]);
    std::fs::write(dir.join(IMAGE_NAME), &bytes).unwrap();
    assert!(matches!(
        cpuinfo::check(&dir, CPU_CAP_NONE),
        Err(CpuinfoError::Truncated { .. })
    ));

    let dir = scratch("no-x86");
    write_entry(&dir, &CpuinfoEntry::default());
    let err = cpuinfo::check(&dir, CPU_CAP_NONE).unwrap_err();
    assert!(
        matches!(err, CpuinfoError::X86Entries { count: 0 }),
        "{err:?}"
    );
}

#[test]
fn dump_into_missing_directory_fails() {
    let dir = scratch("gone").join("not-there");
    let err = cpuinfo::dump(&dir).unwrap_err();
    assert!(matches!(err, CpuinfoError::Write { .. }), "{err:?}");
    assert_eq!(err.cr_errno(), 0);
}

#[test]
fn cr_errno_is_enotsup_only_for_unsupported_arch() {
    assert_eq!(CpuinfoError::Unsupported.cr_errno(), 95);
    assert_eq!(CpuinfoError::ImageVendor { vendor: 7 }.cr_errno(), 0);
}
