//! The CUDA runtime: cudarc with dynamic loading (nothing CUDA is needed to
//! build), the kernels compiled at run time by NVRTC and cached on disk by
//! source hash and GPU architecture.
//!
//! cudarc panics when libcuda or libnvrtc is missing, so every entry point
//! probes for them first and answers a clean [`GpuError::NoCuda`].
#![allow(unsafe_code)]

use super::runtime::{GpuError, KArg, Runtime};
use super::source::{self, Dialect};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn driver_present() -> bool {
    // SAFETY: only tries to open the library; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether libnvrtc can be loaded (the compile check needs only this).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The number of CUDA devices, or why there is none.
pub(crate) fn device_count() -> Result<usize, GpuError> {
    if !driver_present() {
        return Err(GpuError::NoCuda(
            "libcuda could not be loaded (no NVIDIA driver on this machine)".into(),
        ));
    }
    if !nvrtc_present() {
        return Err(GpuError::NoCuda(
            "libnvrtc could not be loaded: install CUDA's NVRTC (or PyPI nvidia-cuda-nvrtc-cu12) and put \
             its lib folder on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    match CudaContext::device_count() {
        Ok(0) => Err(GpuError::NoCuda("the driver lists no device".into())),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(GpuError::NoCuda(format!("the driver found no usable device ({e})"))),
    }
}

/// Compiles the CUDA dialect of the kernels with NVRTC for `arch`: a virtual
/// architecture ("compute_90") gives PTX text, which the driver compiles
/// when it loads it; a real one ("sm_90") gives a CUBIN, ready to load.
/// Through `cache` when given: a file named by the hash of the source, the
/// architecture and NVRTC's version, holding the code and its SHA-256 (a
/// file that does not match is compiled afresh).
pub fn compile_kernels(portable: bool, arch: &str, cache: Option<&Path>) -> Result<Vec<u8>, GpuError> {
    if !nvrtc_present() {
        return Err(GpuError::NoCuda("libnvrtc could not be loaded".into()));
    }
    let src = source::source(Dialect::Cuda { portable });
    let cached = cache.map(|d| cache_file(d, portable, arch));
    if let Some(path) = &cached
        && let Ok(file) = std::fs::read(path)
    {
        match checked_code(file) {
            Some(code) => return Ok(code),
            None => {
                tracing::warn!(file = %path.display(), "a cached kernel file is damaged; compiling afresh");
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let (code, _) = nvrtc_compile(&src, arch, &[])?;
    if let (Some(path), Some(dir)) = (&cached, cache) {
        // A cache that cannot be written only costs a compilation next time.
        // Named for this file, process and thread: two compilations at once
        // never write one temporary file.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("kernels");
        let tmp = dir.join(format!(".{name}.{}.{:?}.tmp", std::process::id(), std::thread::current().id()));
        let mut file = code.clone();
        file.extend_from_slice(&Sha256::digest(&code));
        if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, &file).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    Ok(code)
}

/// The cache's file for the kernels compiled for `arch` (see
/// [`compile_kernels`]).
pub fn cache_file(dir: &Path, portable: bool, arch: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(source::source(Dialect::Cuda { portable }).as_bytes());
    h.update(arch.as_bytes());
    h.update(nvrtc_version().as_bytes());
    dir.join(format!("medrollup-{arch}-{}.bin", hex::encode(h.finalize())))
}

/// A cache file's code, if its SHA-256 (its last 32 bytes) matches.
fn checked_code(mut file: Vec<u8>) -> Option<Vec<u8>> {
    let at = file.len().checked_sub(32)?;
    let sum = file.split_off(at);
    (Sha256::digest(&file).as_slice() == sum.as_slice()).then_some(file)
}

/// NVRTC's version ("12.4"): part of the cache's key, since another
/// compiler gives other code (which the driver may not load).
fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC writes the two integers it is given.
    match unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }.result() {
        Ok(()) => format!("{major}.{minor}"),
        Err(_) => "unknown".into(),
    }
}

/// The architectures NVRTC can compile for (as 90 for sm_90), empty if it
/// cannot say.
fn nvrtc_archs() -> Vec<i32> {
    use cudarc::nvrtc::sys;
    let mut n = 0;
    // SAFETY: NVRTC writes the count, then that many integers into a buffer
    // of that length.
    unsafe {
        if sys::nvrtcGetNumSupportedArchs(&mut n).result().is_err() || n <= 0 {
            return Vec::new();
        }
        let mut archs = vec![0; n as usize];
        if sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()).result().is_err() {
            return Vec::new();
        }
        archs
    }
}

/// The virtual architecture to compile PTX for when NVRTC cannot make a
/// CUBIN for a device of compute capability `device`: the newest it knows
/// that the device runs (the driver compiles that PTX for the device), or the
/// device's own if NVRTC cannot say.
pub(crate) fn ptx_arch(device: (i32, i32), supported: &[i32]) -> String {
    let own = device.0 * 10 + device.1;
    let arch = if supported.is_empty() {
        own
    } else {
        supported.iter().copied().filter(|&a| a <= own).max().unwrap_or(own)
    };
    format!("compute_{arch}")
}

/// The resource use ptxas reports for each kernel (registers, stack, spills)
/// of the CUDA dialect compiled for `arch` (a real architecture, "sm_90").
pub fn resource_report(portable: bool, arch: &str) -> Result<String, GpuError> {
    nvrtc_compile(&source::source(Dialect::Cuda { portable }), arch, &["--ptxas-options=-v"])
        .map(|(_, log)| log)
}

fn nvrtc_compile(src: &str, arch: &str, extra: &[&str]) -> Result<(Vec<u8>, String), GpuError> {
    use cudarc::nvrtc::{result, sys};
    let fail = |log: String| GpuError::Compile { compiler: "NVRTC", device: arch.into(), log };
    let csrc = CString::new(src).map_err(|_| fail("the source holds a NUL byte".into()))?;
    let prog = result::create_program(&csrc, None).map_err(|e| fail(format!("{e:?}")))?;
    let mut opts = vec![format!("--gpu-architecture={arch}")];
    opts.extend(extra.iter().map(|o| o.to_string()));
    // SAFETY: `prog` was created above and is destroyed once, below; the
    // buffers handed to NVRTC are as long as the sizes it reported.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let log = result::get_program_log(prog)
            .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(fail(format!("{e:?}: {log}"))),
            Ok(()) if arch.starts_with("sm_") => {
                let mut size = 0usize;
                let code = sys::nvrtcGetCUBINSize(prog, &mut size).result().and_then(|()| {
                    let mut code = vec![0u8; size];
                    sys::nvrtcGetCUBIN(prog, code.as_mut_ptr().cast()).result().map(|()| code)
                });
                code.map(|c| (c, log)).map_err(|e| fail(format!("reading the CUBIN: {e:?}")))
            }
            Ok(()) => result::get_ptx(prog)
                .map(|p| (CStr::from_ptr(p.as_ptr()).to_bytes().to_vec(), log))
                .map_err(|e| fail(format!("reading the PTX: {e:?}"))),
        }
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// The default kernel cache: `$MEDROLLUP_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/medrollup/kernels`, else `~/.cache/medrollup/kernels`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("MEDROLLUP_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("medrollup").join("kernels"))
}

/// A kernel that traps: its launch loses the context it runs in (a sticky
/// error: every later call there fails), as a crashed kernel's does.
pub(crate) const TRAP_SOURCE: &str =
    "extern \"C\" __global__ void medrollup_trap() { asm volatile(\"trap;\"); }";

/// [`TRAP_SOURCE`] as PTX for `arch` ("compute_90").
pub(crate) fn trap_ptx(arch: &str) -> Result<String, GpuError> {
    let (ptx, _) = nvrtc_compile(TRAP_SOURCE, arch, &[])?;
    String::from_utf8(ptx).map_err(|_| GpuError::Compile {
        compiler: "NVRTC",
        device: arch.into(),
        log: "the PTX is not text".into(),
    })
}

/// What a CUDA device is.
#[derive(Debug, Clone)]
pub(crate) struct CudaDeviceInfo {
    pub name: String,
    pub memory: u64,
    pub compute_units: u32,
    pub arch: (i32, i32),
}

/// Copies at least this large go through pinned staging buffers.
const STAGED: usize = 1 << 20;
/// The staging buffers' size: a copy moves in pieces this large, the host
/// filling (or draining) one buffer while the device reads (or writes) the
/// other.
const STAGE: usize = 8 << 20;

/// A pinned host buffer and the event after the last copy that used it.
struct Stage {
    buf: PinnedHostSlice<u8>,
    done: Option<CudaEvent>,
}

impl Stage {
    fn new(ctx: &Arc<CudaContext>, write_combined: bool) -> Result<Self, cudarc::driver::DriverError> {
        // Write-combined memory is fast for the host to write and the device
        // to read, and slow for the host to read: uploads only.
        let flags = if write_combined { cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED } else { 0 };
        // SAFETY: the buffer is written before it is read (by the host for
        // uploads, by the device for downloads).
        let buf = unsafe { ctx.alloc_pinned_with_flags::<u8>(STAGE, flags) }?;
        Ok(Self { buf, done: None })
    }

    /// The buffer, once the device is done with it.
    fn ready(&mut self) -> Result<&mut [u8], cudarc::driver::DriverError> {
        if let Some(e) = self.done.take() {
            e.synchronize()?;
        }
        self.buf.as_mut_slice()
    }
}

/// Two staging buffers each way, made with the device.
#[derive(Default)]
struct Staging {
    up: Vec<Stage>,
    down: Vec<Stage>,
}

/// The kernels loaded on one device, with a stream of their own.
pub(crate) struct Cuda {
    label: String,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    staging: Mutex<Staging>,
}

/// Lets the stream-ordered allocator keep freed memory for the next
/// allocation instead of returning it to the driver at every
/// synchronisation (its default): an MSM allocates and frees a dozen
/// buffers, some of tens of megabytes.
fn keep_freed_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    let mut pool = std::mem::MaybeUninit::<sys::CUmemoryPool>::uninit();
    // SAFETY: plain driver calls on this context's device; the attribute
    // value is a u64, as the driver API specifies for the release threshold.
    unsafe {
        if ctx.bind_to_thread().is_ok()
            && sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), ctx.cu_device()).result().is_ok()
        {
            let mut threshold = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool.assume_init(),
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            );
        }
    }
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Cuda {
    /// Opens device `ordinal` in a new context (call [`device_count`]
    /// first), compiles (or reads from `cache`) and loads the kernels.
    pub(crate) fn new(
        ordinal: usize,
        portable: bool,
        cache: Option<&Path>,
    ) -> Result<(Self, CudaDeviceInfo), GpuError> {
        let fail = |op: &str, e: &dyn std::fmt::Display| GpuError::Call {
            device: format!("cuda:{ordinal}"),
            op: op.into(),
            reason: e.to_string(),
        };
        // A context of its own, not the device's primary one: a fault that
        // loses it (CUDA's sticky errors: an illegal address, a trap) loses
        // nothing else, and the device is brought back with a new one (see
        // `DeviceOps::reopen`); the primary context would stay lost while
        // anything in the process held it. Logical copies of one device each
        // have their own, so their kernels take turns rather than overlap.
        let ctx = CudaContext::new_non_primary(ordinal, 0).map_err(|e| fail("opening the device", &e))?;
        let arch = ctx.compute_capability().map_err(|e| fail("reading its architecture", &e))?;
        let info = CudaDeviceInfo {
            name: ctx.name().map_err(|e| fail("reading its name", &e))?,
            memory: ctx.total_mem().map_err(|e| fail("reading its memory", &e))? as u64,
            compute_units: ctx
                .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .map_err(|e| fail("reading its multiprocessors", &e))? as u32,
            arch,
        };
        let label = format!("cuda:{ordinal} {}", info.name);
        // CUBIN for the device's own architecture (cached, so the compiler
        // runs once per source and machine); PTX for the driver to compile
        // if NVRTC cannot target it.
        let sm = format!("sm_{}{}", arch.0, arch.1);
        let load_cubin = || {
            let cubin = compile_kernels(portable, &sm, cache)?;
            ctx.load_module(Ptx::from_binary(cubin)).map_err(|e| fail("loading the kernels", &e))
        };
        let was_cached = cache.is_some_and(|dir| cache_file(dir, portable, &sm).exists());
        let cubin = load_cubin().or_else(|e| match cache {
            // A cached CUBIN the driver does not load is made afresh, once.
            Some(dir) if was_cached && !matches!(e, GpuError::Compile { .. }) => {
                tracing::warn!(device = %label, error = %e, "the cached kernels did not load; compiling afresh");
                let _ = std::fs::remove_file(cache_file(dir, portable, &sm));
                load_cubin()
            }
            _ => Err(e),
        });
        let module = match cubin {
            Ok(module) => module,
            Err(e) => {
                let compute = ptx_arch(arch, &nvrtc_archs());
                tracing::warn!(device = %label, error = %e, ptx = %compute, "no CUBIN; loading PTX");
                let ptx = compile_kernels(portable, &compute, cache)?;
                let text = String::from_utf8(ptx)
                    .map_err(|_| fail("loading the kernels", &"the PTX is not text"))?;
                ctx.load_module(Ptx::from_src(text)).map_err(|e| fail("loading the kernels", &e))?
            }
        };
        let mut funcs = HashMap::new();
        for k in source::KERNELS {
            funcs.insert(*k, module.load_function(k).map_err(|e| fail(&format!("loading {k}"), &e))?);
        }
        let stream = ctx.new_stream().map_err(|e| fail("creating a stream", &e))?;
        keep_freed_memory(&ctx);
        // The staging buffers are made now: a download that failed to make
        // one would have lost nothing, but would be taken for a lost output.
        let mut staging = Staging::default();
        for _ in 0..2 {
            staging.up.push(Stage::new(&ctx, true).map_err(|e| fail("pinning staging memory", &e))?);
            staging.down.push(Stage::new(&ctx, false).map_err(|e| fail("pinning staging memory", &e))?);
        }
        Ok((Self { label, stream, funcs, staging: Mutex::new(staging) }, info))
    }

    fn err(&self, op: &str, e: impl std::fmt::Display) -> GpuError {
        GpuError::Call { device: self.label.clone(), op: op.into(), reason: e.to_string() }
    }

    fn func(&self, name: &str) -> Result<&CudaFunction, GpuError> {
        self.funcs.get(name).ok_or_else(|| self.err("finding a kernel", format!("no kernel {name}")))
    }
}

impl Runtime for Cuda {
    type Buf = CudaSlice<u8>;

    fn label(&self) -> &str {
        &self.label
    }

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>, GpuError> {
        // SAFETY: the buffers are written (by a copy or a kernel) before they
        // are read; the drivers never read memory they did not write.
        unsafe { self.stream.alloc::<u8>(bytes.max(16)) }.map_err(|e| {
            if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                GpuError::OutOfMemory {
                    device: self.label.clone(),
                    detail: format!("{bytes} bytes wanted, and the driver said {e}"),
                }
            } else {
                self.err(&format!("allocating {bytes} bytes"), e)
            }
        })
    }

    fn upload(&self, buf: &mut CudaSlice<u8>, data: &[u8]) -> Result<(), GpuError> {
        if data.is_empty() {
            return Ok(());
        }
        let e = |e| self.err("copying to the device", e);
        if data.len() < STAGED {
            let mut view = buf.slice_mut(0..data.len());
            return self.stream.memcpy_htod(data, &mut view).map_err(e);
        }
        // Pageable memory copies at a fraction of the bus's speed: through
        // two pinned buffers in turn, the host filling one (on all cores)
        // while the device reads the other.
        let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        for (k, piece) in data.chunks(STAGE).enumerate() {
            let stage = &mut staging.up[k % 2];
            let host = &mut stage.ready().map_err(e)?[..piece.len()];
            host.par_chunks_mut(1 << 18)
                .zip(piece.par_chunks(1 << 18))
                .for_each(|(d, s)| d.copy_from_slice(s));
            let mut view = buf.slice_mut(k * STAGE..k * STAGE + piece.len());
            // The source is pinned: the copy runs after the call returns, and
            // the event says when the buffer may be filled again.
            self.stream.memcpy_htod(&*host, &mut view).map_err(e)?;
            stage.done = Some(self.stream.record_event(None).map_err(e)?);
        }
        Ok(())
    }

    fn download(&self, buf: &CudaSlice<u8>, out: &mut [u8]) -> Result<(), GpuError> {
        if out.is_empty() {
            return Ok(());
        }
        let e = |e| self.err("copying from the device", e);
        if out.len() < STAGED {
            let view = buf.slice(0..out.len());
            self.stream.memcpy_dtoh(&view, out).map_err(e)?;
            return self.stream.synchronize().map_err(|e| self.err("waiting for the device", e));
        }
        let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        let total = out.len();
        let pieces = total.div_ceil(STAGE);
        let len = |k: usize| STAGE.min(total - k * STAGE);
        // Piece k + 1 is on its way while the host drains piece k.
        let start = |k: usize, stage: &mut Stage| -> Result<(), GpuError> {
            let host = &mut stage.ready().map_err(e)?[..len(k)];
            let view = buf.slice(k * STAGE..k * STAGE + len(k));
            self.stream.memcpy_dtoh(&view, host).map_err(e)?;
            stage.done = Some(self.stream.record_event(None).map_err(e)?);
            Ok(())
        };
        start(0, &mut staging.down[0])?;
        for k in 0..pieces {
            if k + 1 < pieces {
                start(k + 1, &mut staging.down[(k + 1) % 2])?;
            }
            let host = &staging.down[k % 2].ready().map_err(e)?[..len(k)];
            out[k * STAGE..k * STAGE + len(k)]
                .par_chunks_mut(1 << 18)
                .zip(host.par_chunks(1 << 18))
                .for_each(|(d, s)| d.copy_from_slice(s));
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(|e| self.err("waiting for the device", e))
    }

    fn max_group(&self, kernel: &str) -> Result<usize, GpuError> {
        let f = self.func(kernel)?;
        f.get_attribute(cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
            .map(|v| v as usize)
            .map_err(|e| self.err("querying a kernel", e))
    }

    fn launch(
        &self,
        kernel: &str,
        groups: usize,
        group: usize,
        args: &[KArg<'_, CudaSlice<u8>>],
    ) -> Result<(), GpuError> {
        let f = self.func(kernel)?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                KArg::Buf(x) => b.arg(*x),
                KArg::U32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (groups as u32, 1, 1),
            block_dim: (group as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature (buffers for
        // pointers, u32 for u32); every buffer outlives its use on the stream
        // (frees are stream-ordered).
        unsafe { b.launch(cfg) }.map(drop).map_err(|e| self.err(&format!("launching {kernel}"), e))
    }

    fn trim(&self) {
        use cudarc::driver::sys;
        let ctx = self.stream.context();
        let mut pool = std::mem::MaybeUninit::<sys::CUmemoryPool>::uninit();
        // The pool is the device's, shared by every context on it: other
        // logical copies lose their free blocks too (their next allocations
        // grow it again). Worth it after a reopen only.
        // SAFETY: plain driver calls on this context's device; trimming
        // releases only memory the pool holds free.
        unsafe {
            if ctx.bind_to_thread().is_ok()
                && sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), ctx.cu_device()).result().is_ok()
            {
                let _ = sys::cuMemPoolTrimTo(pool.assume_init(), 0);
            }
        }
    }

    fn driver_memory(&self) -> Option<(u64, u64)> {
        let (free, total) = self.stream.context().mem_get_info().ok()?;
        Some((free as u64, total as u64))
    }

    fn lose_context(&self) -> Result<(), GpuError> {
        let ctx = self.stream.context();
        let arch = ctx.compute_capability().map_err(|e| self.err("reading its architecture", e))?;
        let ptx = trap_ptx(&ptx_arch(arch, &nvrtc_archs()))?;
        let module =
            ctx.load_module(Ptx::from_src(ptx)).map_err(|e| self.err("loading the trap kernel", e))?;
        let f = module.load_function("medrollup_trap").map_err(|e| self.err("loading the trap kernel", e))?;
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the kernel takes no arguments and touches no memory.
        let launched = unsafe { self.stream.launch_builder(&f).launch(cfg) };
        match launched.and_then(|_| self.stream.synchronize()) {
            Err(e) => {
                tracing::warn!(device = %self.label, error = %e, "context lost on purpose (a kernel that traps)");
                Ok(())
            }
            Ok(()) => Err(self.err("losing its context", "a kernel that traps ran without an error")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_falls_back_to_the_newest_architecture_nvrtc_knows_that_the_device_runs() {
        // An NVRTC older than the device: the newest it knows below it.
        assert_eq!(ptx_arch((10, 0), &[75, 80, 86, 89, 90]), "compute_90");
        assert_eq!(ptx_arch((8, 9), &[75, 80, 86, 89, 90]), "compute_89");
        assert_eq!(ptx_arch((8, 7), &[75, 80, 86, 89, 90]), "compute_86");
        // Nothing it knows runs there, or it cannot say: the device's own.
        assert_eq!(ptx_arch((7, 0), &[75, 80]), "compute_70");
        assert_eq!(ptx_arch((9, 0), &[]), "compute_90");
    }

    #[test]
    fn nvrtc_compiles_the_trap_kernel() {
        if !nvrtc_present() {
            assert!(
                !std::env::var("MEDROLLUP_REQUIRE_NVRTC").is_ok_and(|v| v == "1"),
                "MEDROLLUP_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded"
            );
            println!("skipped: libnvrtc cannot be loaded");
            return;
        }
        let ptx = trap_ptx("compute_90").unwrap();
        assert!(ptx.contains(".entry medrollup_trap(") && ptx.contains("trap;"), "{ptx}");
    }

    #[test]
    fn a_cache_file_is_its_code_and_the_code_hash() {
        let code = b"PTX text".to_vec();
        let mut file = code.clone();
        file.extend_from_slice(&Sha256::digest(&code));
        assert_eq!(checked_code(file.clone()), Some(code));
        let mut spoilt = file.clone();
        spoilt[2] ^= 1;
        assert_eq!(checked_code(spoilt), None);
        assert_eq!(checked_code(file[..20].to_vec()), None, "cut short");
        assert_eq!(checked_code(Vec::new()), None);
    }
}
