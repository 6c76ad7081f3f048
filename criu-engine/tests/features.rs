//! FEATURE_CHECK answers.

use criu_engine::features::{self, answer};
use criu_engine::kerndat::KernelFeatures;
use criu_proto::rpc::CriuFeatures;

fn requests() -> Vec<CriuFeatures> {
    let opts = [None, Some(false), Some(true)];
    let mut v = Vec::new();
    for mem_track in opts {
        for lazy_pages in opts {
            for pidfd_store in opts {
                v.push(CriuFeatures {
                    mem_track,
                    lazy_pages,
                    pidfd_store,
                });
            }
        }
    }
    v
}

#[test]
fn answer_matrix() {
    let here = KernelFeatures::probe();
    for kf in [here, KernelFeatures::default()] {
        for req in requests() {
            let got = answer(&req, &kf);
            assert_eq!(
                got,
                CriuFeatures {
                    mem_track: Some(req.mem_track == Some(true) && features::mem_track(&kf)),
                    lazy_pages: Some(req.lazy_pages == Some(true) && features::lazy_pages(&kf)),
                    pidfd_store: Some(req.pidfd_store == Some(true) && features::pidfd_store(&kf)),
                },
                "request {req:?}"
            );
        }
    }
}

#[test]
fn memory_tracking_answers_true_here() {
    let kf = KernelFeatures::probe();
    // The kernel side is there: uffd-wp async + PAGEMAP_SCAN, uffd events, pidfds.
    assert!(features::kernel_can_track_memory(&kf));
    assert!(kf.userfaultfd && kf.uffd_lazy_events);
    assert!(kf.pidfd_open && kf.pidfd_getfd);
    let all = CriuFeatures {
        mem_track: Some(true),
        lazy_pages: Some(true),
        pidfd_store: Some(true),
    };
    assert_eq!(
        answer(&all, &kf),
        CriuFeatures {
            mem_track: Some(true),
            lazy_pages: Some(features::engine_supports_lazy_pages()),
            pidfd_store: Some(features::engine_supports_pidfd_store()),
        }
    );
    // Asked as false, or on a kernel without the interfaces: false.
    let none = CriuFeatures {
        mem_track: Some(false),
        ..all
    };
    assert_eq!(answer(&none, &kf).mem_track, Some(false));
    assert_eq!(
        answer(&all, &KernelFeatures::default()).mem_track,
        Some(false)
    );
}

#[test]
fn tracking_needs_uffd_wp_async_and_pagemap_scan() {
    // The engine does not track with soft-dirty bits.
    let soft_dirty_only = KernelFeatures {
        soft_dirty: true,
        ..KernelFeatures::default()
    };
    assert!(!features::kernel_can_track_memory(&soft_dirty_only));
    let uffd_only = KernelFeatures {
        userfaultfd: true,
        uffd_wp_async: true,
        ..KernelFeatures::default()
    };
    assert!(
        !features::kernel_can_track_memory(&uffd_only),
        "needs PAGEMAP_SCAN too"
    );
    let both = KernelFeatures {
        pagemap_scan: true,
        ..uffd_only
    };
    assert!(features::kernel_can_track_memory(&both));
}
