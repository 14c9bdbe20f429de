//! Large buffers of field elements.
//!
//! A proof fills several vectors of a million elements or more (the
//! constraints' values, the quotient's evaluations). `vec![Fr::zero(); n]`
//! writes every zero on one thread, so the kernel faults the pages in and
//! clears them there, 4 KiB at a time. [`zeros`] asks the allocator for zeroed
//! memory instead (fresh pages need no writing), and on Linux lets the kernel
//! back it with transparent huge pages, so the first writes, made in parallel
//! by whoever fills the vector, fault 2 MiB at a time.

#![allow(unsafe_code)] // a zeroed allocation taken as a Vec, and madvise

use ark_bn254::Fr;
use ark_ff::Zero;
use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};

/// Below this many bytes a buffer is left to the allocator's usual ways.
const HUGE_FROM: usize = 4 << 20;

/// `len` zeros.
pub fn zeros(len: usize) -> Vec<Fr> {
    let layout = Layout::array::<Fr>(len).expect("a buffer within the address space");
    if layout.size() < HUGE_FROM {
        return vec![Fr::zero(); len];
    }
    // SAFETY: the layout has a non-zero size; zeroed memory is `len` valid
    // elements, since zero's Montgomery form is the all-zero bit pattern
    // (tested below); the pointer and layout are the global allocator's and
    // `Vec<Fr>`'s own, as `from_raw_parts` requires.
    unsafe {
        let ptr = alloc_zeroed(layout);
        if ptr.is_null() {
            handle_alloc_error(layout);
        }
        advise_huge_pages(ptr, layout.size());
        Vec::from_raw_parts(ptr.cast::<Fr>(), len, len)
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `[ptr, ptr + size)`
/// with huge pages (a hint: refusals are ignored).
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, size: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + size) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside one live allocation; MADV_HUGEPAGE
        // changes how pages are backed, never their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: *mut u8, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::UniformRand;

    #[test]
    fn zero_is_all_zero_bits() {
        assert_eq!(Fr::zero().0.0, [0u64; 4]);
    }

    #[test]
    fn zeros_are_zeros_and_writable_at_every_size() {
        let mut rng = ark_std::test_rng();
        for len in [0, 1, 1000, HUGE_FROM / 32 - 1, HUGE_FROM / 32, (9 << 20) / 32 + 5] {
            let mut v = zeros(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(Zero::is_zero), "len {len}");
            if let Some(last) = v.last_mut() {
                *last = Fr::rand(&mut rng);
            }
            v.push(Fr::from(7u64));
            assert_eq!(v[len], Fr::from(7u64));
        }
    }
}
