//! Large buffers of field elements.
//!
//! A proof fills several vectors of a million elements or more (the
//! constraints' values, the quotient's evaluations). `vec![Fr::zero(); n]`
//! writes every zero on one thread, so the kernel faults the pages in and
//! clears them there, 4 KiB at a time. [`zeros`] lets the kernel back the
//! buffer with transparent huge pages (on Linux) and writes the zeros in
//! parallel, so the faults are taken 2 MiB at a time, by all threads. It does
//! not rely on `calloc` handing out fresh pages: glibc reuses freed heap
//! memory below its (adaptive) mmap threshold, and a counting allocator may
//! not forward zeroed allocations.

#![allow(unsafe_code)] // `set_len` after writing every element, and madvise

use ark_bn254::Fr;
use ark_ff::Zero;
use rayon::prelude::*;

/// Below this many bytes a buffer is left to the allocator's usual ways.
const HUGE_FROM: usize = 4 << 20;

/// `len` zeros.
pub fn zeros(len: usize) -> Vec<Fr> {
    let bytes = len.checked_mul(std::mem::size_of::<Fr>()).expect("a buffer within the address space");
    if bytes < HUGE_FROM {
        return vec![Fr::zero(); len];
    }
    let mut v: Vec<Fr> = Vec::with_capacity(len);
    advise_huge_pages(v.as_mut_ptr().cast(), bytes);
    v.spare_capacity_mut().par_chunks_mut(1 << 14).for_each(|chunk| {
        for x in chunk {
            x.write(Fr::zero());
        }
    });
    // SAFETY: all of the spare capacity, at least `len` elements, was written above.
    unsafe { v.set_len(len) };
    v
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
