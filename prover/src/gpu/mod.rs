//! The GPU backend: our own BN254 MSM and NTT kernels, from one source for
//! CUDA (NVRTC at run time, through cudarc) and OpenCL (opencl3; POCL runs
//! them on the CPU in CI), sharded across every usable device, with the CPU
//! backend as the fallback.
//!
//! The model is ICICLE's design: a device-agnostic front end ([`GpuBackend`],
//! which implements the engine's [`MsmBackend`] and [`NttBackend`]), runtimes
//! chosen at run time ([`GpuConfig`]), the CPU backend as the reference
//! device, and bases that stay resident on every device.
//!
//! - A device is admitted only after a known-answer test against the CPU
//!   backend (G1 and G2 MSMs with infinity, repeated points and 0/±1
//!   scalars; forward, inverse and coset NTTs).
//! - [`MsmBackend::msm_batch_unchecked`] schedules a proof's MSMs across the
//!   devices, largest first (longest-processing-time); MSMs over the same
//!   scalars share one sort of their digits when they land on one device;
//!   when devices outnumber MSMs, the largest are split by ranges of points.
//! - The quotient's three NTT chains run on up to three devices, the rest of
//!   the quotient on the first.
//! - A device that fails is taken out of service, and its unfinished work is
//!   finished on the CPU; the proof goes on. Per-device counters
//!   ([`GpuBackend::report`]) feed the worker's metrics.

mod budget;
mod cuda;
mod device;
mod layout;
mod opencl;
mod runtime;
pub mod source;

pub use cuda::{cache_file, compile_kernels, default_cache_dir, nvrtc_present, resource_report};
pub use device::Fault;
pub use runtime::GpuError;

use crate::backend::{BackendError, MsmBackend, MsmBatch, NttBackend, NttDirection};
use crate::cpu;
use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::CurveGroup;
use ark_ff::{FftField, UniformRand, Zero};
use budget::Meter;
use device::{CurveId, DeviceOps, DeviceState, MsmValue, Target};
use layout::DeviceCurve;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Which runtimes to look for devices with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtimes {
    /// CUDA devices if there are any, else OpenCL GPUs.
    Auto,
    /// CUDA only.
    Cuda,
    /// OpenCL only.
    OpenCl,
    /// No device: everything on the CPU.
    None,
}

impl std::str::FromStr for Runtimes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda),
            "opencl" => Ok(Self::OpenCl),
            "none" | "cpu" => Ok(Self::None),
            _ => Err(format!("unknown device runtime {s:?}: use auto, cuda, opencl or none")),
        }
    }
}

/// How to find and use devices.
#[derive(Debug, Clone)]
pub struct GpuConfig {
    /// Which runtimes.
    pub runtimes: Runtimes,
    /// Also use OpenCL devices that are CPUs (POCL): slower than the CPU
    /// backend, but how CI executes the kernels.
    pub opencl_cpu: bool,
    /// Logical devices made of each physical one (at least 1): sharding can
    /// then be exercised on a machine with one device. Each has a context of
    /// its own: a CUDA GPU in exclusive-process mode takes only the first.
    pub logical_per_device: usize,
    /// At most this many devices.
    pub max_devices: usize,
    /// The portable arithmetic on CUDA instead of the PTX carry chains
    /// (default: `MEDROLLUP_CUDA_PORTABLE=1`).
    pub cuda_portable: bool,
    /// Where compiled kernels are cached (`None`: not cached).
    pub cache_dir: Option<PathBuf>,
    /// Bases sets at least this long are stored with their multiples for
    /// every window (memory: the window count times the bases) so that an
    /// MSM reduces one set of buckets instead of one per window.
    pub precompute_min: usize,
    /// At most this many bytes on each physical device (and at most its
    /// memory), split evenly among its logical copies (`None`: its memory
    /// less a tenth, and at least 512 MiB less). Bases that would leave too
    /// little for the calls over them stay on the host, and their MSMs run
    /// on another device that holds them, or on the CPU.
    pub memory_limit: Option<u64>,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            runtimes: Runtimes::Auto,
            opencl_cpu: false,
            logical_per_device: 1,
            max_devices: usize::MAX,
            cuda_portable: std::env::var("MEDROLLUP_CUDA_PORTABLE").is_ok_and(|v| v == "1"),
            cache_dir: default_cache_dir(),
            precompute_min: 1 << 16,
            memory_limit: None,
        }
    }
}

/// A memory size: bytes, or a number with a binary unit (`512MiB`, `8GiB`,
/// `8G`, `1.5TiB`).
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_a_size = || format!("{text:?} is not a memory size (such as 8GiB or 512MiB)");
    if number.is_empty() {
        return Err(not_a_size());
    }
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use bytes, or KiB, MiB, GiB or TiB, as in 8GiB)"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| not_a_size())?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// The smallest device memory budget taken: below it a device could not
/// hold a proving key's bases and the calls over them, and would only be
/// refused at admission.
pub const MIN_DEVICE_MEMORY: u64 = 64 << 20;

/// A device memory budget ([`parse_memory_size`]), at least
/// [`MIN_DEVICE_MEMORY`].
pub fn parse_device_memory(text: &str) -> Result<u64, String> {
    let bytes = parse_memory_size(text)?;
    if bytes < MIN_DEVICE_MEMORY {
        return Err(format!(
            "{text:?} is less than 64MiB: too little for a device to hold a proving key's bases and run its calls"
        ));
    }
    Ok(bytes)
}

impl GpuConfig {
    /// OpenCL devices of every kind, CPUs (POCL) included: what CI runs.
    pub fn opencl_any() -> Self {
        Self { runtimes: Runtimes::OpenCl, opencl_cpu: true, ..Self::default() }
    }
}

#[derive(Debug, Default)]
struct Counters {
    msm_calls: AtomicU64,
    msm_points: AtomicU64,
    ntt_calls: AtomicU64,
    ntt_elements: AtomicU64,
    busy_nanos: AtomicU64,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    reopened: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, v: u64) {
        c.fetch_add(v, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DeviceCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeviceCounters {
            msm_calls: g(&self.msm_calls),
            msm_points: g(&self.msm_points),
            ntt_calls: g(&self.ntt_calls),
            ntt_elements: g(&self.ntt_elements),
            busy_seconds: g(&self.busy_nanos) as f64 * 1e-9,
            errors: g(&self.errors),
            fallbacks: g(&self.fallbacks),
            reopened: g(&self.reopened),
        }
    }
}

/// What a readmission did ([`GpuBackend::readmit`]): the devices out of
/// service it opened afresh and tested, by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readmission {
    /// Those that passed: back in service.
    pub back: Vec<String>,
    /// Those that did not (or could not be opened): still out.
    pub still_out: Vec<String>,
}

/// Work counted on one device (or on the CPU).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceCounters {
    /// MSM calls (one per sorted scalar vector).
    pub msm_calls: u64,
    /// Points multiplied (scalars × bases sets).
    pub msm_points: u64,
    /// NTTs (a quotient chain counts its transforms).
    pub ntt_calls: u64,
    /// Elements transformed.
    pub ntt_elements: u64,
    /// Time spent working.
    pub busy_seconds: f64,
    /// Failures (each takes the device out of service, but for a shortage of
    /// resources after which it passed its known-answer test again).
    pub errors: u64,
    /// Pieces of work given to this device that the CPU finished.
    pub fallbacks: u64,
    /// Times it was opened afresh (a new context, queue and kernels) to be
    /// tested for readmission.
    pub reopened: u64,
}

/// A device in service, or one that failed.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    /// "cuda:0 NVIDIA H100 …" or "opencl:0 pthread-…" (with "#k" for logical copies).
    pub label: String,
    /// "cuda" or "opencl".
    pub runtime: &'static str,
    /// Device memory in bytes.
    pub memory: u64,
    /// The bytes this (logical) device may allocate.
    pub memory_budget: u64,
    /// The bytes its buffers take now (resident bases, cached tables, and
    /// the working buffers of a call in progress).
    pub memory_used: u64,
    /// Multiprocessors or compute units.
    pub compute_units: u32,
    /// Still in service.
    pub healthy: bool,
    /// What it did.
    pub counters: DeviceCounters,
}

/// The devices, the ones refused and why, and the CPU's share.
#[derive(Debug, Clone)]
pub struct GpuReport {
    /// Admitted devices.
    pub devices: Vec<DeviceReport>,
    /// Devices (or runtimes) not admitted, each with its reason.
    pub refused: Vec<String>,
    /// Work done on the CPU (with no device, or after a device failed).
    pub cpu: DeviceCounters,
}

struct Slot {
    label: String,
    runtime: &'static str,
    memory: u64,
    compute_units: u32,
    ops: Mutex<Box<dyn DeviceOps>>,
    /// Read without the lock (reports come while a device works).
    meter: Arc<Meter>,
    healthy: AtomicBool,
    counters: Counters,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Box<dyn DeviceOps>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A call on this device (`ops`, its lock held) failed; the call goes to
    /// the CPU. Out of memory, bases it lost, or a problem its kernels do not
    /// take: the device stays in service. Short of resources: it stays only
    /// if it passes its known-answer test again now (a shortage passes, a
    /// crash the driver reported that way does not). Anything else takes it
    /// out of service.
    fn failed(&self, ops: &mut dyn DeviceOps, e: &GpuError) {
        match e {
            GpuError::OutOfMemory { .. } | GpuError::NotResident(_) | GpuError::Unsupported(_) => {
                tracing::warn!(device = %self.label, error = %e, "this call goes to the CPU; the device stays in service");
                return;
            }
            GpuError::Resources { .. } => {
                Counters::add(&self.counters.errors, 1);
                ops.drop_caches();
                match guarded(&self.label, || known_answer(ops)) {
                    Ok(()) => tracing::warn!(
                        device = %self.label,
                        error = %e,
                        "this call goes to the CPU; the device passed its known-answer test again and stays in service"
                    ),
                    // No room for the test within its budget: a shortage, not
                    // a fault shown (the next failed call tests it again).
                    Err(again @ GpuError::OutOfMemory { .. }) => tracing::warn!(
                        device = %self.label,
                        error = %e,
                        test = %again,
                        "this call goes to the CPU; no room to test the device again, so it stays in service"
                    ),
                    Err(again) => {
                        self.healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            device = %self.label,
                            error = %e,
                            test = %again,
                            "device failed, and failed its known-answer test again; its work goes to the CPU"
                        );
                    }
                }
                return;
            }
            _ => {}
        }
        Counters::add(&self.counters.errors, 1);
        self.healthy.store(false, Ordering::Relaxed);
        tracing::warn!(device = %self.label, error = %e, "device failed; its work goes to the CPU");
    }
}

struct Manager {
    precompute_min: usize,
    slots: Vec<Slot>,
    /// The bases sets alive, to load again on a device back in service.
    live: Mutex<Vec<Weak<dyn Reload>>>,
    refused: Vec<String>,
    next_id: AtomicU64,
    cpu: Counters,
}

/// The GPU backend (see the module documentation). With no usable device it
/// is the CPU backend, and says why in [`GpuBackend::report`].
#[derive(Clone)]
pub struct GpuBackend {
    m: Arc<Manager>,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.m.slots.iter().map(|s| s.label.as_str()).collect();
        f.debug_struct("GpuBackend").field("devices", &labels).field("refused", &self.m.refused).finish()
    }
}

/// Bases resident on every device, with the host copy the CPU falls back on.
pub struct GpuBases<A> {
    s: Arc<Shared<A>>,
}

/// A bases set, shared with the manager's list of those alive (see
/// [`GpuBackend::readmit`]).
struct Shared<A> {
    id: u64,
    curve: CurveId,
    host: Vec<A>,
    /// The device form of `host`.
    pack: fn(&[A]) -> Vec<u8>,
    /// Per device (by index): whether the bases are resident there. Cleared
    /// when a device turns out to have lost them (see [`GpuError::NotResident`])
    /// and when it is opened afresh for readmission, set when a device back
    /// in service has them again.
    resident: Vec<AtomicBool>,
    m: Arc<Manager>,
}

/// A bases set that can be made resident again on a device.
trait Reload: Send + Sync {
    /// Frees the set on device `index` (`ops`) and loads it afresh.
    fn reload(&self, index: usize, ops: &mut dyn DeviceOps) -> Result<(), GpuError>;
    /// Device `index` no longer holds the set (it was opened afresh).
    fn lost(&self, index: usize);
}

impl<A: Send + Sync> Reload for Shared<A> {
    fn lost(&self, index: usize) {
        self.resident[index].store(false, Ordering::Relaxed);
    }

    fn reload(&self, index: usize, ops: &mut dyn DeviceOps) -> Result<(), GpuError> {
        ops.free_bases(self.id);
        self.resident[index].store(false, Ordering::Relaxed);
        let precompute = self.host.len() >= self.m.precompute_min;
        ops.load_bases(self.id, self.curve, &(self.pack)(&self.host), self.host.len(), precompute)?;
        self.resident[index].store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
impl<A> GpuBases<A> {
    /// Per device (by index): whether the bases are resident there.
    fn resident(&self) -> Vec<bool> {
        self.s.resident.iter().map(|r| r.load(Ordering::Relaxed)).collect()
    }
}

impl<A> std::fmt::Debug for GpuBases<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBases").field("id", &self.s.id).field("len", &self.s.host.len()).finish()
    }
}

impl<A> Drop for Shared<A> {
    fn drop(&mut self) {
        for s in &self.m.slots {
            s.lock().free_bases(self.id);
        }
        self.m.live.lock().unwrap_or_else(|p| p.into_inner()).retain(|w| w.strong_count() > 0);
    }
}

/// `f`, a call on `device`, with a panic in it (cudarc panics on some
/// driver errors) turned into [`GpuError::Panicked`]: the device's lock is
/// let go unpoisoned, and the device is taken out of service like one whose
/// call failed.
fn guarded<T>(device: &str, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(GpuError::Panicked { device: device.to_string(), message: device::panic_message(p.as_ref()) })
    })
}

/// A device made ready, before admission.
struct Candidate {
    label: String,
    runtime: &'static str,
    memory: u64,
    compute_units: u32,
    ops: Box<dyn DeviceOps>,
    meter: Arc<Meter>,
}

/// A logical device's budget: the physical device's (the limit asked for, at
/// most its memory), split evenly among its copies.
fn budget(config: &GpuConfig, memory: u64) -> u64 {
    let physical = config.memory_limit.map_or_else(|| budget::default_budget(memory), |l| l.min(memory));
    physical / config.logical_per_device.max(1) as u64
}

fn find_cuda(config: &GpuConfig, refused: &mut Vec<String>) -> Vec<Candidate> {
    let mut out = Vec::new();
    let count = match cuda::device_count() {
        Ok(n) => n,
        Err(e) => {
            refused.push(e.to_string());
            return out;
        }
    };
    for ordinal in 0..count {
        for copy in 0..config.logical_per_device.max(1) {
            match cuda::Cuda::new(ordinal, config.cuda_portable, config.cache_dir.as_deref()) {
                Ok((rt, info)) => {
                    let (portable, cache) = (config.cuda_portable, config.cache_dir.clone());
                    let open = move || cuda::Cuda::new(ordinal, portable, cache.as_deref()).map(|(rt, _)| rt);
                    let mut label =
                        format!("cuda:{ordinal} {} (sm_{}{})", info.name, info.arch.0, info.arch.1);
                    if config.logical_per_device > 1 {
                        label.push_str(&format!(" #{copy}"));
                    }
                    let meter = Arc::new(Meter::new(label.clone(), budget(config, info.memory)));
                    out.push(Candidate {
                        label,
                        runtime: "cuda",
                        memory: info.memory,
                        compute_units: info.compute_units,
                        ops: Box::new(DeviceState::new(rt, meter.clone(), open)),
                        meter,
                    });
                }
                Err(e) => refused.push(e.to_string()),
            }
        }
    }
    out
}

fn find_opencl(config: &GpuConfig, refused: &mut Vec<String>) -> Vec<Candidate> {
    let mut out = Vec::new();
    let devices = match opencl::list() {
        Ok(d) => d,
        Err(e) => {
            refused.push(e.to_string());
            return out;
        }
    };
    for (i, d) in devices.iter().enumerate() {
        if d.is_cpu && !config.opencl_cpu {
            refused.push(format!(
                "opencl:{i} {}: a CPU device (the CPU backend is faster; --opencl-cpu uses it anyway)",
                d.name
            ));
            continue;
        }
        for copy in 0..config.logical_per_device.max(1) {
            let mut label = format!("opencl:{i} {}", d.name);
            if config.logical_per_device > 1 {
                label.push_str(&format!(" #{copy}"));
            }
            match opencl::OpenCl::new(d, label.clone()) {
                Ok(rt) => {
                    let (info, named) = (d.clone(), label.clone());
                    let open = move || opencl::OpenCl::new(&info, named.clone());
                    let meter = Arc::new(Meter::new(label.clone(), budget(config, d.memory)));
                    out.push(Candidate {
                        label,
                        runtime: "opencl",
                        memory: d.memory,
                        compute_units: d.compute_units,
                        ops: Box::new(DeviceState::new(rt, meter.clone(), open)),
                        meter,
                    })
                }
                Err(e) => refused.push(e.to_string()),
            }
        }
    }
    out
}

/// Random points `r_i·G` for the admission test (deterministic).
fn kat_points<P: ark_ec::short_weierstrass::SWCurveConfig<ScalarField = Fr>>(
    n: usize,
    rng: &mut impl ark_std::rand::Rng,
) -> Vec<ark_ec::short_weierstrass::Affine<P>> {
    use ark_ec::short_weierstrass::{Affine, Projective};
    let p: Vec<Projective<P>> = (0..n).map(|_| Projective::<P>::rand(rng)).collect();
    let mut a = Projective::normalize_batch(&p);
    if n > 5 {
        a[3] = Affine::identity();
        a[5] = a[4];
    }
    a
}

fn kat_scalars(n: usize, rng: &mut impl ark_std::rand::Rng) -> Vec<Fr> {
    let mut s: Vec<Fr> = (0..n).map(|_| Fr::rand(rng)).collect();
    s[0] = Fr::zero();
    s[1] = Fr::from(1u64);
    s[2] = -Fr::from(1u64);
    s[6] = Fr::from(3u64);
    s
}

/// Points of the known-answer test's G1 MSM: 6-bit windows (a digit that
/// straddles two 32-bit limbs), and with its run of ±1 scalars a bucket of
/// more than one segment (a second level of sums) in the plain layout.
const KAT_G1: usize = 300;
/// Its NTT's elements: more than one pass on every device.
const KAT_NTT: usize = 1 << (source::NTT_MAX_LOG + 1);

/// The known-answer test's G1 scalars: with a run of ±1 (bucket 1 of the
/// first window) longer than a segment.
fn kat_g1_scalars(rng: &mut impl ark_std::rand::Rng) -> Vec<Fr> {
    let mut s = kat_scalars(KAT_G1, rng);
    s[100..200].fill(Fr::from(1u64));
    s[200..240].fill(-Fr::from(1u64));
    s
}

/// The known-answer test a device passes before it is admitted (and again
/// before it is back in service, or kept after a shortage of resources):
/// every kernel, on the paths the proofs take, at small sizes.
fn known_answer(ops: &mut dyn DeviceOps) -> Result<(), GpuError> {
    let label = ops.label();
    let wrong = |what: &str| GpuError::KnownAnswer { device: label.clone(), what: what.into() };
    let mut rng = ark_std::test_rng();
    const ID: u64 = u64::MAX;

    let g1 = kat_points::<ark_bn254::g1::Config>(KAT_G1, &mut rng);
    let s = kat_g1_scalars(&mut rng);
    let g2 = kat_points::<ark_bn254::g2::Config>(9, &mut rng);
    let s2 = kat_scalars(9, &mut rng);
    for precompute in [false, true] {
        ops.load_bases(ID, CurveId::G1, &layout::G1::pack(&g1), g1.len(), precompute)?;
        let got = ops.msm(&s, &[Target { id: ID, curve: CurveId::G1, offset: 0 }]);
        ops.free_bases(ID);
        if got? != [MsmValue::G1(cpu::msm(&g1, &s))] {
            return Err(wrong(&format!("G1 MSM (precomputed bases: {precompute})")));
        }
        ops.load_bases(ID, CurveId::G2, &layout::G2::pack(&g2), g2.len(), precompute)?;
        let got = ops.msm(&s2[1..], &[Target { id: ID, curve: CurveId::G2, offset: 1 }]);
        ops.free_bases(ID);
        if got? != [MsmValue::G2(cpu::msm(&g2[1..], &s2[1..]))] {
            return Err(wrong(&format!("G2 MSM (precomputed bases: {precompute})")));
        }
    }

    let v: Vec<Fr> = (0..KAT_NTT).map(|_| Fr::rand(&mut rng)).collect();
    for (dir, coset) in [
        (NttDirection::Forward, None),
        (NttDirection::Inverse, None),
        (NttDirection::Forward, Some(Fr::GENERATOR)),
        (NttDirection::Inverse, Some(Fr::GENERATOR)),
    ] {
        let mut got = v.clone();
        ops.ntt(&mut got, dir, coset)?;
        let mut want = v.clone();
        cpu::ntt_in_place(&mut want, dir, coset);
        if got != want {
            return Err(wrong(&format!("NTT {dir:?}, coset {}", coset.is_some())));
        }
    }
    // Its tables are not the proofs' sizes: they leave the memory to them.
    ops.drop_caches();
    Ok(())
}

/// The jobs of a batch, as the scheduler splits and places them.
#[derive(Clone, Copy)]
enum JobRef {
    G1(usize),
    G2(usize),
}

#[derive(Clone)]
struct Unit<'a> {
    scalars: &'a [Fr],
    offset: usize,
    /// (job, bases id, curve).
    targets: Vec<(JobRef, u64, CurveId)>,
    /// Per device being scheduled: whether it holds every target's bases.
    on: Vec<bool>,
}

impl Unit<'_> {
    fn cost(&self) -> usize {
        let w: usize = self
            .targets
            .iter()
            .map(|t| match t.2 {
                CurveId::G1 => layout::G1::WEIGHT,
                CurveId::G2 => layout::G2::WEIGHT,
            })
            .sum();
        self.scalars.len() * w
    }
}

/// Units smaller than this are not split further.
const MIN_SPLIT: usize = 1 << 10;

/// The scheduler's plan: merge MSMs over the same scalars when there are
/// fewer devices than MSMs (one sort serves them all), split the largest by
/// ranges when there are more, then place the units, those the fewest
/// devices hold first and each group largest first, on the least loaded
/// device that holds their bases (every unit is held by one).
fn schedule(units: Vec<Unit<'_>>, devices: usize) -> Vec<Vec<Unit<'_>>> {
    let mut units = units;
    if devices < units.len() {
        let mut merged: Vec<Unit> = Vec::new();
        for u in units {
            match merged.iter_mut().find(|m| {
                m.offset == u.offset
                    && std::ptr::eq(m.scalars, u.scalars)
                    && m.scalars.len() == u.scalars.len()
                    && m.on == u.on
            }) {
                Some(m) => m.targets.extend(u.targets),
                None => merged.push(u),
            }
        }
        units = merged;
    }
    // Split a unit while fewer units could go to its devices than it has
    // devices (with every device holding every set of bases: while there are
    // fewer units than devices).
    let idle = |units: &[Unit], u: &Unit| {
        let overlapping =
            units.iter().filter(|v| v.on.iter().zip(&u.on).take(devices).any(|(&a, &b)| a && b)).count();
        overlapping < u.on.iter().take(devices).filter(|&&on| on).count()
    };
    let widest = |units: &[Unit]| {
        units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.scalars.len() >= 2 * MIN_SPLIT && idle(units, u))
            .max_by_key(|(_, u)| u.cost())
            .map(|(i, _)| i)
    };
    while let Some(i) = widest(&units) {
        let u = units.swap_remove(i);
        let mid = u.scalars.len() / 2;
        units.push(Unit {
            scalars: &u.scalars[..mid],
            offset: u.offset,
            targets: u.targets.clone(),
            on: u.on.clone(),
        });
        units.push(Unit { scalars: &u.scalars[mid..], offset: u.offset + mid, targets: u.targets, on: u.on });
    }
    // The units fewest devices hold first (they have no choice), each group
    // largest first.
    units.sort_by_key(|u| (u.on.iter().take(devices).filter(|&&on| on).count(), std::cmp::Reverse(u.cost())));
    let mut plan: Vec<Vec<Unit>> = vec![Vec::new(); devices];
    let mut load = vec![0usize; devices];
    for u in units {
        let d = (0..devices)
            .filter(|&d| u.on[d])
            .min_by_key(|&d| load[d])
            .expect("a unit is scheduled only where some device holds its bases");
        load[d] += u.cost();
        plan[d].push(u);
    }
    plan
}

impl GpuBackend {
    /// Finds, builds and admits the devices `config` asks for. Never fails:
    /// with no usable device every call runs on the CPU, and
    /// [`Self::report`] says why.
    pub fn new(config: &GpuConfig) -> Self {
        let mut refused = Vec::new();
        let mut candidates = Vec::new();
        if let Err(e) = layout::check_field_layout() {
            refused.push(e);
        } else {
            if matches!(config.runtimes, Runtimes::Auto | Runtimes::Cuda) {
                candidates = find_cuda(config, &mut refused);
            }
            let opencl_wanted = config.runtimes == Runtimes::OpenCl
                || (config.runtimes == Runtimes::Auto && candidates.is_empty());
            if opencl_wanted {
                candidates.extend(find_opencl(config, &mut refused));
            }
        }
        let mut slots = Vec::new();
        for mut c in candidates.into_iter().take(config.max_devices) {
            match guarded(&c.label, || known_answer(c.ops.as_mut())) {
                Ok(()) => {
                    tracing::info!(device = %c.label, "device admitted");
                    slots.push(Slot {
                        label: c.label,
                        runtime: c.runtime,
                        memory: c.memory,
                        compute_units: c.compute_units,
                        ops: Mutex::new(c.ops),
                        meter: c.meter,
                        healthy: AtomicBool::new(true),
                        counters: Counters::default(),
                    });
                }
                Err(e) => refused.push(e.to_string()),
            }
        }
        for r in &refused {
            tracing::info!(reason = %r, "device not used");
        }
        Self {
            m: Arc::new(Manager {
                precompute_min: config.precompute_min,
                slots,
                refused,
                live: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(0),
                cpu: Counters::default(),
            }),
        }
    }

    /// Devices in service.
    pub fn device_count(&self) -> usize {
        self.m.slots.iter().filter(|s| s.healthy()).count()
    }

    /// The devices, what they did, and what the CPU did.
    pub fn report(&self) -> GpuReport {
        GpuReport {
            devices: self
                .m
                .slots
                .iter()
                .map(|s| DeviceReport {
                    label: s.label.clone(),
                    runtime: s.runtime,
                    memory: s.memory,
                    memory_budget: s.meter.budget(),
                    memory_used: s.meter.used(),
                    compute_units: s.compute_units,
                    healthy: s.healthy(),
                    counters: s.counters.snapshot(),
                })
                .collect(),
            refused: self.m.refused.clone(),
            cpu: self.m.cpu.snapshot(),
        }
    }

    /// Takes every device in service out of it, returning which: a proof
    /// made with them did not verify, and one made on the CPU is to tell
    /// whether they were wrong (see [`Self::end_suspension`]).
    pub fn suspend_devices(&self) -> Vec<usize> {
        let mut taken = Vec::new();
        for (i, s) in self.m.slots.iter().enumerate() {
            if s.healthy.swap(false, Ordering::Relaxed) {
                taken.push(i);
            }
        }
        taken
    }

    /// Ends a suspension of `devices`: with `faulty`, they stay out of
    /// service, an error counted on each (`why` logged); without, the fault
    /// was not theirs (the CPU's proof failed too) and they are back.
    pub fn end_suspension(&self, devices: &[usize], faulty: bool, why: &str) {
        for s in devices.iter().filter_map(|&i| self.m.slots.get(i)) {
            if faulty {
                Counters::add(&s.counters.errors, 1);
                tracing::warn!(device = %s.label, reason = why, "device taken out of service; its work goes to the CPU");
            } else {
                s.healthy.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Opens each device out of service afresh (a new context, queue and
    /// kernels: a fault may have lost the old context for good, as CUDA's
    /// sticky errors do) and runs the known-answer test again; one that
    /// passes has every bases set alive loaded again where they fit and is
    /// back in service (its fault was transient). Says which are back and
    /// which, tested, are still out. A device wrong only at sizes the test
    /// does not reach comes back too, and the worker's proof check takes it
    /// out again.
    pub fn readmit(&self) -> Readmission {
        // The sets reloaded, dropped last: one whose owner let it go
        // meanwhile is freed here, with no device's lock held.
        let mut kept: Vec<Arc<dyn Reload>> = Vec::new();
        let mut done = Readmission::default();
        for (index, s) in self.m.slots.iter().enumerate().filter(|(_, s)| !s.healthy()) {
            let mut ops = s.lock();
            // Listed under the device's lock: a set loaded from now on finds
            // the device in service and loads itself there (see `load`).
            let live: Vec<Arc<dyn Reload>> = self
                .m
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            // Its bases and tables are freed with the old context, whether
            // or not a new one opens.
            for bases in &live {
                bases.lost(index);
            }
            let ready = guarded(&s.label, || {
                ops.reopen()?;
                Counters::add(&s.counters.reopened, 1);
                known_answer(ops.as_mut())?;
                for bases in &live {
                    match bases.reload(index, ops.as_mut()) {
                        // That set's MSMs go to other devices or the CPU.
                        Err(e @ (GpuError::OutOfMemory { .. } | GpuError::Unsupported(_))) => {
                            tracing::warn!(device = %s.label, error = %e, "bases not loaded again")
                        }
                        r => r?,
                    }
                }
                Ok(())
            });
            match ready {
                Ok(()) => {
                    s.healthy.store(true, Ordering::Relaxed);
                    tracing::info!(device = %s.label, "device back in service: it passed its known-answer test again");
                    done.back.push(s.label.clone());
                }
                // CUDA documents a relaunch of the process as the only sure
                // way back from a crashed kernel's lost context.
                Err(e) => {
                    if s.runtime == "cuda" {
                        tracing::warn!(
                            device = %s.label,
                            error = %e,
                            "device still out of service, though opened afresh; if it failed with a lost context (a crashed kernel), restarting the worker may bring it back (--relaunch-when-device-lost does)"
                        )
                    } else {
                        tracing::info!(device = %s.label, error = %e, "device still out of service, though opened afresh")
                    }
                    done.still_out.push(s.label.clone());
                }
            }
            kept.extend(live);
        }
        done
    }

    /// Makes device `index` fail as `fault` says after `launches` more
    /// kernel launches (`usize::MAX`: no more faults), for tests of the
    /// fallback: the failure is indistinguishable from a real one to
    /// everything above the device.
    pub fn inject_fault(&self, index: usize, launches: usize, fault: Fault) {
        if let Some(s) = self.m.slots.get(index) {
            s.lock().inject_fault(launches, fault);
        }
    }

    /// Makes device `index` lose its context for real, as a crashed kernel
    /// does (CUDA: a kernel that traps), for tests of the recovery on
    /// hardware. The device stays in service until a call on it fails.
    pub fn lose_context(&self, index: usize) -> Result<(), GpuError> {
        let s = self.m.slots.get(index).ok_or_else(|| GpuError::Unsupported(format!("no device {index}")))?;
        let mut ops = s.lock();
        guarded(&s.label, || ops.lose_context())
    }

    /// The driver's free and total memory of device `index`, where it says
    /// (CUDA does; for tests of what a lost context leaves).
    pub fn driver_memory(&self, index: usize) -> Option<(u64, u64)> {
        self.m.slots.get(index)?.lock().driver_memory()
    }

    /// Makes device `index` return wrong field elements from then on,
    /// without failing (for tests of the proof check: a device wrong at
    /// sizes its admission test does not reach).
    pub fn inject_corruption(&self, index: usize) {
        if let Some(s) = self.m.slots.get(index) {
            s.lock().inject_corruption();
        }
    }

    /// The time of one forward NTT of 2^log_n elements resident on the first
    /// device (median of `reps`), without the copies: the device's own speed.
    pub fn time_resident_ntt(&self, log_n: u32, reps: usize) -> Result<Duration, GpuError> {
        let slot = self
            .healthy_slots()
            .into_iter()
            .next()
            .ok_or_else(|| GpuError::Unsupported("no device".into()))?;
        slot.lock().time_resident_ntt(log_n, reps)
    }

    /// The times of copying `bytes` to the first device and back (medians).
    pub fn time_copies(&self, bytes: usize, reps: usize) -> Result<(Duration, Duration), GpuError> {
        let slot = self
            .healthy_slots()
            .into_iter()
            .next()
            .ok_or_else(|| GpuError::Unsupported("no device".into()))?;
        slot.lock().time_copies(bytes, reps)
    }

    /// Time per phase of the device drivers, summed over every call, when the
    /// process runs with `MEDROLLUP_GPU_PROFILE=1` (empty otherwise):
    /// (phase, calls, total).
    pub fn profile() -> Vec<(String, u64, Duration)> {
        device::profile()
    }

    fn healthy_slots(&self) -> Vec<&Slot> {
        self.m.slots.iter().filter(|s| s.healthy()).collect()
    }

    fn load<C: DeviceCurve>(&self, points: &[C::Affine], curve: CurveId) -> GpuBases<C::Affine> {
        let id = self.m.next_id.fetch_add(1, Ordering::Relaxed);
        let resident = self.m.slots.iter().map(|_| AtomicBool::new(false)).collect();
        let shared =
            Arc::new(Shared { id, curve, host: points.to_vec(), pack: C::pack, resident, m: self.m.clone() });
        // Listed before any device is looked at: a device that comes back
        // meanwhile either finds the set listed or is found in service.
        let weak: Weak<dyn Reload> = Arc::downgrade(&shared) as Weak<dyn Reload>;
        self.m.live.lock().unwrap_or_else(|p| p.into_inner()).push(weak);
        if !self.m.slots.is_empty() {
            let packed = C::pack(points);
            let precompute = points.len() >= self.m.precompute_min;
            for (s, on) in self.m.slots.iter().zip(&shared.resident) {
                let mut ops = s.lock();
                // Health read under the lock (see `readmit`).
                if !s.healthy() || ops.holds(id) {
                    continue;
                }
                let mut loaded =
                    guarded(&s.label, || ops.load_bases(id, curve, &packed, points.len(), precompute));
                if let Err(e) = &loaded
                    && matches!(e, GpuError::Resources { .. })
                {
                    // Tested again at once (see `Slot::failed`); one that
                    // got over the shortage loads the set once more, else it
                    // would never hold it (readmission visits devices out of
                    // service only).
                    s.failed(ops.as_mut(), e);
                    if !s.healthy() {
                        continue;
                    }
                    loaded =
                        guarded(&s.label, || ops.load_bases(id, curve, &packed, points.len(), precompute));
                }
                match loaded {
                    Ok(()) => on.store(true, Ordering::Relaxed),
                    // Not resident there: that device gets no work over these
                    // bases. A runtime failure (not a want of memory, nor bases
                    // its kernels do not take) takes the device out of service.
                    Err(e @ (GpuError::Call { .. } | GpuError::Injected(_) | GpuError::Panicked { .. })) => {
                        s.failed(ops.as_mut(), &e)
                    }
                    Err(e) => tracing::warn!(device = %s.label, error = %e, "bases not loaded"),
                }
            }
        }
        GpuBases { s: shared }
    }

    /// Runs one unit on the CPU.
    fn unit_on_cpu(
        unit: &Unit<'_>,
        g1: &[(&GpuBases<G1Affine>, &[Fr])],
        g2: &[(&GpuBases<G2Affine>, &[Fr])],
    ) -> Vec<MsmValue> {
        let range = unit.offset..unit.offset + unit.scalars.len();
        unit.targets
            .iter()
            .map(|(job, _, _)| match *job {
                JobRef::G1(j) => MsmValue::G1(cpu::msm(&g1[j].0.s.host[range.clone()], unit.scalars)),
                JobRef::G2(j) => MsmValue::G2(cpu::msm(&g2[j].0.s.host[range.clone()], unit.scalars)),
            })
            .collect()
    }

    fn count_cpu_msm(&self, unit: &Unit<'_>, took: Duration) {
        let c = &self.m.cpu;
        Counters::add(&c.msm_calls, 1);
        Counters::add(&c.msm_points, (unit.scalars.len() * unit.targets.len()) as u64);
        Counters::add(&c.busy_nanos, took.as_nanos() as u64);
    }

    /// A unit on the thread of device `index` (`slot`): on the device while
    /// it is healthy, else (or when it fails) on the CPU.
    fn run_unit(
        &self,
        index: usize,
        slot: &Slot,
        unit: &Unit<'_>,
        g1: &[(&GpuBases<G1Affine>, &[Fr])],
        g2: &[(&GpuBases<G2Affine>, &[Fr])],
    ) -> (Vec<MsmValue>, Duration) {
        let mut ops = slot.lock();
        // Busy from here: the wait for the lock is not the device's work.
        let t = Instant::now();
        // Health is read under the lock: a failure seen by another thread
        // while this one waited counts once.
        if slot.healthy() {
            let targets: Vec<Target> = unit
                .targets
                .iter()
                .map(|&(_, id, curve)| Target { id, curve, offset: unit.offset })
                .collect();
            let result = guarded(&slot.label, || ops.msm(unit.scalars, &targets));
            match &result {
                Err(GpuError::OutOfMemory { .. }) => ops.drop_caches(),
                // Bases the device lost get no more work there.
                Err(GpuError::NotResident(_)) => {
                    for &(job, id, _) in &unit.targets {
                        if !ops.holds(id) {
                            let flag = match job {
                                JobRef::G1(j) => &g1[j].0.s.resident[index],
                                JobRef::G2(j) => &g2[j].0.s.resident[index],
                            };
                            flag.store(false, Ordering::Relaxed);
                        }
                    }
                }
                _ => {}
            }
            // Recorded before the lock is let go, so that a call waiting for
            // this device finds it out of service instead of failing again.
            if let Err(e) = &result {
                slot.failed(ops.as_mut(), e);
            }
            drop(ops);
            if let Ok(v) = result {
                let took = t.elapsed();
                Counters::add(&slot.counters.msm_calls, 1);
                Counters::add(&slot.counters.msm_points, (unit.scalars.len() * targets.len()) as u64);
                Counters::add(&slot.counters.busy_nanos, took.as_nanos() as u64);
                return (v, took);
            }
        } else {
            drop(ops);
        }
        Counters::add(&slot.counters.fallbacks, 1);
        Counters::add(&self.m.cpu.fallbacks, 1);
        let t = Instant::now();
        let v = Self::unit_on_cpu(unit, g1, g2);
        self.count_cpu_msm(unit, t.elapsed());
        (v, t.elapsed())
    }

    fn ntt_on_cpu(&self, data: &mut [Fr], dir: NttDirection, coset: Option<Fr>) {
        let t = Instant::now();
        cpu::ntt_in_place(data, dir, coset);
        let c = &self.m.cpu;
        Counters::add(&c.ntt_calls, 1);
        Counters::add(&c.ntt_elements, data.len() as u64);
        Counters::add(&c.busy_nanos, t.elapsed().as_nanos() as u64);
    }

    /// `f` on a healthy device (an idle one if any), counting `ntts`
    /// transforms of `n` elements: `Ok(None)` when no device could do it
    /// (the caller's inputs are whole, the CPU takes over), an error when a
    /// device lost the output it was writing over an input.
    fn on_device<T>(
        &self,
        ntts: u64,
        n: usize,
        f: impl FnOnce(&mut dyn DeviceOps) -> Result<T, GpuError>,
    ) -> Result<Option<T>, BackendError> {
        let slots = self.healthy_slots();
        let Some(slot) = slots.iter().find(|s| s.ops.try_lock().is_ok()).or(slots.first()) else {
            return Ok(None);
        };
        Self::on_slot(slot, ntts, n, f)
    }

    fn on_slot<T>(
        slot: &Slot,
        ntts: u64,
        n: usize,
        f: impl FnOnce(&mut dyn DeviceOps) -> Result<T, GpuError>,
    ) -> Result<Option<T>, BackendError> {
        let mut ops = slot.lock();
        if !slot.healthy() {
            return Ok(None);
        }
        let t = Instant::now();
        let r = guarded(&slot.label, || f(ops.as_mut()));
        if let Err(GpuError::OutOfMemory { .. }) = r {
            ops.drop_caches();
        }
        // Recorded under the lock (see `run_unit`).
        if let Err(e) = &r {
            slot.failed(ops.as_mut(), e);
        }
        drop(ops);
        match r {
            Ok(v) => {
                Counters::add(&slot.counters.ntt_calls, ntts);
                Counters::add(&slot.counters.ntt_elements, ntts * n as u64);
                Counters::add(&slot.counters.busy_nanos, t.elapsed().as_nanos() as u64);
                Ok(Some(v))
            }
            Err(e @ GpuError::OutputLost { .. }) => {
                Err(BackendError::Device { backend: slot.label.clone(), reason: e.to_string() })
            }
            Err(_) => {
                Counters::add(&slot.counters.fallbacks, 1);
                Ok(None)
            }
        }
    }

    fn fallback_counted(&self) {
        Counters::add(&self.m.cpu.fallbacks, 1);
    }
}

fn msm_value_g1(v: MsmValue) -> G1Projective {
    match v {
        MsmValue::G1(p) => p,
        MsmValue::G2(_) => unreachable!("a G1 target gives a G1 value"),
    }
}

fn msm_value_g2(v: MsmValue) -> G2Projective {
    match v {
        MsmValue::G2(p) => p,
        MsmValue::G1(_) => unreachable!("a G2 target gives a G2 value"),
    }
}

impl MsmBackend for GpuBackend {
    type G1Bases = GpuBases<G1Affine>;
    type G2Bases = GpuBases<G2Affine>;

    fn name(&self) -> String {
        match self.device_count() {
            0 => "cpu (no device)".into(),
            n => format!("gpu ({n} devices)"),
        }
    }

    /// While a device is in service (bases that fit none still run on the
    /// CPU, beside the prover's work).
    fn offloads_msms(&self) -> bool {
        self.m.slots.iter().any(Slot::healthy)
    }

    fn load_g1(&self, points: &[G1Affine]) -> Result<Self::G1Bases, BackendError> {
        Ok(self.load::<layout::G1>(points, CurveId::G1))
    }

    fn load_g2(&self, points: &[G2Affine]) -> Result<Self::G2Bases, BackendError> {
        Ok(self.load::<layout::G2>(points, CurveId::G2))
    }

    fn g1_len(&self, bases: &Self::G1Bases) -> usize {
        bases.s.host.len()
    }

    fn g2_len(&self, bases: &Self::G2Bases) -> usize {
        bases.s.host.len()
    }

    fn msm_g1_unchecked(&self, bases: &Self::G1Bases, scalars: &[Fr]) -> Result<G1Projective, BackendError> {
        Ok(self.msm_batch_unchecked(&[(bases, scalars)], &[])?.g1[0].0)
    }

    fn msm_g2_unchecked(&self, bases: &Self::G2Bases, scalars: &[Fr]) -> Result<G2Projective, BackendError> {
        Ok(self.msm_batch_unchecked(&[], &[(bases, scalars)])?.g2[0].0)
    }

    fn msm_batch_unchecked(
        &self,
        g1: &[(&Self::G1Bases, &[Fr])],
        g2: &[(&Self::G2Bases, &[Fr])],
    ) -> Result<MsmBatch, BackendError> {
        let mut units: Vec<Unit> = Vec::new();
        for (j, (b, s)) in g1.iter().enumerate() {
            units.push(Unit {
                scalars: s,
                offset: 0,
                targets: vec![(JobRef::G1(j), b.s.id, CurveId::G1)],
                on: Vec::new(),
            });
        }
        for (j, (b, s)) in g2.iter().enumerate() {
            units.push(Unit {
                scalars: s,
                offset: 0,
                targets: vec![(JobRef::G2(j), b.s.id, CurveId::G2)],
                on: Vec::new(),
            });
        }
        let mut out = MsmBatch {
            g1: vec![(G1Projective::zero(), Duration::ZERO); g1.len()],
            g2: vec![(G2Projective::zero(), Duration::ZERO); g2.len()],
        };
        let mut add = |unit: &Unit, values: Vec<MsmValue>, took: Duration| {
            let total: usize = unit.cost().max(1);
            for ((job, _, curve), v) in unit.targets.iter().zip(values) {
                let w = match curve {
                    CurveId::G1 => layout::G1::WEIGHT,
                    CurveId::G2 => layout::G2::WEIGHT,
                };
                let share = took.mul_f64((unit.scalars.len() * w) as f64 / total as f64);
                match *job {
                    JobRef::G1(j) => {
                        out.g1[j].0 += msm_value_g1(v);
                        out.g1[j].1 += share;
                    }
                    JobRef::G2(j) => {
                        out.g2[j].0 += msm_value_g2(v);
                        out.g2[j].1 += share;
                    }
                }
            }
        };

        // The healthy devices (known here, without waiting for a busy
        // device's lock) take the units whose bases they hold, each on one of
        // those; the CPU takes the units no device holds (bases that did not
        // fit), beside them.
        let slots: Vec<(usize, &Slot)> =
            self.m.slots.iter().enumerate().filter(|(_, s)| s.healthy()).collect();
        for u in &mut units {
            u.on = slots
                .iter()
                .map(|&(i, _)| {
                    u.targets.iter().all(|(job, _, _)| match *job {
                        JobRef::G1(j) => g1[j].0.s.resident[i].load(Ordering::Relaxed),
                        JobRef::G2(j) => g2[j].0.s.resident[i].load(Ordering::Relaxed),
                    })
                })
                .collect();
        }
        let (device_units, cpu_units): (Vec<Unit>, Vec<Unit>) =
            units.into_iter().partition(|u| u.on.iter().any(|&on| on));
        if !cpu_units.is_empty() && !self.m.slots.is_empty() {
            // Work meant for a device (there is one) that the CPU does.
            self.fallback_counted();
        }
        let plan = if device_units.is_empty() { Vec::new() } else { schedule(device_units, slots.len()) };
        let results: Vec<Vec<(Unit, Vec<MsmValue>, Duration)>> = std::thread::scope(|scope| {
            let mut handles: Vec<_> = plan
                .into_iter()
                .zip(&slots)
                .filter(|(units, _)| !units.is_empty())
                .map(|(units, &(index, slot))| {
                    scope.spawn(move || {
                        units
                            .into_iter()
                            .map(|u| {
                                let (v, took) = self.run_unit(index, slot, &u, g1, g2);
                                (u, v, took)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            if !cpu_units.is_empty() {
                handles.push(scope.spawn(move || {
                    cpu_units
                        .into_iter()
                        .map(|u| {
                            let t = Instant::now();
                            let v = Self::unit_on_cpu(&u, g1, g2);
                            self.count_cpu_msm(&u, t.elapsed());
                            (u, v, t.elapsed())
                        })
                        .collect()
                }));
            }
            handles.into_iter().map(|h| h.join().expect("a device thread panicked")).collect()
        });
        for (u, v, took) in results.into_iter().flatten() {
            add(&u, v, took);
        }
        Ok(out)
    }
}

impl NttBackend for GpuBackend {
    fn name(&self) -> String {
        MsmBackend::name(self)
    }

    fn max_log_size(&self) -> u32 {
        Fr::TWO_ADICITY
    }

    fn ntt_unchecked(
        &self,
        data: &mut [Fr],
        dir: NttDirection,
        coset: Option<Fr>,
    ) -> Result<(), BackendError> {
        let n = data.len();
        if self.on_device(1, n, |d| d.ntt(data, dir, coset))?.is_none() {
            if !self.m.slots.is_empty() {
                self.fallback_counted();
            }
            self.ntt_on_cpu(data, dir, coset);
        }
        Ok(())
    }

    fn qap_quotient_unchecked(&self, a: Vec<Fr>, b: Vec<Fr>, c: Vec<Fr>) -> Result<Vec<Fr>, BackendError> {
        let (mut a, mut b, mut c) = (a, b, c);
        let n = a.len();
        let slots = self.healthy_slots();
        let cpu_chain = |v: &mut [Fr]| {
            self.ntt_on_cpu(v, NttDirection::Inverse, None);
            self.ntt_on_cpu(v, NttDirection::Forward, Some(Fr::GENERATOR));
        };
        if slots.len() <= 1 {
            // The whole chain on the device, the result over a.
            if self.on_device(7, n, |d| d.quotient(&mut a, &b, &c))?.is_some() {
                return Ok(a);
            }
            if !self.m.slots.is_empty() {
                self.fallback_counted();
            }
            for v in [&mut a, &mut b, &mut c] {
                cpu_chain(v);
            }
        } else {
            // The three chains side by side on up to three devices.
            let mut chains = [a, b, c];
            let lost: Vec<BackendError> = std::thread::scope(|scope| {
                let handles: Vec<_> = chains
                    .iter_mut()
                    .enumerate()
                    .map(|(k, v)| {
                        let slot = slots[k % slots.len()];
                        let cpu_chain = &cpu_chain;
                        scope.spawn(move || match Self::on_slot(slot, 2, v.len(), |d| d.coset_evals(v)) {
                            Ok(Some(())) => None,
                            Ok(None) => {
                                self.fallback_counted();
                                cpu_chain(v);
                                None
                            }
                            Err(e) => Some(e),
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().expect("a device thread panicked")).collect()
            });
            if let Some(e) = lost.into_iter().next() {
                return Err(e);
            }
            [a, b, c] = chains;
            if self.on_device(1, n, |d| d.quotient_from_evals(&mut a, &b, &c))?.is_some() {
                return Ok(a);
            }
            self.fallback_counted();
        }
        crate::backend::pointwise_quotient(&mut a, &b, &c);
        self.ntt_on_cpu(&mut a, NttDirection::Inverse, Some(Fr::GENERATOR));
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_answer_test_reaches_the_paths_proofs_take() {
        let c = device::window_bits(KAT_G1);
        assert_ne!(32 % c, 0, "{c}-bit windows: some digit must straddle two limbs");
        let one = Fr::from(1u64);
        let ones =
            kat_g1_scalars(&mut ark_std::test_rng()).iter().filter(|&&x| x == one || x == -one).count();
        assert!(ones > device::SEGMENT as usize, "{ones} scalars ±1: bucket 1 must need a second level");
    }

    #[test]
    fn no_msm_sorts_more_digits_than_the_kernels_positions_take() {
        // The largest sets of real keys fit (a 2^27-point G1 set, plain).
        assert!(device::sorted_digits_fit(1 << 27, device::window_bits(1 << 27)));
        // Below the old bound of 2^30 bases, a set whose digits (up to one per
        // point and window) would wrap the kernels' 32-bit count is refused.
        let n = 340_000_000;
        assert!(n < 1 << 30 && !device::sorted_digits_fit(n, device::window_bits(n)));
    }

    fn unit(s: &[Fr], job: usize, curve: CurveId) -> Unit<'_> {
        let j = if curve == CurveId::G1 { JobRef::G1(job) } else { JobRef::G2(job) };
        Unit { scalars: s, offset: 0, targets: vec![(j, job as u64, curve)], on: vec![true; 8] }
    }

    #[test]
    fn scheduler_merges_shares_and_splits() {
        let h = vec![Fr::zero(); 4096];
        let z = vec![Fr::zero(); 3000];
        let units = || {
            vec![
                unit(&h, 0, CurveId::G1),
                unit(&z, 1, CurveId::G1),
                unit(&z, 2, CurveId::G1),
                unit(&z, 3, CurveId::G2),
            ]
        };
        // One device: the three MSMs over z share one unit (one sort).
        let one = schedule(units(), 1);
        assert_eq!(one[0].len(), 2);
        assert_eq!(one[0].iter().map(|u| u.targets.len()).sum::<usize>(), 4);
        // Two devices: merged, then placed largest first: z's (cost 5 * 3000)
        // on one, h's on the other.
        let two = schedule(units(), 2);
        assert_eq!(two.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        // Eight devices: nothing merged, the largest split by ranges until
        // every device has work.
        let eight = schedule(units(), 8);
        assert!(eight.iter().all(|d| !d.is_empty()), "{:?}", eight.iter().map(Vec::len).collect::<Vec<_>>());
        let covered: usize = eight
            .iter()
            .flatten()
            .filter(|u| matches!(u.targets[0].0, JobRef::G1(0)))
            .map(|u| u.scalars.len())
            .sum();
        assert_eq!(covered, 4096, "the split ranges of h cover it once");
    }

    #[test]
    fn units_go_only_to_devices_that_hold_their_bases() {
        let h = vec![Fr::zero(); 4096];
        let z = vec![Fr::zero(); 4096];
        fn only(mut u: Unit<'_>, d: usize) -> Unit<'_> {
            u.on = vec![false; 8];
            u.on[d] = true;
            u
        }
        let (h, z) = (&h[..], &z[..]);
        // Device 1 holds only z's G1 bases (job 1); device 0 holds everything.
        let mut lone = unit(z, 1, CurveId::G1);
        lone.on = vec![true, true];
        let units = vec![
            only(unit(h, 0, CurveId::G1), 0),
            lone,
            only(unit(z, 2, CurveId::G1), 0),
            only(unit(z, 3, CurveId::G2), 0),
        ];
        let plan = schedule(units.clone(), 2);
        for (d, placed) in plan.iter().enumerate() {
            for u in placed {
                assert!(u.on[d], "a unit on device {d}, which lacks its bases");
            }
        }
        // z's three MSMs do not merge (their devices differ), and device 1
        // gets the one it holds.
        assert_eq!(plan[1].len(), 1);
        assert!(matches!(plan[1][0].targets[..], [(JobRef::G1(1), _, _)]));
        // With eight devices, a unit held by one device is not split; the one
        // both hold is not either, as device 0 has work enough.
        let eight: Vec<Unit> = units
            .into_iter()
            .map(|mut u| {
                u.on.resize(8, false);
                u
            })
            .collect();
        let plan = schedule(eight, 8);
        assert!(plan[2..].iter().all(Vec::is_empty));
        assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), 4);
        // Devices 1 and 2 hold only X, device 0 everything else: X is split
        // over the two.
        let x = |on: Vec<bool>| Unit { on, ..unit(z, 1, CurveId::G1) };
        let plan = schedule(
            vec![
                only(unit(h, 0, CurveId::G1), 0),
                only(unit(z, 2, CurveId::G1), 0),
                x(vec![false, true, true, false, false, false, false, false]),
            ],
            3,
        );
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 1]);
        // A unit two devices hold, and a smaller one only device 0 holds:
        // the constrained one is placed first, so the other goes to device 1.
        let plan = schedule(vec![x(vec![true, true]), only(unit(&h[..1500], 0, CurveId::G1), 0)], 2);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(plan[0][0].scalars.len(), 1500);
    }

    #[test]
    fn memory_sizes_parse_or_say_what_is_wrong() {
        assert_eq!(parse_memory_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_memory_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_memory_size(" 4096 "), Ok(4096));
        let e = parse_memory_size("8GB").unwrap_err();
        assert!(e.contains("unknown unit \"GB\""), "{e}");
        let e = parse_memory_size("lots").unwrap_err();
        assert!(e.contains("not a memory size"), "{e}");
        assert!(parse_memory_size("").unwrap_err().contains("not a memory size"));
        assert!(parse_memory_size("1.2.3G").unwrap_err().contains("not a memory size"));
        assert!(parse_memory_size("99999999TiB").unwrap_err().contains("too large"));
        assert_eq!(parse_device_memory("64MiB"), Ok(MIN_DEVICE_MEMORY));
        for small in ["0", "63MiB", "0.05G"] {
            let e = parse_device_memory(small).unwrap_err();
            assert!(e.contains("less than 64MiB"), "{small}: {e}");
        }
        assert!(parse_device_memory("8GB").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn logical_copies_share_their_device_budget() {
        let config = |limit, logical| GpuConfig {
            memory_limit: limit,
            logical_per_device: logical,
            ..GpuConfig::default()
        };
        assert_eq!(budget(&config(Some(1000), 1), 5000), 1000);
        assert_eq!(budget(&config(Some(1000), 2), 5000), 500);
        assert_eq!(budget(&config(Some(10_000), 1), 5000), 5000, "at most the device's memory");
        assert_eq!(budget(&config(None, 2), 80 << 30), 36 << 30);
    }

    /// An OpenCL device (POCL in CI) with `limit` bytes, or `None` with the
    /// reason printed (a panic instead with `MEDROLLUP_REQUIRE_OPENCL=1`).
    fn opencl_with(limit: Option<u64>) -> Option<GpuBackend> {
        opencl_config(GpuConfig { memory_limit: limit, ..GpuConfig::opencl_any() }, 1)
    }

    /// The first `devices` OpenCL devices, configured by `config`, or `None`
    /// as for [`opencl_with`].
    fn opencl_config(config: GpuConfig, devices: usize) -> Option<GpuBackend> {
        let b = GpuBackend::new(&GpuConfig { max_devices: devices, ..config });
        if b.device_count() >= devices {
            return Some(b);
        }
        let why =
            format!("{} of {devices} OpenCL devices ({})", b.device_count(), b.report().refused.join("; "));
        assert!(
            !std::env::var("MEDROLLUP_REQUIRE_OPENCL").is_ok_and(|v| v == "1"),
            "MEDROLLUP_REQUIRE_OPENCL=1 but {why}"
        );
        println!("skipped: {why}");
        None
    }

    /// OpenCL, with the G2 kernels allowed smaller work-groups than the rest
    /// (as on a device short of registers for them): a launch past a
    /// kernel's limit fails, as a driver's would.
    struct SmallG2Groups(opencl::OpenCl);

    impl runtime::Runtime for SmallG2Groups {
        type Buf = <opencl::OpenCl as runtime::Runtime>::Buf;
        fn label(&self) -> &str {
            self.0.label()
        }
        fn alloc(&self, bytes: usize) -> Result<Self::Buf, GpuError> {
            self.0.alloc(bytes)
        }
        fn upload(&self, buf: &mut Self::Buf, data: &[u8]) -> Result<(), GpuError> {
            self.0.upload(buf, data)
        }
        fn download(&self, buf: &Self::Buf, out: &mut [u8]) -> Result<(), GpuError> {
            self.0.download(buf, out)
        }
        fn sync(&self) -> Result<(), GpuError> {
            self.0.sync()
        }
        fn max_group(&self, kernel: &str) -> Result<usize, GpuError> {
            let max = self.0.max_group(kernel)?;
            Ok(if kernel.starts_with("G2_") { max.min(64) } else { max })
        }
        fn launch(
            &self,
            kernel: &str,
            groups: usize,
            group: usize,
            args: &[runtime::KArg<'_, Self::Buf>],
        ) -> Result<(), GpuError> {
            let max = self.max_group(kernel)?;
            if group > max {
                return Err(GpuError::Call {
                    device: self.label().into(),
                    op: format!("launching {kernel}"),
                    reason: format!("work-groups of {group} threads, past its limit of {max}"),
                });
            }
            self.0.launch(kernel, groups, group, args)
        }
    }

    /// The first OpenCL device (POCL in CI), or `None` with the reason
    /// printed (a panic instead with `MEDROLLUP_REQUIRE_OPENCL=1`).
    fn first_opencl() -> Option<opencl::ClDeviceInfo> {
        let info = opencl::list().ok().and_then(|l| l.into_iter().next());
        if info.is_none() {
            assert!(
                !std::env::var("MEDROLLUP_REQUIRE_OPENCL").is_ok_and(|v| v == "1"),
                "MEDROLLUP_REQUIRE_OPENCL=1 but no OpenCL device"
            );
            println!("skipped: no OpenCL device");
        }
        info
    }

    #[test]
    fn each_kernel_launches_within_its_own_work_group_limit() {
        let Some(info) = first_opencl() else { return };
        let rt = SmallG2Groups(opencl::OpenCl::new(&info, "opencl:0 small G2 groups".into()).unwrap());
        let meter = Arc::new(Meter::new("small G2 groups".into(), 1 << 30));
        let mut d = DeviceState::new(rt, meter, || Err(GpuError::Unsupported("not reopened here".into())));
        known_answer(&mut d).unwrap();
    }

    /// The memory a device takes once admitted (the known-answer test leaves
    /// no tables), and without cached tables, or `None` (skipped).
    fn admitted_memory() -> Option<(u64, u64)> {
        let probe = opencl_with(None)?;
        let admitted = probe.report().devices[0].memory_used;
        probe.m.slots[0].lock().drop_caches();
        Some((admitted, probe.report().devices[0].memory_used))
    }

    fn g1_points(n: usize) -> Vec<G1Affine> {
        kat_points::<ark_bn254::g1::Config>(n, &mut ark_std::test_rng())
    }

    fn g2_points(n: usize) -> Vec<G2Affine> {
        kat_points::<ark_bn254::g2::Config>(n, &mut ark_std::test_rng())
    }

    fn random_scalars(n: usize) -> Vec<Fr> {
        let mut rng = ark_std::test_rng();
        (0..n).map(|_| Fr::rand(&mut rng)).collect()
    }

    #[test]
    fn working_memory_estimates_bound_what_the_calls_take() {
        let Some(b) = opencl_with(None) else { return };
        let slot = &b.m.slots[0];
        // Up to four segment levels (40000 ones in one bucket).
        for (n, curve) in [
            (1, CurveId::G1),
            (700, CurveId::G1),
            (5000, CurveId::G1),
            (40_000, CurveId::G1),
            (700, CurveId::G2),
            (3000, CurveId::G2),
        ] {
            let (packed, want_random, want_ones) = match curve {
                CurveId::G1 => {
                    let g = g1_points(n);
                    let ones = vec![Fr::from(1u64); n];
                    let w = |s: &[Fr]| MsmValue::G1(cpu::msm(&g, s));
                    (layout::G1::pack(&g), w(&random_scalars(n)), w(&ones))
                }
                CurveId::G2 => {
                    let g = g2_points(n);
                    let ones = vec![Fr::from(1u64); n];
                    let w = |s: &[Fr]| MsmValue::G2(cpu::msm(&g, s));
                    (layout::G2::pack(&g), w(&random_scalars(n)), w(&ones))
                }
            };
            for merged in [false, true] {
                let mut ops = slot.lock();
                ops.load_bases(7, curve, &packed, n, merged).unwrap();
                // Random scalars fill every window; ones pile into one
                // bucket (the most segment levels).
                for (scalars, want) in
                    [(random_scalars(n), want_random), (vec![Fr::from(1u64); n], want_ones)]
                {
                    let before = slot.meter.used();
                    slot.meter.take_peak();
                    let got = ops.msm(&scalars, &[Target { id: 7, curve, offset: 0 }]).unwrap();
                    assert_eq!(got, [want]);
                    let took = slot.meter.take_peak() - before;
                    let bound = device::msm_working_bytes(n, curve, merged);
                    println!("{curve:?} MSM of {n} (merged {merged}): took {took} bytes, bound {bound}");
                    assert!(
                        took <= bound,
                        "{curve:?} MSM of {n} (merged {merged}) took {took} bytes, over the bound {bound}"
                    );
                    assert_eq!(slot.meter.used(), before, "every working buffer is given back");
                }
                ops.free_bases(7);
            }
        }
        // The quotient on a domain whose tables are not made yet.
        let n = 1 << 12;
        let (a, bv, c) = (random_scalars(n), random_scalars(n + 1)[1..].to_vec(), vec![Fr::zero(); n]);
        let mut want = [a.clone(), bv.clone(), c.clone()];
        for v in &mut want {
            cpu::ntt_in_place(v, NttDirection::Inverse, None);
            cpu::ntt_in_place(v, NttDirection::Forward, Some(Fr::GENERATOR));
        }
        let [mut wa, wb, wc] = want;
        crate::backend::pointwise_quotient(&mut wa, &wb, &wc);
        cpu::ntt_in_place(&mut wa, NttDirection::Inverse, Some(Fr::GENERATOR));
        let before = slot.meter.used();
        slot.meter.take_peak();
        let mut got = a;
        slot.lock().quotient(&mut got, &bv, &c).unwrap();
        assert_eq!(got, wa);
        let took = slot.meter.take_peak() - before;
        println!("quotient of {n}: took {took} bytes, bound {}", device::quotient_bytes(n));
        assert!(took <= device::quotient_bytes(n), "the quotient of {n} took {took} bytes");
    }

    #[test]
    fn bases_without_room_stay_on_the_host_and_their_msms_run_on_the_cpu() {
        let n = 2000;
        let (g1, g2, s) = (g1_points(n), g2_points(n), random_scalars(n));
        // What admission leaves taken.
        let Some((admitted, bare)) = admitted_memory() else { return };
        // Room for the G1 bases and an MSM over them, not for the G2 ones.
        let need_g1 = layout::G1::pack(&g1).len() as u64 + device::call_bytes(n, CurveId::G1, false);
        let Some(b) = opencl_with(Some(admitted + need_g1)) else { return };
        let (l1, l2) = (b.load_g1(&g1).unwrap(), b.load_g2(&g2).unwrap());
        assert_eq!((l1.resident(), l2.resident()), (vec![true], vec![false]));
        let out = crate::backend::msm_batch(&b, &[(&l1, &s)], &[(&l2, &s)]).unwrap();
        assert_eq!(out.g1[0].0, cpu::msm(&g1, &s));
        assert_eq!(out.g2[0].0, cpu::msm(&g2, &s));
        let r = b.report();
        let d = &r.devices[0];
        assert!(d.healthy && d.counters.errors == 0, "{r:?}");
        assert_eq!(d.counters.msm_points, n as u64, "the G1 MSM on the device: {r:?}");
        assert_eq!(r.cpu.msm_points, n as u64, "the G2 MSM on the CPU: {r:?}");
        assert_eq!(r.cpu.fallbacks, 1, "{r:?}");
        // The cached tables were given up in the attempt to fit G2's.
        assert_eq!(d.memory_used, bare + layout::G1::pack(&g1).len() as u64, "the G1 bases alone: {r:?}");
        // Bases that are dropped give their memory back.
        drop(l1);
        assert_eq!(b.report().devices[0].memory_used, bare);
    }

    #[test]
    fn precomputed_bases_give_up_their_multiples_for_bases_that_would_not_fit() {
        let (na, nb) = (2000, 1500);
        let (ga, gb) = (g1_points(na), g1_points(nb));
        let (sa, sb) = (random_scalars(na), random_scalars(nb));
        let Some((admitted, bare)) = admitted_memory() else { return };
        // Room for A precomputed (sets times its points) and the calls over
        // it, so that B (plain: shorter than precompute_min) fits only if A
        // gives up its multiples.
        let (plain_a, plain_b) = ((na * 64) as u64, (nb * 64) as u64);
        let sets = u64::from(device::windows(device::window_bits(na)));
        let budget = admitted + plain_a * sets + device::call_bytes(na, CurveId::G1, true);
        let config =
            GpuConfig { memory_limit: Some(budget), precompute_min: 1600, ..GpuConfig::opencl_any() };
        let Some(b) = opencl_config(config, 1) else { return };
        let la = b.load_g1(&ga).unwrap();
        assert_eq!(b.report().devices[0].memory_used, admitted + plain_a * sets, "A precomputed");
        let lb = b.load_g1(&gb).unwrap();
        assert_eq!((la.resident(), lb.resident()), (vec![true], vec![true]));
        // The cached tables went first, then A's multiples.
        assert_eq!(b.report().devices[0].memory_used, bare + plain_a + plain_b, "A plain, and B");
        assert_eq!(crate::backend::msm_g1(&b, &la, &sa).unwrap(), cpu::msm(&ga, &sa));
        assert_eq!(crate::backend::msm_g1(&b, &lb, &sb).unwrap(), cpu::msm(&gb, &sb));
        let r = b.report();
        assert_eq!((r.devices[0].counters.msm_points, r.cpu.msm_points), ((na + nb) as u64, 0), "{r:?}");
    }

    #[test]
    fn bases_that_fit_one_device_of_two_are_proved_there_not_on_the_cpu() {
        let Some(b) = opencl_config(GpuConfig { logical_per_device: 2, ..GpuConfig::opencl_any() }, 2) else {
            return;
        };
        let n = 3000;
        let (g1, g2, s) = (g1_points(n), g2_points(n), random_scalars(n));
        let shared = b.load_g1(&g1).unwrap();
        // Another program holds device 1's memory while the G2 bases load.
        let meter = b.m.slots[1].meter.clone();
        let ballast = meter.free();
        meter.take(ballast).unwrap();
        let lone = b.load_g2(&g2).unwrap();
        meter.give_back(ballast);
        assert_eq!((shared.resident(), lone.resident()), (vec![true, true], vec![true, false]));
        let out =
            crate::backend::msm_batch(&b, &[(&shared, &s), (&shared, &s[..n / 2])], &[(&lone, &s)]).unwrap();
        assert_eq!(out.g1[0].0, cpu::msm(&g1, &s));
        assert_eq!(out.g1[1].0, cpu::msm(&g1[..n / 2], &s[..n / 2]));
        assert_eq!(out.g2[0].0, cpu::msm(&g2, &s));
        let r = b.report();
        assert_eq!((r.cpu.msm_points, r.cpu.fallbacks), (0, 0), "nothing on the CPU: {r:?}");
        assert!(
            r.devices.iter().all(|d| d.healthy && d.counters.msm_points > 0),
            "both devices worked: {r:?}"
        );
    }

    #[test]
    fn a_device_that_fails_while_loading_bases_is_taken_out_of_service() {
        let config = GpuConfig { precompute_min: 1000, ..GpuConfig::opencl_any() };
        let Some(b) = opencl_config(config, 1) else { return };
        let n = 1500;
        let (g, s) = (g1_points(n), random_scalars(n));
        // Precomputing the bases launches a kernel, which fails.
        b.inject_fault(0, 0, Fault::Fails);
        let l = b.load_g1(&g).unwrap();
        let r = b.report();
        assert!(!r.devices[0].healthy && r.devices[0].counters.errors == 1, "{r:?}");
        assert_eq!(l.resident(), vec![false]);
        assert_eq!(crate::backend::msm_g1(&b, &l, &s).unwrap(), cpu::msm(&g, &s));
    }

    #[test]
    fn a_device_back_in_service_holds_every_bases_set_alive_again() {
        let Some(b) = opencl_with(None) else { return };
        let n = 1500;
        let (ga, gb, gc, s) = (g1_points(n), g1_points(n + 1), g2_points(n), random_scalars(n));
        let used = |b: &GpuBackend| b.report().devices[0].memory_used;
        let admitted = used(&b);
        let (la, lb) = (b.load_g1(&ga).unwrap(), b.load_g1(&gb).unwrap());
        let with_ab = used(&b);
        b.inject_fault(0, 0, Fault::Fails);
        assert_eq!(crate::backend::msm_g1(&b, &la, &s).unwrap(), cpu::msm(&ga, &s));
        assert_eq!(b.device_count(), 0);
        // While it is out: a set is loaded (not on it), another let go, and
        // A is lost on it (as a fault could spoil it).
        let lc = b.load_g2(&gc).unwrap();
        b.m.slots[0].lock().free_bases(la.s.id);
        assert_eq!(lc.resident(), vec![false]);
        drop(lb);
        b.inject_fault(0, usize::MAX, Fault::Fails);
        assert_eq!(b.readmit().back.len(), 1);
        // Back, with A loaded afresh and C loaded now; B's memory given back.
        assert_eq!((la.resident(), lc.resident()), (vec![true], vec![true]));
        let packed = |n: usize, bytes: usize| (n * bytes) as u64;
        assert_eq!(
            used(&b),
            with_ab - packed(n + 1, layout::G1::AFFINE_BYTES) + packed(n, layout::G2::AFFINE_BYTES),
            "A and C, once each (admitted: {admitted})"
        );
        let before = b.report();
        assert_eq!(crate::backend::msm_g1(&b, &la, &s).unwrap(), cpu::msm(&ga, &s));
        assert_eq!(crate::backend::msm_g2(&b, &lc, &s).unwrap(), cpu::msm(&gc, &s));
        let r = b.report();
        assert_eq!(r.devices[0].counters.msm_points - before.devices[0].counters.msm_points, 2 * n as u64);
        assert_eq!(r.cpu.msm_points, before.cpu.msm_points, "nothing more on the CPU: {r:?}");
    }

    #[test]
    fn a_device_whose_context_is_lost_is_back_once_opened_afresh() {
        let Some(b) = opencl_with(None) else { return };
        let n = 1500;
        let (g, g2, s) = (g1_points(n), g2_points(n), random_scalars(n));
        let used = |b: &GpuBackend| b.report().devices[0].memory_used;
        let (l, l2) = (b.load_g1(&g).unwrap(), b.load_g2(&g2).unwrap());
        let loaded = used(&b);
        // OpenCL has no safe way to lose a context for real (CUDA's test).
        assert!(matches!(b.lose_context(0), Err(GpuError::Unsupported(_))));
        // The context is lost at the MSM's first launch: the CPU finishes,
        // and every later launch on that context fails.
        b.inject_fault(0, 0, Fault::LosesContext);
        assert_eq!(crate::backend::msm_g1(&b, &l, &s).unwrap(), cpu::msm(&g, &s));
        assert_eq!(b.device_count(), 0);
        {
            let mut ops = b.m.slots[0].lock();
            let e = known_answer(ops.as_mut()).unwrap_err();
            assert!(e.to_string().contains("its context is lost"), "{e}");
        }
        // Readmission opens it afresh (the fault is not cleared by hand):
        // back, its sets loaded again in the new context, the old
        // context's buffers given back.
        let label = b.report().devices[0].label.clone();
        assert_eq!(b.readmit(), Readmission { back: vec![label], still_out: vec![] });
        let r = b.report();
        assert_eq!((r.devices[0].counters.reopened, r.devices[0].counters.errors), (1, 1), "{r:?}");
        assert_eq!((l.resident(), l2.resident()), (vec![true], vec![true]));
        assert_eq!(used(&b), loaded);
        let before = b.report();
        assert_eq!(crate::backend::msm_g1(&b, &l, &s).unwrap(), cpu::msm(&g, &s));
        assert_eq!(crate::backend::msm_g2(&b, &l2, &s).unwrap(), cpu::msm(&g2, &s));
        let after = b.report();
        assert_eq!(
            after.devices[0].counters.msm_points - before.devices[0].counters.msm_points,
            2 * n as u64
        );
        assert_eq!(after.cpu.msm_points, before.cpu.msm_points, "nothing more on the CPU: {after:?}");
        // A device in service is not opened again.
        assert_eq!(b.readmit(), Readmission::default());
        assert_eq!(b.report().devices[0].counters.reopened, 1);
    }

    #[test]
    fn a_device_that_cannot_be_opened_afresh_is_left_closed() {
        let Some(info) = first_opencl() else { return };
        let label = "opencl:0 reopened".to_string();
        let rt = opencl::OpenCl::new(&info, label.clone()).unwrap();
        let meter = Arc::new(Meter::new(label.clone(), 1 << 30));
        // The first attempt to open it afresh fails; the next succeeds.
        let mut attempts = 0;
        let (again, named) = (info.clone(), label.clone());
        let open = move || {
            attempts += 1;
            if attempts == 1 {
                return Err(GpuError::Call {
                    device: named.clone(),
                    op: "creating a context".into(),
                    reason: "refused".into(),
                });
            }
            opencl::OpenCl::new(&again, named.clone())
        };
        let mut d = DeviceState::new(rt, meter.clone(), open);
        let n = 700;
        let (g, s) = (g1_points(n), random_scalars(n));
        d.load_bases(7, CurveId::G1, &layout::G1::pack(&g), n, false).unwrap();
        let target = [Target { id: 7, curve: CurveId::G1, offset: 0 }];
        let want = vec![MsmValue::G1(cpu::msm(&g, &s))];
        assert!(meter.used() > 0);
        d.inject_fault(0, Fault::LosesContext);
        assert!(d.msm(&s, &target).is_err());
        let e = d.reopen().unwrap_err();
        assert!(e.to_string().contains("creating a context failed: refused"), "{e}");
        // Its buffers were given back and its old context closed first.
        assert!(!d.holds(7) && meter.used() == 0);
        let e = d.load_bases(7, CurveId::G1, &layout::G1::pack(&g), n, false).unwrap_err();
        assert!(e.to_string().contains("the device is closed (it could not be opened afresh)"), "{e}");
        assert!(known_answer(&mut d).is_err());
        // Opened afresh: a new runtime, whole (the fault was not cleared by hand).
        d.reopen().unwrap();
        known_answer(&mut d).unwrap();
        d.load_bases(7, CurveId::G1, &layout::G1::pack(&g), n, false).unwrap();
        assert_eq!(d.msm(&s, &target).unwrap(), want);
    }

    #[test]
    fn a_panic_in_a_device_call_takes_the_device_out_and_the_cpu_finishes() {
        let Some(b) = opencl_with(None) else { return };
        let n = 1500;
        let (g, s) = (g1_points(n), random_scalars(n));
        let l = b.load_g1(&g).unwrap();
        assert!(b.offloads_msms(), "a device in service takes the MSMs off the host");
        b.inject_fault(0, 2, Fault::Panics);
        assert_eq!(crate::backend::msm_g1(&b, &l, &s).unwrap(), cpu::msm(&g, &s));
        let r = b.report();
        let d = &r.devices[0];
        assert!(!d.healthy && d.counters.errors == 1 && d.counters.fallbacks == 1, "{r:?}");
        assert!(!b.m.slots[0].ops.is_poisoned(), "the device's lock is let go cleanly");
        assert!(!b.offloads_msms(), "with no device in service the MSMs run on the host");
        // A panic in an in-place call before its result is copied: the
        // input is whole and the CPU takes over.
        b.inject_fault(0, usize::MAX, Fault::Fails);
        assert_eq!(b.readmit().back.len(), 1);
        assert!(b.offloads_msms());
        b.inject_fault(0, 0, Fault::Panics);
        let mut v = random_scalars(1024);
        let mut want = v.clone();
        cpu::ntt_in_place(&mut want, NttDirection::Forward, None);
        crate::backend::ntt(&b, &mut v, NttDirection::Forward, None).unwrap();
        assert_eq!(v, want);
        let r = b.report();
        assert_eq!(
            (b.device_count(), r.devices[0].counters.errors, r.cpu.ntt_elements),
            (0, 2, 1024),
            "{r:?}"
        );
        // One in the copy over the input: the call fails, naming the device
        // (the worker proves again without it).
        b.inject_fault(0, usize::MAX, Fault::Fails);
        assert_eq!(b.readmit().back.len(), 1);
        b.inject_fault(0, 0, Fault::PanicsInCopy);
        let e = crate::backend::ntt(&b, &mut v, NttDirection::Forward, None).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("failed while copying its result back, over the input: panicked: "), "{e}");
        assert!(e.contains("injected panic in a copy"), "{e}");
        assert_eq!((b.device_count(), b.report().devices[0].counters.errors), (0, 3));
    }

    #[test]
    fn bases_a_device_lost_get_no_more_work_there() {
        let Some(b) = opencl_config(GpuConfig { logical_per_device: 2, ..GpuConfig::opencl_any() }, 2) else {
            return;
        };
        let n = 3000;
        let (g, s) = (g1_points(n), random_scalars(n));
        let l = b.load_g1(&g).unwrap();
        // Device 0 loses the set (as when rearranging its memory failed).
        b.m.slots[0].lock().free_bases(l.s.id);
        let jobs = [(&l, &s[..]), (&l, &s[..n / 2])];
        let want = [cpu::msm(&g, &s), cpu::msm(&g[..n / 2], &s[..n / 2])];
        let got = |b: &GpuBackend| -> Vec<G1Projective> {
            crate::backend::msm_batch(b, &jobs, &[]).unwrap().g1.into_iter().map(|(v, _)| v).collect()
        };
        assert_eq!(got(&b), want);
        let first = b.report();
        let d0 = &first.devices[0];
        assert!(d0.healthy && d0.counters.errors == 0, "not a fault: {first:?}");
        assert_eq!(d0.counters.fallbacks, 1, "its unit went to the CPU: {first:?}");
        assert_eq!(l.resident(), vec![false, true], "the loss is remembered");
        // The next batch goes to the device that holds the set, and no unit
        // is tried on device 0.
        assert_eq!(got(&b), want);
        let r = b.report();
        assert_eq!(r.devices[0].counters.fallbacks, 1, "{r:?}");
        assert_eq!(r.cpu.msm_points, first.cpu.msm_points, "nothing more on the CPU: {r:?}");
        assert_eq!(
            r.devices[1].counters.msm_points - first.devices[1].counters.msm_points,
            (n + n / 2) as u64,
            "both MSMs on device 1: {r:?}"
        );
    }

    #[test]
    fn out_of_memory_in_a_call_sends_it_to_the_cpu_and_keeps_the_device() {
        let Some(b) = opencl_with(None) else { return };
        let n = 1500;
        let (g, s) = (g1_points(n), random_scalars(n));
        let l = b.load_g1(&g).unwrap();
        // Another program takes all but a little of the device's memory.
        let meter = b.m.slots[0].meter.clone();
        let ballast = meter.free() - 1024;
        meter.take(ballast).unwrap();
        assert_eq!(crate::backend::msm_g1(&b, &l, &s).unwrap(), cpu::msm(&g, &s));
        let mut v = random_scalars(256);
        let mut want = v.clone();
        cpu::ntt_in_place(&mut want, NttDirection::Forward, None);
        crate::backend::ntt(&b, &mut v, NttDirection::Forward, None).unwrap();
        assert_eq!(v, want);
        let r = b.report();
        let d = &r.devices[0];
        assert!(d.healthy && d.counters.errors == 0, "out of memory is no fault: {r:?}");
        assert_eq!((d.counters.fallbacks, r.cpu.fallbacks), (2, 2), "{r:?}");
        assert_eq!(
            (d.counters.msm_points, r.cpu.msm_points, r.cpu.ntt_elements),
            (0, n as u64, 256),
            "{r:?}"
        );
        // With the memory back, the device works again.
        meter.give_back(ballast);
        assert_eq!(crate::backend::msm_g1(&b, &l, &s).unwrap(), cpu::msm(&g, &s));
        assert_eq!(b.report().devices[0].counters.msm_points, n as u64);
    }

    #[test]
    fn a_proof_on_a_device_too_small_for_its_key_is_ark_groth16s() {
        use ark_bn254::Bn254;
        use ark_groth16::Groth16;
        use medrollup_circuits::circuit::BatchCircuit;
        use medrollup_circuits::keys::{self, CircuitShape};

        let Some((admitted, _)) = admitted_memory() else { return };
        let shape = CircuitShape { batch_size: 1, levels: 4 };
        let (pk, w) = (keys::setup(shape, Some(5)).unwrap(), medrollup_circuits::sample::batch(shape));
        // Room for the first bases the key loads (A's) and the calls over
        // them, not for the next (B's in G1, as long).
        let len = pk.a_query.len() - 1;
        let need = (len * layout::G1::AFFINE_BYTES) as u64 + device::call_bytes(len, CurveId::G1, false);
        let Some(b) = opencl_with(Some(admitted + need)) else { return };
        let key = crate::groth16::LoadedKey::load(&b, pk.clone()).unwrap();
        let mut rng = ark_std::test_rng();
        let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
        let (ours, _) = crate::groth16::prove(&b, &key, BatchCircuit::new(w.clone()), r, s).unwrap();
        let theirs = Groth16::<Bn254>::create_proof_with_reduction(BatchCircuit::new(w), &pk, r, s).unwrap();
        assert_eq!(ours, theirs);
        let report = b.report();
        let d = &report.devices[0];
        assert!(d.healthy && d.counters.errors == 0, "{report:?}");
        assert!(d.counters.msm_points >= len as u64, "A's MSM on the device: {report:?}");
        assert!(report.cpu.msm_points >= 2 * len as u64, "B's MSMs on the CPU: {report:?}");
    }
}
