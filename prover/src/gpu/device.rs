//! The MSM and NTT drivers, written once over [`Runtime`]: what each device
//! does for a call, with its resident bases and its cached NTT tables.

use super::budget::{Meter, Metered};
use super::layout::{self, DeviceCurve, FIELD_BYTES, G1, G2};
use super::runtime::{GpuError, KArg, Runtime};
use super::source::{NTT_MAX_LOG, SCAN_BLOCK, SCAN_THREADS};
use crate::backend::NttDirection;
use ark_bn254::{Fr, G1Projective, G2Projective};
use ark_ff::{FftField, Field, One, Zero};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Time per phase of the drivers, when `MEDROLLUP_GPU_PROFILE=1`: each phase
/// then waits for the device at its end (which costs a little), so that
/// its time is its own. For benchmarks and tuning.
fn profiling() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("MEDROLLUP_GPU_PROFILE").is_ok_and(|v| v == "1"))
}

static PROFILE: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

/// The phases timed so far: (phase and size, times run, total time).
pub(crate) fn profile() -> Vec<(String, u64, Duration)> {
    PROFILE.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, (n, t))| (k.clone(), *n, *t)).collect()
}

/// The start of a profiled phase of a problem of `size` elements.
struct Phase(Option<Instant>, usize);

impl Phase {
    fn start(size: usize) -> Self {
        Phase(profiling().then(Instant::now), size)
    }

    /// Ends the phase `name` (after the device has finished it) and starts the next.
    fn mark<R: Runtime>(&mut self, rt: &R, name: &'static str) -> Result<(), GpuError> {
        if let Some(t) = self.0 {
            rt.sync()?;
            let mut p = PROFILE.lock().unwrap_or_else(|p| p.into_inner());
            let key = format!("{name}, 2^{:.1}", (self.1.max(1) as f64).log2());
            let e = p.entry(key).or_default();
            e.0 += 1;
            e.1 += t.elapsed();
            self.0 = Some(Instant::now());
        }
        Ok(())
    }
}

/// Which curve a set of bases is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CurveId {
    G1,
    G2,
}

/// How an injected fault shows (for tests of what is above the devices:
/// each is indistinguishable there from a real one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every launch returns an error.
    Fails = 0,
    /// A launch panics (as cudarc does on some driver errors).
    Panics = 1,
    /// The copy of an in-place call's result over its input fails part-way
    /// ([`GpuError::OutputLost`]).
    LosesOutput = 2,
    /// That copy panics part-way.
    PanicsInCopy = 3,
    /// One launch runs short of resources ([`GpuError::Resources`]); the
    /// fault is then over.
    ShortOfResources = 4,
    /// Every launch runs short of resources.
    ShortOfResourcesAlways = 5,
    /// The device's context is lost, as a CUDA kernel's illegal address or
    /// trap leaves it: this launch and every later one on that context
    /// fails. Unlike [`Fault::Fails`] (a broken device), the fault is over
    /// once the device is opened afresh ([`DeviceOps::reopen`], which
    /// readmission does).
    LosesContext = 6,
}

/// A caught panic's message.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// One MSM over resident bases `id`, from base `offset` on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub id: u64,
    pub curve: CurveId,
    pub offset: usize,
}

/// An MSM's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MsmValue {
    G1(G1Projective),
    G2(G2Projective),
}

/// What a device does; object-safe, so devices of both runtimes sit side by side.
pub(crate) trait DeviceOps: Send {
    /// "opencl:0 NAME" or "cuda:0 NAME".
    fn label(&self) -> String;
    /// Makes bases resident under `id`; with `precompute`, also their
    /// multiples 2^(c·w)·P for every window w of the window size their
    /// length calls for, so that an MSM's windows share one set of buckets
    /// (ICICLE's precomputed bases: the window reduction runs once).
    fn load_bases(
        &mut self,
        id: u64,
        curve: CurveId,
        packed: &[u8],
        len: usize,
        precompute: bool,
    ) -> Result<(), GpuError>;
    /// Frees bases `id` (if resident).
    fn free_bases(&mut self, id: u64);
    /// Whether bases `id` are resident.
    fn holds(&self, id: u64) -> bool;
    /// The MSMs of `scalars` with each target's bases, sharing one sort of the
    /// scalars' digits.
    fn msm(&mut self, scalars: &[Fr], targets: &[Target]) -> Result<Vec<MsmValue>, GpuError>;
    /// An NTT in place. The in-place calls write their output only at the
    /// end, after the device has finished: an error leaves the input whole
    /// (the CPU can take over) unless it is [`GpuError::OutputLost`].
    fn ntt(&mut self, data: &mut [Fr], dir: NttDirection, coset: Option<Fr>) -> Result<(), GpuError>;
    /// One chain of the quotient, in place: coefficients of the evaluations
    /// `v`, then their evaluations on the coset (Fr's generator).
    fn coset_evals(&mut self, v: &mut [Fr]) -> Result<(), GpuError>;
    /// The rest of the quotient from the three chains' coset evaluations,
    /// into `a`.
    fn quotient_from_evals(&mut self, a: &mut [Fr], b: &[Fr], c: &[Fr]) -> Result<(), GpuError>;
    /// The whole quotient on this device, into `a`.
    fn quotient(&mut self, a: &mut [Fr], b: &[Fr], c: &[Fr]) -> Result<(), GpuError>;
    /// Frees the cached NTT and coset tables (made again when needed): what
    /// a device short of memory gives up first.
    fn drop_caches(&mut self);
    /// Opens the device afresh: a new context, queue and kernels, the old
    /// ones closed. After some faults the old context is lost for good
    /// (CUDA's sticky errors: every later call on it fails), so a device
    /// is reopened before it is tested for readmission. Every resident set
    /// and cached table is freed, and the old context closed, before the new
    /// one opens; on an error the device is left closed (every call fails).
    fn reopen(&mut self) -> Result<(), GpuError>;
    /// Loses the device's context for real (see [`Runtime::lose_context`]).
    fn lose_context(&mut self) -> Result<(), GpuError>;
    /// The driver's free and total memory of the device, where it says.
    fn driver_memory(&self) -> Option<(u64, u64)>;
    /// Makes the device fail as `fault` says after the next `launches`
    /// launches (a test's fault; `usize::MAX`: none).
    fn inject_fault(&self, launches: usize, fault: Fault);
    /// Makes every field-element result wrong from then on, with no error
    /// (a test's silent fault).
    fn inject_corruption(&self);
    /// The time of one forward NTT of 2^log_n elements already on the device
    /// (the median of `reps`, after a warm-up), copies excluded.
    fn time_resident_ntt(&mut self, log_n: u32, reps: usize) -> Result<Duration, GpuError>;
    /// The time of a copy of `bytes` to the device and back (medians of `reps`).
    fn time_copies(&mut self, bytes: usize, reps: usize) -> Result<(Duration, Duration), GpuError>;
}

/// Entries a segment (one thread) sums before its bucket needs another level.
pub(crate) const SEGMENT: u32 = 32;
/// Bucket runs per thread in the window reduction: short, so that the
/// reduction (a chain of additions per thread) runs wide.
const REDUCE_RUN: u32 = 4;
/// Accumulators one thread of the final device-side sum adds; the host adds
/// what is left (in parallel, in Jacobian coordinates, no inversions).
const SUM_GROUP: u32 = 16;
/// Threads of the one-dimensional kernels' work-groups, at most.
const GROUP: usize = 256;
/// Largest window.
const MAX_WINDOW: u32 = 20;
/// Bases a set may have, and points times windows a precomputed set may
/// have: a sorted entry holds a point's index (for precomputed bases,
/// window · n + index) below its sign bit.
const MAX_MSM: usize = 1 << 30;
/// The signed digits one MSM may sort: their count, and the positions the
/// kernels compute from it, are 32-bit (with room for a segment's end).
const MAX_SORTED: u64 = 1 << 31;

/// Whether an MSM of `n` points in windows of `c` bits has few enough
/// nonzero digits (at most one per point and window) for the kernels.
pub(crate) fn sorted_digits_fit(n: usize, c: u32) -> bool {
    n as u64 * u64::from(windows(c)) < MAX_SORTED
}

/// Window size for an MSM of `n` points: minimises windows * (n + 3 * 2^(c-1))
/// (one mixed addition per digit, about three per bucket to reduce), within
/// the memory the sorted digits take.
pub(crate) fn window_bits(n: usize) -> u32 {
    (4..=MAX_WINDOW)
        .min_by_key(|&c| windows(c) as usize * (n + 3 * (1usize << (c - 1))))
        .expect("non-empty range")
}

/// Windows of `c` bits covering a 254-bit scalar whose top window may carry.
pub(crate) fn windows(c: u32) -> u32 {
    254u32.div_ceil(c)
}

/// An upper bound on the device memory an MSM of up to `n` scalars over
/// bases of `curve` takes while it runs (bases excluded), with the windows'
/// buckets apart or `merged` (precomputed bases); the same arithmetic as
/// [`DeviceState::plan`] and [`DeviceState::msm_curve`], every buffer counted
/// as if all were live at once.
pub(crate) fn msm_working_bytes(n: usize, curve: CurveId, merged: bool) -> u64 {
    let n = n.max(1) as u64;
    let c = window_bits(n as usize);
    let (windows, h) = (u64::from(windows(c)), 1u64 << (c - 1));
    let buckets = if merged { h } else { windows * h };
    // Sorted entries: at most one per scalar and window.
    let entries = n * windows;
    // Segment levels: each has at most 1/SEGMENT of the previous one's
    // entries per bucket, so a bucket of `entries` needs ⌈log_32⌉ + 1.
    let levels = 1 + u64::from((64 - entries.leading_zeros()).div_ceil(SEGMENT.ilog2()));
    let xyzz = match curve {
        CurveId::G1 => G1::XYZZ_BYTES,
        CurveId::G2 => G2::XYZZ_BYTES,
    } as u64;
    // Scalars; counts, offsets, cursors and the scans' block sums; entries;
    // each level's segment counts and offsets.
    let sort = n * FIELD_BYTES as u64 + 4 * (4 * buckets + entries + 2 * levels * buckets + 2);
    // Two levels of segment sums at once, each at most a segment per
    // SEGMENT entries plus one per bucket; the window reduction's two.
    let sums = 2 * (entries / u64::from(SEGMENT) + buckets) * xyzz;
    let sets = if merged { 1 } else { windows };
    let reduce = 2 * sets * (h / u64::from(REDUCE_RUN)).max(1) * xyzz;
    sort + sums + reduce
}

/// The NTT and coset tables of a domain of `n` (kept once made): half a
/// domain of twiddles each way, the coset's powers and scaled inverse
/// powers, and a few constants.
pub(crate) fn tables_bytes(n: usize) -> u64 {
    3 * n.next_power_of_two() as u64 * FIELD_BYTES as u64 + 256
}

/// An upper bound on the device memory the quotient of a domain of `n`
/// takes: its three vectors, a scratch one, its tables and a few constants.
pub(crate) fn quotient_bytes(n: usize) -> u64 {
    4 * n.next_power_of_two() as u64 * FIELD_BYTES as u64 + tables_bytes(n) + 768
}

/// What a call over bases of `len` points may take beyond what stays
/// resident: an MSM over all of them (beside the tables a quotient of a
/// domain as large leaves behind), or that quotient.
pub(crate) fn call_bytes(len: usize, curve: CurveId, merged: bool) -> u64 {
    (msm_working_bytes(len, curve, merged) + tables_bytes(len)).max(quotient_bytes(len))
}

fn affine_bytes(curve: CurveId) -> usize {
    match curve {
        CurveId::G1 => G1::AFFINE_BYTES,
        CurveId::G2 => G2::AFFINE_BYTES,
    }
}

struct Level<B> {
    seg_off: B,
    seg_cnt: B,
    segments: u32,
}

/// The sorted digits of one scalar vector, shared by every MSM over it.
struct Plan<B> {
    n: usize,
    c: u32,
    windows: u32,
    /// The windows share one set of buckets (precomputed bases).
    merged: bool,
    buckets: u32,
    entries: B,
    off: B,
    cnt: B,
    levels: Vec<Level<B>>,
}

struct NttTables<B> {
    fwd: B,
    inv: B,
    n_inv: B,
}

struct CosetTables<B> {
    /// g^i.
    pow: B,
    /// n^-1 g^-i.
    inv_scaled: B,
}

struct Resident<B> {
    buf: B,
    curve: CurveId,
    len: usize,
    /// The window size the bases were precomputed for.
    precomputed: Option<u32>,
}

/// One device: its runtime, resident bases and cached tables.
pub(crate) struct DeviceState<R: Runtime> {
    rt: R,
    /// The memory its buffers take, against its budget.
    meter: Arc<Meter>,
    bases: HashMap<u64, Resident<R::Buf>>,
    ntt: HashMap<u32, NttTables<R::Buf>>,
    cosets: HashMap<(u32, [u64; 4]), CosetTables<R::Buf>>,
    /// Launches left before an injected fault (usize::MAX: none).
    fault_after: AtomicUsize,
    /// The injected fault's kind ([`Fault`] as a number).
    fault: AtomicU8,
    /// Field-element results come back wrong (an injected silent fault).
    corrupt: AtomicBool,
    /// Each kernel's work-group size for one-dimensional launches.
    groups: Mutex<HashMap<String, usize>>,
    /// Opens the runtime afresh (see [`DeviceOps::reopen`]).
    open: Box<dyn FnMut() -> Result<R, GpuError> + Send>,
}

impl<R: Runtime> DeviceState<Metered<R>> {
    /// A device whose every buffer counts against `meter`, running on `rt`;
    /// `open` opens its runtime afresh (see [`DeviceOps::reopen`]).
    pub(crate) fn new(
        rt: R,
        meter: Arc<Meter>,
        mut open: impl FnMut() -> Result<R, GpuError> + Send + 'static,
    ) -> Self {
        let metered = meter.clone();
        Self {
            rt: Metered::new(rt, meter.clone()),
            open: Box::new(move || open().map(|rt| Metered::new(rt, metered.clone()))),
            meter,
            bases: HashMap::new(),
            ntt: HashMap::new(),
            cosets: HashMap::new(),
            fault_after: AtomicUsize::new(usize::MAX),
            fault: AtomicU8::new(Fault::Fails as u8),
            corrupt: AtomicBool::new(false),
            groups: Mutex::new(HashMap::new()),
        }
    }
}

impl<R: Runtime> DeviceState<R> {
    /// The room the calls over the resident bases need (the largest of
    /// them), with the precomputed ones counted as plain if `all_plain`.
    fn reserve(&self, all_plain: bool) -> u64 {
        let call = |r: &Resident<R::Buf>| call_bytes(r.len, r.curve, r.precomputed.is_some() && !all_plain);
        self.bases.values().map(call).max().unwrap_or(0)
    }

    /// The memory the precomputed multiples of the resident bases take.
    fn precomputed_extra(&self) -> u64 {
        self.bases
            .values()
            .filter_map(|r| {
                r.precomputed.map(|c| ((windows(c) - 1) as usize * r.len * affine_bytes(r.curve)) as u64)
            })
            .sum()
    }

    /// `packed` with its multiples 2^(c·w)·P for every window w, on the device.
    fn precomputed(&self, curve: CurveId, packed: &[u8], len: usize, c: u32) -> Result<R::Buf, GpuError> {
        let sets = windows(c);
        let mut buf = self.rt.alloc(packed.len() * sets as usize)?;
        self.rt.upload(&mut buf, packed)?;
        let name = match curve {
            CurveId::G1 => "G1_precompute",
            CurveId::G2 => "G2_precompute",
        };
        self.launch(name, len, &[KArg::Buf(&buf), KArg::U32(len as u32), KArg::U32(c), KArg::U32(sets)])?;
        self.rt.sync()?;
        Ok(buf)
    }

    /// Gives up the precomputed multiples of the largest precomputed set:
    /// its points (the first window's multiples) stay, plain. If the device
    /// fails on the way the set is lost here: an MSM over it answers
    /// [`GpuError::NotResident`], goes to the CPU, and the backend sends no
    /// more work over that set to this device.
    fn demote_largest(&mut self) -> Result<(), GpuError> {
        let Some(id) = self
            .bases
            .iter()
            .filter(|(_, r)| r.precomputed.is_some())
            .max_by_key(|(_, r)| r.len * affine_bytes(r.curve))
            .map(|(&id, _)| id)
        else {
            return Err(GpuError::Unsupported("no precomputed bases to give up".into()));
        };
        let old = &self.bases[&id];
        let mut points = vec![0u8; old.len * affine_bytes(old.curve)];
        self.rt.download(&old.buf, &mut points)?;
        let old = self.bases.remove(&id).expect("found above");
        drop(old.buf);
        let mut buf = self.rt.alloc(points.len())?;
        self.rt.upload(&mut buf, &points)?;
        self.bases.insert(id, Resident { buf, precomputed: None, ..old });
        Ok(())
    }

    /// Launches `kernel` over `threads` threads (nothing for none).
    fn launch(&self, kernel: &str, threads: usize, args: &[KArg<'_, R::Buf>]) -> Result<(), GpuError> {
        let group = self.group(kernel)?;
        self.launch_groups(kernel, threads.div_ceil(group), group, args)
    }

    /// The work-group size of a one-dimensional launch of `kernel`:
    /// [`GROUP`], or less where the device allows less for it (a kernel
    /// heavy in registers, as the G2 ones, on some OpenCL devices).
    fn group(&self, kernel: &str) -> Result<usize, GpuError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&g) = groups.get(kernel) {
            return Ok(g);
        }
        let g = self.rt.max_group(kernel)?.clamp(1, GROUP);
        groups.insert(kernel.to_string(), g);
        Ok(g)
    }

    fn launch_groups(
        &self,
        kernel: &str,
        groups: usize,
        group: usize,
        args: &[KArg<'_, R::Buf>],
    ) -> Result<(), GpuError> {
        if groups == 0 {
            return Ok(());
        }
        const SHORT: u8 = Fault::ShortOfResources as u8;
        const SHORT_ALWAYS: u8 = Fault::ShortOfResourcesAlways as u8;
        let left = self.fault_after.load(Ordering::Relaxed);
        if left != usize::MAX {
            if left > 0 {
                self.fault_after.store(left - 1, Ordering::Relaxed);
            } else if self.fault.load(Ordering::Relaxed) == Fault::LosesContext as u8 {
                // Lost with this runtime: the one a reopening makes is whole.
                if let Some(lost) = self.rt.injected_loss() {
                    lost.store(true, Ordering::Relaxed);
                }
                self.fault_after.store(usize::MAX, Ordering::Relaxed);
                return Err(GpuError::Injected(format!("{} (its context is lost)", self.rt.label())));
            } else if self.fault.load(Ordering::Relaxed) == Fault::Fails as u8 {
                return Err(GpuError::Injected(self.rt.label().into()));
            } else if self.fault.load(Ordering::Relaxed) == Fault::Panics as u8 {
                panic!("{}: injected panic", self.rt.label());
            } else if let f @ (SHORT | SHORT_ALWAYS) = self.fault.load(Ordering::Relaxed) {
                if f == SHORT {
                    self.fault_after.store(usize::MAX, Ordering::Relaxed);
                }
                return Err(GpuError::Resources {
                    device: self.rt.label().into(),
                    op: format!("launching {kernel}"),
                    reason: "injected shortage".into(),
                });
            }
        }
        self.rt.launch(kernel, groups, group, args)
    }

    fn alloc_u32(&self, n: usize) -> Result<R::Buf, GpuError> {
        self.rt.alloc(4 * n)
    }

    fn read_u32(&self, buf: &R::Buf) -> Result<u32, GpuError> {
        let mut b = [0u8; 4];
        self.rt.download(buf, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn upload_fr(&self, v: &[Fr]) -> Result<R::Buf, GpuError> {
        let mut phase = Phase::start(v.len());
        let mut buf = self.rt.alloc(v.len() * FIELD_BYTES)?;
        self.rt.upload(&mut buf, layout::fr_bytes(v))?;
        phase.mark(&self.rt, "copy Fr to the device")?;
        Ok(buf)
    }

    /// Copies a finished result over `out` (an input of the call): first
    /// waits for the device, so that its errors come while `out` is whole;
    /// an error in the copy itself is [`GpuError::OutputLost`].
    fn finish_into(&self, buf: &R::Buf, out: &mut [Fr]) -> Result<(), GpuError> {
        self.rt.sync()?;
        let mut phase = Phase::start(out.len());
        let lost = |reason: String| GpuError::OutputLost { device: self.rt.label().to_string(), reason };
        // A panic in the copy (cudarc's, on some driver errors) loses the
        // input as surely as an error does; one anywhere else leaves it whole.
        let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let injected = self.fault.load(Ordering::Relaxed);
            if self.fault_after.load(Ordering::Relaxed) == 0
                && (injected == Fault::LosesOutput as u8 || injected == Fault::PanicsInCopy as u8)
            {
                // Part-way through the copy, as a real one would fail.
                let half = out.len() / 2;
                out[..half].fill(Fr::from(0u64));
                if injected == Fault::PanicsInCopy as u8 {
                    panic!("{}: injected panic in a copy", self.rt.label());
                }
                return Err(lost("injected fault".into()));
            }
            self.rt.download(buf, layout::fr_bytes_mut(out)).map_err(|e| lost(e.to_string()))
        }));
        copied.unwrap_or_else(|p| Err(lost(format!("panicked: {}", panic_message(p.as_ref())))))?;
        if self.corrupt.load(Ordering::Relaxed)
            && let Some(first) = out.first_mut()
        {
            *first += Fr::from(1u64);
        }
        phase.mark(&self.rt, "copy Fr from the device")
    }

    /// Exclusive prefix sums of `input[..n]` into `output`; returns the total.
    fn scan(&self, input: &R::Buf, output: &R::Buf, n: usize) -> Result<u32, GpuError> {
        let groups = n.div_ceil(SCAN_BLOCK).max(1);
        let sums = self.alloc_u32(groups)?;
        self.launch_groups(
            "scan_blocks",
            groups,
            SCAN_THREADS,
            &[KArg::Buf(input), KArg::Buf(output), KArg::Buf(&sums), KArg::U32(n as u32)],
        )?;
        if groups == 1 {
            return self.read_u32(&sums);
        }
        let offsets = self.alloc_u32(groups)?;
        let total = self.scan(&sums, &offsets, groups)?;
        self.launch_groups(
            "scan_add",
            groups,
            SCAN_THREADS,
            &[KArg::Buf(output), KArg::Buf(&offsets), KArg::U32(n as u32)],
        )?;
        Ok(total)
    }

    fn fill_u32(&self, buf: &R::Buf, value: u32, n: usize) -> Result<(), GpuError> {
        self.launch("fill_u32", n, &[KArg::Buf(buf), KArg::U32(value), KArg::U32(n as u32)])
    }

    /// Sorts the signed digits of `scalars` (windows of `c` bits) into
    /// buckets, one set per window or one for all (`merged`), and cuts the
    /// buckets into segments, level by level, until every bucket is one
    /// segment.
    fn plan(&self, scalars: &[Fr], c: u32, merged: bool) -> Result<Plan<R::Buf>, GpuError> {
        let n = scalars.len();
        let windows = windows(c);
        if !sorted_digits_fit(n, c) {
            return Err(GpuError::Unsupported(format!(
                "an MSM of {n} points in {windows} windows of {c} bits: more digits than the kernels' 32-bit positions take"
            )));
        }
        let h = 1usize << (c - 1);
        let buckets = if merged { h } else { windows as usize * h };
        let mut phase = Phase::start(n);
        let prepared = self.upload_fr(scalars)?;
        phase.mark(&self.rt, "msm 1 scalars upload")?;
        self.launch("msm_prepare", n, &[KArg::Buf(&prepared), KArg::Buf(&prepared), KArg::U32(n as u32)])?;
        let cnt = self.alloc_u32(buckets)?;
        self.fill_u32(&cnt, 0, buckets)?;
        let dims = [KArg::U32(n as u32), KArg::U32(c), KArg::U32(windows), KArg::U32(u32::from(merged))];
        self.launch(
            "msm_histogram",
            n,
            &[KArg::Buf(&prepared), dims[0], dims[1], dims[2], dims[3], KArg::Buf(&cnt)],
        )?;
        let off = self.alloc_u32(buckets)?;
        let total = self.scan(&cnt, &off, buckets)?;
        let cursor = self.alloc_u32(buckets)?;
        self.launch("copy_u32", buckets, &[KArg::Buf(&off), KArg::Buf(&cursor), KArg::U32(buckets as u32)])?;
        let entries = self.alloc_u32(total as usize)?;
        self.launch(
            "msm_scatter",
            n,
            &[
                KArg::Buf(&prepared),
                dims[0],
                dims[1],
                dims[2],
                dims[3],
                KArg::Buf(&cursor),
                KArg::Buf(&entries),
            ],
        )?;
        drop((prepared, cursor));
        phase.mark(&self.rt, "msm 2 digits and sort")?;

        let more = self.alloc_u32(1)?;
        let mut levels: Vec<Level<R::Buf>> = Vec::new();
        loop {
            let input = levels.last().map_or(&cnt, |l| &l.seg_cnt);
            let seg_cnt = self.alloc_u32(buckets)?;
            self.fill_u32(&more, 0, 1)?;
            self.launch(
                "msm_segments",
                buckets,
                &[
                    KArg::Buf(input),
                    KArg::Buf(&seg_cnt),
                    KArg::U32(buckets as u32),
                    KArg::U32(SEGMENT),
                    KArg::Buf(&more),
                ],
            )?;
            let seg_off = self.alloc_u32(buckets)?;
            let segments = self.scan(&seg_cnt, &seg_off, buckets)?;
            levels.push(Level { seg_off, seg_cnt, segments });
            if self.read_u32(&more)? == 0 {
                break;
            }
        }
        phase.mark(&self.rt, "msm 3 segments")?;
        Ok(Plan { n, c, windows, merged, buckets: buckets as u32, entries, off, cnt, levels })
    }

    /// The MSM of a plan's scalars with resident bases, from `offset` on.
    fn msm_curve<C: DeviceCurve>(
        &self,
        plan: &Plan<R::Buf>,
        bases: &Resident<R::Buf>,
        offset: usize,
    ) -> Result<C::Projective, GpuError> {
        let name = |k: &str| format!("{}_{k}", C::NAME);
        let mut phase = Phase::start(plan.n);
        let buckets = KArg::U32(plan.buckets);
        let first = &plan.levels[0];
        let mut sums = self.rt.alloc(first.segments as usize * C::XYZZ_BYTES)?;
        self.launch(
            &name("bucket_acc"),
            first.segments as usize,
            &[
                KArg::Buf(&bases.buf),
                KArg::U32(offset as u32),
                KArg::U32(if plan.merged { bases.len as u32 } else { 0 }),
                KArg::U32(plan.n as u32),
                KArg::Buf(&plan.entries),
                KArg::Buf(&plan.off),
                KArg::Buf(&plan.cnt),
                KArg::Buf(&first.seg_off),
                buckets,
                KArg::U32(first.segments),
                KArg::U32(SEGMENT),
                KArg::Buf(&sums),
            ],
        )?;
        for pair in plan.levels.windows(2) {
            let (prev, level) = (&pair[0], &pair[1]);
            let next = self.rt.alloc(level.segments as usize * C::XYZZ_BYTES)?;
            self.launch(
                &name("partial_acc"),
                level.segments as usize,
                &[
                    KArg::Buf(&sums),
                    KArg::Buf(&prev.seg_off),
                    KArg::Buf(&prev.seg_cnt),
                    KArg::Buf(&level.seg_off),
                    buckets,
                    KArg::U32(level.segments),
                    KArg::U32(SEGMENT),
                    KArg::Buf(&next),
                ],
            )?;
            sums = next;
        }
        phase
            .mark(&self.rt, if C::NAME == "G1" { "msm 4 G1 bucket sums" } else { "msm 4 G2 bucket sums" })?;
        let last = plan.levels.last().expect("at least one level");
        let h = 1u32 << (plan.c - 1);
        let sets = if plan.merged { 1 } else { plan.windows };
        let mut per_window = (h / REDUCE_RUN).max(1);
        let threads = sets * per_window;
        let mut acc = self.rt.alloc(threads as usize * C::XYZZ_BYTES)?;
        self.launch(
            &name("window_reduce"),
            threads as usize,
            &[
                KArg::Buf(&sums),
                KArg::Buf(&last.seg_off),
                KArg::Buf(&last.seg_cnt),
                KArg::U32(h),
                KArg::U32(per_window),
                KArg::U32(threads),
                KArg::Buf(&acc),
            ],
        )?;
        if per_window > 1 {
            let g = per_window.min(SUM_GROUP);
            let count = sets * per_window;
            let next = self.rt.alloc((count / g) as usize * C::XYZZ_BYTES)?;
            self.launch(
                &name("sum_groups"),
                (count / g) as usize,
                &[KArg::Buf(&acc), KArg::U32(count), KArg::U32(g), KArg::Buf(&next)],
            )?;
            acc = next;
            per_window /= g;
        }
        phase
            .mark(&self.rt, if C::NAME == "G1" { "msm 5 G1 window sums" } else { "msm 5 G2 window sums" })?;
        let mut bytes = vec![0u8; (sets * per_window) as usize * C::XYZZ_BYTES];
        self.rt.download(&acc, &mut bytes)?;
        // Each window's partial sums, added on the host, then the windows by
        // Horner's rule (doublings between them).
        let window_sums: Vec<C::Projective> = bytes
            .par_chunks(per_window as usize * C::XYZZ_BYTES)
            .map(|w| {
                w.chunks_exact(C::XYZZ_BYTES).map(C::from_xyzz).fold(C::Projective::zero(), |a, p| a + p)
            })
            .collect();
        Ok(window_sums
            .iter()
            .rev()
            .fold(C::Projective::zero(), |acc, s| C::double_k(acc, plan.c as usize) + *s))
    }

    fn ntt_tables(&mut self, log_n: u32) -> Result<(), GpuError> {
        if self.ntt.contains_key(&log_n) {
            return Ok(());
        }
        let n = 1usize << log_n;
        let omega = Fr::get_root_of_unity(n as u64).expect("size checked against the two-adicity");
        let powers = |base: Fr, count: usize| -> Result<R::Buf, GpuError> {
            let out = self.rt.alloc(count * FIELD_BYTES)?;
            let b = self.upload_fr(&[base])?;
            self.launch(
                "fr_powers",
                count.div_ceil(32),
                &[KArg::Buf(&out), KArg::Buf(&b), KArg::U32(count as u32)],
            )?;
            Ok(out)
        };
        let half = (n / 2).max(1);
        let fwd = powers(omega, half)?;
        let inv = powers(omega.inverse().expect("a root of unity is invertible"), half)?;
        let n_inv = self.upload_fr(&[Fr::from(n as u64).inverse().expect("n < r")])?;
        self.ntt.insert(log_n, NttTables { fwd, inv, n_inv });
        Ok(())
    }

    fn coset_tables(&mut self, log_n: u32, g: Fr) -> Result<(u32, [u64; 4]), GpuError> {
        let key = (log_n, g.0.0);
        if self.cosets.contains_key(&key) {
            return Ok(key);
        }
        let n = 1usize << log_n;
        let g_inv = g.inverse().expect("a coset generator is not zero");
        let pow = self.rt.alloc(n * FIELD_BYTES)?;
        let gb = self.upload_fr(&[g])?;
        self.launch("fr_powers", n.div_ceil(32), &[KArg::Buf(&pow), KArg::Buf(&gb), KArg::U32(n as u32)])?;
        let inv_scaled = self.rt.alloc(n * FIELD_BYTES)?;
        let gib = self.upload_fr(&[g_inv])?;
        self.launch(
            "fr_powers",
            n.div_ceil(32),
            &[KArg::Buf(&inv_scaled), KArg::Buf(&gib), KArg::U32(n as u32)],
        )?;
        let n_inv = self.upload_fr(&[Fr::from(n as u64).inverse().expect("n < r")])?;
        self.launch("fr_mul_const", n, &[KArg::Buf(&inv_scaled), KArg::Buf(&n_inv), KArg::U32(n as u32)])?;
        self.cosets.insert(key, CosetTables { pow, inv_scaled });
        Ok(key)
    }

    /// The stages of a transform, split into passes of at most the device's
    /// work-group allowance, as even as possible.
    fn passes(&self, log_n: u32) -> Result<Vec<u32>, GpuError> {
        let group = self.rt.max_group("ntt_pass")?;
        let max_k = (group.ilog2() + 1).clamp(1, NTT_MAX_LOG);
        let count = log_n.div_ceil(max_k);
        Ok((0..count).map(|i| log_n / count + u32::from(i < log_n % count)).collect())
    }

    /// An NTT of `data` (2^log_n elements on the device); `scratch` is as
    /// large; the result is in `data`.
    fn ntt_buf(
        &mut self,
        data: &mut R::Buf,
        scratch: &mut R::Buf,
        log_n: u32,
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), GpuError> {
        if log_n == 0 {
            return Ok(()); // one element: every transform is the identity
        }
        self.ntt_tables(log_n)?;
        let coset_key = coset.map(|g| self.coset_tables(log_n, g)).transpose()?;
        let n = 1u32 << log_n;
        let mut phase = Phase::start(n as usize);
        let tables = &self.ntt[&log_n];
        let coset = coset_key.map(|k| &self.cosets[&k]);
        if let (NttDirection::Forward, Some(t)) = (dir, coset) {
            self.launch("fr_mul_table", n as usize, &[KArg::Buf(data), KArg::Buf(&t.pow), KArg::U32(n)])?;
        }
        let tw = if dir == NttDirection::Forward { &tables.fwd } else { &tables.inv };
        let mut s0 = 0;
        for k in self.passes(log_n)? {
            let src: &R::Buf = if s0 == 0 { data } else { scratch };
            self.launch_groups(
                "ntt_pass",
                (n >> k) as usize,
                1 << (k - 1),
                &[
                    KArg::Buf(src),
                    KArg::Buf(scratch),
                    KArg::Buf(tw),
                    KArg::U32(log_n),
                    KArg::U32(s0),
                    KArg::U32(k),
                    KArg::U32(u32::from(s0 == 0)),
                ],
            )?;
            s0 += k;
        }
        std::mem::swap(data, scratch);
        phase.mark(&self.rt, "ntt passes (and coset scaling)")?;
        if dir == NttDirection::Inverse {
            match coset {
                Some(t) => self.launch(
                    "fr_mul_table",
                    n as usize,
                    &[KArg::Buf(data), KArg::Buf(&t.inv_scaled), KArg::U32(n)],
                )?,
                None => self.launch(
                    "fr_mul_const",
                    n as usize,
                    &[KArg::Buf(data), KArg::Buf(&tables.n_inv), KArg::U32(n)],
                )?,
            }
        }
        Ok(())
    }

    fn log_size(n: usize) -> Result<u32, GpuError> {
        if !n.is_power_of_two() || n > 1 << Fr::TWO_ADICITY.min(30) {
            return Err(GpuError::Unsupported(format!("an NTT of {n} elements")));
        }
        Ok(n.trailing_zeros())
    }

    fn pointwise_and_interpolate(
        &mut self,
        a: &mut R::Buf,
        b: &R::Buf,
        c: &R::Buf,
        scratch: &mut R::Buf,
        log_n: u32,
    ) -> Result<(), GpuError> {
        let n = 1u64 << log_n;
        let g = Fr::GENERATOR;
        let z_inv = (g.pow([n]) - Fr::one()).inverse().expect("g is not an n-th root of unity");
        let zb = self.upload_fr(&[z_inv])?;
        self.launch(
            "qap_pointwise",
            n as usize,
            &[KArg::Buf(a), KArg::Buf(b), KArg::Buf(c), KArg::Buf(&zb), KArg::U32(n as u32)],
        )?;
        self.ntt_buf(a, scratch, log_n, NttDirection::Inverse, Some(g))
    }
}

impl<R: Runtime> DeviceOps for DeviceState<R> {
    fn label(&self) -> String {
        self.rt.label().to_string()
    }

    fn load_bases(
        &mut self,
        id: u64,
        curve: CurveId,
        packed: &[u8],
        len: usize,
        precompute: bool,
    ) -> Result<(), GpuError> {
        let c = window_bits(len);
        if len >= MAX_MSM || !sorted_digits_fit(len, c) {
            return Err(GpuError::Unsupported(format!(
                "{len} bases: the kernels take sets of fewer than {} points",
                MAX_SORTED / u64::from(windows(c))
            )));
        }
        let sets = windows(c) as usize;
        let plain = packed.len() as u64;
        // Resident only with room left for the largest call over any
        // resident set, this one included (calls on a device run one at a
        // time). Room is made first by freeing the cached NTT tables, then by
        // giving up other sets' precomputed multiples, where that suffices.
        let room = |state: &Self, merged: bool, all_plain: bool| {
            state.reserve(all_plain).max(call_bytes(len, curve, merged))
        };
        if plain + room(self, false, false) > self.meter.free() {
            self.drop_caches();
        }
        if plain + room(self, false, true) > self.meter.free() + self.precomputed_extra() {
            return Err(GpuError::OutOfMemory {
                device: self.rt.label().to_string(),
                detail: format!(
                    "{plain} bytes of bases wanted, {} of its budget of {} bytes free, and the calls over its bases need up to {} more while they run",
                    self.meter.free(),
                    self.meter.budget(),
                    room(self, false, true)
                ),
            });
        }
        while plain + room(self, false, false) > self.meter.free() {
            self.demote_largest()?;
        }
        // Precomputed (sets times the bases) where the room remains. Out of
        // memory or resources on the way (OpenCL may report a shortage at the
        // copy or the launch) leaves them plain; a failed call is the
        // device's fault.
        if precompute
            && len > 0
            && len * sets < MAX_MSM
            && plain * sets as u64 + room(self, true, false) <= self.meter.free()
        {
            match self.precomputed(curve, packed, len, c) {
                Ok(buf) => {
                    self.bases.insert(id, Resident { buf, curve, len, precomputed: Some(c) });
                    return Ok(());
                }
                Err(GpuError::OutOfMemory { .. } | GpuError::Resources { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut buf = self.rt.alloc(packed.len())?;
        self.rt.upload(&mut buf, packed)?;
        self.bases.insert(id, Resident { buf, curve, len, precomputed: None });
        Ok(())
    }

    fn free_bases(&mut self, id: u64) {
        self.bases.remove(&id);
    }

    fn holds(&self, id: u64) -> bool {
        self.bases.contains_key(&id)
    }

    fn msm(&mut self, scalars: &[Fr], targets: &[Target]) -> Result<Vec<MsmValue>, GpuError> {
        for t in targets {
            let r = self.bases.get(&t.id).ok_or_else(|| {
                GpuError::NotResident(format!("{}: bases {} are not resident", self.rt.label(), t.id))
            })?;
            if r.curve != t.curve || t.offset + scalars.len() > r.len {
                return Err(GpuError::Unsupported("bases and scalars do not match".into()));
            }
        }
        if scalars.is_empty() {
            return Ok(targets
                .iter()
                .map(|t| match t.curve {
                    CurveId::G1 => MsmValue::G1(G1Projective::default()),
                    CurveId::G2 => MsmValue::G2(G2Projective::default()),
                })
                .collect());
        }
        // One plan (one sort of the digits) per window layout: the classic one
        // sized for these scalars, or each precomputed set's own.
        let mut out = vec![None; targets.len()];
        let mut layouts: Vec<Option<u32>> = targets.iter().map(|t| self.bases[&t.id].precomputed).collect();
        layouts.sort();
        layouts.dedup();
        for layout in layouts {
            let plan = match layout {
                Some(c) => self.plan(scalars, c, true)?,
                None => self.plan(scalars, window_bits(scalars.len()), false)?,
            };
            for (k, t) in targets.iter().enumerate() {
                let bases = &self.bases[&t.id];
                if bases.precomputed != layout {
                    continue;
                }
                out[k] = Some(match t.curve {
                    CurveId::G1 => MsmValue::G1(self.msm_curve::<G1>(&plan, bases, t.offset)?),
                    CurveId::G2 => MsmValue::G2(self.msm_curve::<G2>(&plan, bases, t.offset)?),
                });
            }
        }
        Ok(out.into_iter().map(|v| v.expect("every target has a layout")).collect())
    }

    fn ntt(&mut self, data: &mut [Fr], dir: NttDirection, coset: Option<Fr>) -> Result<(), GpuError> {
        let log_n = Self::log_size(data.len())?;
        let mut buf = self.upload_fr(data)?;
        let mut scratch = self.rt.alloc(data.len() * FIELD_BYTES)?;
        self.ntt_buf(&mut buf, &mut scratch, log_n, dir, coset)?;
        self.finish_into(&buf, data)
    }

    fn coset_evals(&mut self, v: &mut [Fr]) -> Result<(), GpuError> {
        let log_n = Self::log_size(v.len())?;
        let mut buf = self.upload_fr(v)?;
        let mut scratch = self.rt.alloc(v.len() * FIELD_BYTES)?;
        self.ntt_buf(&mut buf, &mut scratch, log_n, NttDirection::Inverse, None)?;
        self.ntt_buf(&mut buf, &mut scratch, log_n, NttDirection::Forward, Some(Fr::GENERATOR))?;
        self.finish_into(&buf, v)
    }

    fn quotient_from_evals(&mut self, a: &mut [Fr], b: &[Fr], c: &[Fr]) -> Result<(), GpuError> {
        let log_n = Self::log_size(a.len())?;
        let mut ab = self.upload_fr(a)?;
        let bb = self.upload_fr(b)?;
        let cb = self.upload_fr(c)?;
        let mut scratch = self.rt.alloc(a.len() * FIELD_BYTES)?;
        self.pointwise_and_interpolate(&mut ab, &bb, &cb, &mut scratch, log_n)?;
        self.finish_into(&ab, a)
    }

    fn quotient(&mut self, a: &mut [Fr], b: &[Fr], c: &[Fr]) -> Result<(), GpuError> {
        let log_n = Self::log_size(a.len())?;
        let mut scratch = self.rt.alloc(a.len() * FIELD_BYTES)?;
        let mut bufs = Vec::with_capacity(3);
        for v in [&*a, b, c] {
            let mut buf = self.upload_fr(v)?;
            self.ntt_buf(&mut buf, &mut scratch, log_n, NttDirection::Inverse, None)?;
            self.ntt_buf(&mut buf, &mut scratch, log_n, NttDirection::Forward, Some(Fr::GENERATOR))?;
            bufs.push(buf);
        }
        let (cb, bb, mut ab) = (bufs.pop().expect("c"), bufs.pop().expect("b"), bufs.pop().expect("a"));
        self.pointwise_and_interpolate(&mut ab, &bb, &cb, &mut scratch, log_n)?;
        self.finish_into(&ab, a)
    }

    fn drop_caches(&mut self) {
        self.ntt.clear();
        self.cosets.clear();
    }

    fn reopen(&mut self) -> Result<(), GpuError> {
        // Its buffers first, while their context is open; then the context,
        // before the new one opens: room for it, and a GPU in CUDA's
        // exclusive-process mode takes one context of a process at a time.
        self.bases.clear();
        self.drop_caches();
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.rt.close();
        self.rt = (self.open)()?;
        self.rt.trim();
        Ok(())
    }

    fn lose_context(&mut self) -> Result<(), GpuError> {
        self.rt.lose_context()
    }

    fn driver_memory(&self) -> Option<(u64, u64)> {
        self.rt.driver_memory()
    }

    fn inject_fault(&self, launches: usize, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
        self.fault_after.store(launches, Ordering::Relaxed);
    }

    fn inject_corruption(&self) {
        self.corrupt.store(true, Ordering::Relaxed);
    }

    fn time_copies(&mut self, bytes: usize, reps: usize) -> Result<(Duration, Duration), GpuError> {
        let host: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let mut back = vec![0u8; bytes];
        back.fill(1); // touched: the timing is the copy's, not the page faults'.
        let mut buf = self.rt.alloc(bytes)?;
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) + 1 {
            self.rt.sync()?;
            let t = Instant::now();
            self.rt.upload(&mut buf, &host)?;
            self.rt.sync()?;
            up.push(t.elapsed());
            let t = Instant::now();
            self.rt.download(&buf, &mut back)?;
            down.push(t.elapsed());
        }
        if back != host {
            return Err(GpuError::Unsupported("the copy came back different".into()));
        }
        let median = |mut v: Vec<Duration>| {
            v.remove(0); // the warm-up
            v.sort();
            v[v.len() / 2]
        };
        Ok((median(up), median(down)))
    }

    fn time_resident_ntt(&mut self, log_n: u32, reps: usize) -> Result<Duration, GpuError> {
        let n = 1usize << log_n;
        let v: Vec<Fr> = (0..n as u64).map(|i| Fr::from(i * i + 7)).collect();
        let mut buf = self.upload_fr(&v)?;
        let mut scratch = self.rt.alloc(n * FIELD_BYTES)?;
        self.ntt_buf(&mut buf, &mut scratch, log_n, NttDirection::Forward, None)?;
        self.rt.sync()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            self.ntt_buf(&mut buf, &mut scratch, log_n, NttDirection::Forward, None)?;
            self.rt.sync()?;
            times.push(t.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    }
}
