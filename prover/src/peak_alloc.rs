//! A global allocator wrapper that counts live heap bytes and their peak, for
//! the benchmark harness's memory column (and for workers that report memory).
//! Register it with `#[global_allocator] static A: PeakAlloc = PeakAlloc;`.
#![allow(unsafe_code)] // a GlobalAlloc is unsafe by definition; this one only adds counters

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Counts through the system allocator.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeakAlloc;

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // Forwarded, not left to the default (alloc, then a memset on this
        // thread), so that fresh pages stay untouched as they would without
        // the counter.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // Forwarded (the system may grow in place or remap, without a copy).
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            if new_size >= l.size() {
                let now = LIVE.fetch_add(new_size - l.size(), Relaxed) + (new_size - l.size());
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new_size, Relaxed);
            }
        }
        q
    }
}

/// Starts a measurement: the peak becomes the current live size, which is returned.
pub fn reset_peak() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    live
}

/// Peak live bytes since the last [`reset_peak`], above `base`.
pub fn peak_since(base: usize) -> usize {
    PEAK.load(Relaxed).saturating_sub(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_counted() {
        // Only this test uses the counters in this binary (the allocator is
        // called directly, not registered).
        let base = reset_peak();
        let l = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: non-zero sizes; each pointer is freed with its current layout.
        unsafe {
            let p = PeakAlloc.alloc_zeroed(l);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, l.size()).iter().all(|&b| b == 0));
            assert_eq!(LIVE.load(Relaxed), base + (1 << 20));
            let q = PeakAlloc.realloc(p, l, 3 << 20);
            assert_eq!(LIVE.load(Relaxed), base + (3 << 20));
            let l3 = Layout::from_size_align(3 << 20, 8).unwrap();
            let r = PeakAlloc.realloc(q, l3, 1 << 10);
            assert_eq!(LIVE.load(Relaxed), base + (1 << 10));
            PeakAlloc.dealloc(r, Layout::from_size_align(1 << 10, 8).unwrap());
        }
        assert_eq!(LIVE.load(Relaxed), base);
        assert_eq!(peak_since(base), 3 << 20);
    }
}
