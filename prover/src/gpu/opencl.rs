//! The OpenCL runtime (opencl3, which loads libOpenCL at run time, so nothing
//! OpenCL is needed to build). In CI it runs the kernels on the CPU through
//! POCL; on a machine with GPUs, through their vendors' drivers.
#![allow(unsafe_code)]

use super::runtime::{GpuError, KArg, Runtime};
use super::source::{self, Dialect};
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::{CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU, Device, get_all_devices};
use opencl3::error_codes::{
    CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY, CL_OUT_OF_RESOURCES, ClError,
};
use opencl3::kernel::{ExecuteKernel, Kernel};
use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::{CL_BLOCKING, cl_uint};
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::Mutex;

/// An OpenCL device as listed, before its program is built.
#[derive(Debug, Clone)]
pub(crate) struct ClDeviceInfo {
    pub id: opencl3::types::cl_device_id,
    pub name: String,
    pub memory: u64,
    pub compute_units: u32,
    pub is_cpu: bool,
}

// SAFETY: a cl_device_id is an opaque handle that OpenCL lets any thread use.
unsafe impl Send for ClDeviceInfo {}

/// Every device of every OpenCL platform, or why there is none.
///
/// One discovery at a time in a process: POCL's first platform query is not
/// safe to race (seen: a concurrent query answered no device at all).
pub(crate) fn list() -> Result<Vec<ClDeviceInfo>, GpuError> {
    static DISCOVERY: Mutex<()> = Mutex::new(());
    let _one = DISCOVERY.lock().unwrap_or_else(|p| p.into_inner());
    if !cl3::is_opencl_runtime_available() {
        return Err(GpuError::NoOpenCl(
            "libOpenCL.so.1 could not be loaded (install an ICD loader and a driver, e.g. Debian's \
             ocl-icd-libopencl1 and pocl-opencl-icd)"
                .into(),
        ));
    }
    let ids = get_all_devices(CL_DEVICE_TYPE_ALL)
        .map_err(|e| GpuError::NoOpenCl(format!("no platform answered ({e})")))?;
    if ids.is_empty() {
        return Err(GpuError::NoOpenCl("the platforms list no device".into()));
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let d = Device::new(id);
            ClDeviceInfo {
                id,
                name: d.name().unwrap_or_else(|_| "unnamed".into()).trim().to_string(),
                memory: d.global_mem_size().unwrap_or(0),
                compute_units: d.max_compute_units().unwrap_or(0),
                is_cpu: d.dev_type().is_ok_and(|t| t & CL_DEVICE_TYPE_CPU != 0),
            }
        })
        .collect())
}

/// The program built for one device, with its own context and queue (so that
/// one physical device can act as several logical ones). Closed (when the
/// device is opened afresh) without a panic: see [`release`].
pub(crate) struct OpenCl {
    label: String,
    device: Device,
    context: ManuallyDrop<Context>,
    queue: ManuallyDrop<CommandQueue>,
    program: ManuallyDrop<Program>,
    kernels: Mutex<HashMap<String, Kernel>>,
}

/// Runs a release (an opencl3 `Drop`, which panics when the driver refuses
/// it, as a driver may after a device fault) with the panic caught and
/// logged: a second panic while one unwinds would abort the worker, and
/// what a driver refused to release goes with its context.
fn release(label: &str, what: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let error = super::device::panic_message(p.as_ref());
        tracing::warn!(device = %label, what, %error, "the OpenCL driver refused a release");
    }
}

impl Drop for OpenCl {
    fn drop(&mut self) {
        let kernels = std::mem::take(self.kernels.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (name, k) in kernels {
            release(&self.label, &name, || drop(k));
        }
        // SAFETY: each is dropped once, here, the queue and the program
        // before the context they belong to.
        unsafe {
            release(&self.label, "the queue", || ManuallyDrop::drop(&mut self.queue));
            release(&self.label, "the program", || ManuallyDrop::drop(&mut self.program));
            release(&self.label, "the context", || ManuallyDrop::drop(&mut self.context));
        }
    }
}

/// A device buffer whose release never panics (see [`release`]).
pub(crate) struct ClBuf(ManuallyDrop<Buffer<u8>>);

impl Drop for ClBuf {
    fn drop(&mut self) {
        // SAFETY: dropped once, here.
        release("opencl", "a buffer", || unsafe { ManuallyDrop::drop(&mut self.0) });
    }
}

impl std::fmt::Debug for OpenCl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCl").field("label", &self.label).finish_non_exhaustive()
    }
}

impl OpenCl {
    /// Builds the kernels for `info`.
    pub(crate) fn new(info: &ClDeviceInfo, label: String) -> Result<Self, GpuError> {
        let call = |op: &str, e: opencl3::error_codes::ClError| GpuError::Call {
            device: label.clone(),
            op: op.into(),
            reason: e.to_string(),
        };
        let device = Device::new(info.id);
        let context = Context::from_device(&device).map_err(|e| call("creating a context", e))?;
        let queue = CommandQueue::create_default_with_properties(&context, 0, 0)
            .map_err(|e| call("creating a queue", e))?;
        let program = Program::create_and_build_from_source(
            &context,
            &source::source(Dialect::OpenCl),
            "-cl-std=CL1.2",
        )
        .map_err(|log| GpuError::Compile { compiler: "OpenCL", device: label.clone(), log })?;
        Ok(Self {
            label,
            device,
            context: ManuallyDrop::new(context),
            queue: ManuallyDrop::new(queue),
            program: ManuallyDrop::new(program),
            kernels: Mutex::new(HashMap::new()),
        })
    }

    /// The error for `op`. OpenCL backs buffers lazily: a shortage of device
    /// memory can show at a copy or a launch as well as at the allocation.
    /// Out of resources there may be a shortage too, or a kernel's crash (as
    /// NVIDIA's driver reports one): [`GpuError::Resources`], which the
    /// device manager tells apart with a known-answer test.
    fn err(&self, op: &str, e: ClError) -> GpuError {
        classify(&self.label, op, e)
    }

    fn with_kernel<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Kernel) -> Result<T, GpuError>,
    ) -> Result<T, GpuError> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        if !kernels.contains_key(name) {
            let k =
                Kernel::create(&self.program, name).map_err(|e| self.err(&format!("loading {name}"), e))?;
            kernels.insert(name.to_string(), k);
        }
        f(&kernels[name])
    }
}

impl Runtime for OpenCl {
    type Buf = ClBuf;

    fn label(&self) -> &str {
        &self.label
    }

    fn alloc(&self, bytes: usize) -> Result<ClBuf, GpuError> {
        // SAFETY: no host pointer is given; the buffer is owned by the result.
        unsafe { Buffer::<u8>::create(&self.context, CL_MEM_READ_WRITE, bytes.max(16), std::ptr::null_mut()) }
            .map(|b| ClBuf(ManuallyDrop::new(b)))
            .map_err(|e| match e.0 {
                // At the allocation, the out-of-resources answers are about
                // memory too (at a launch they can be a kernel's fault).
                CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY => GpuError::OutOfMemory {
                    device: self.label.clone(),
                    detail: format!("allocating {bytes} bytes: the driver said {e}"),
                },
                _ => self.err(&format!("allocating {bytes} bytes"), e),
            })
    }

    fn upload(&self, buf: &mut ClBuf, data: &[u8]) -> Result<(), GpuError> {
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: a blocking write: `data` outlives the call.
        unsafe { self.queue.enqueue_write_buffer(&mut buf.0, CL_BLOCKING, 0, data, &[]) }
            .map(drop)
            .map_err(|e| self.err("writing a buffer", e))
    }

    fn download(&self, buf: &ClBuf, out: &mut [u8]) -> Result<(), GpuError> {
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: a blocking read: `out` outlives the call.
        unsafe { self.queue.enqueue_read_buffer(&buf.0, CL_BLOCKING, 0, out, &[]) }
            .map(drop)
            .map_err(|e| self.err("reading a buffer", e))
    }

    fn sync(&self) -> Result<(), GpuError> {
        self.queue.finish().map_err(|e| self.err("waiting for the queue", e))
    }

    fn max_group(&self, kernel: &str) -> Result<usize, GpuError> {
        self.with_kernel(kernel, |k| {
            k.get_work_group_size(self.device.id()).map_err(|e| self.err("querying a work-group size", e))
        })
    }

    fn launch(
        &self,
        kernel: &str,
        groups: usize,
        group: usize,
        args: &[KArg<'_, ClBuf>],
    ) -> Result<(), GpuError> {
        self.with_kernel(kernel, |k| {
            let mut exec = ExecuteKernel::new(k);
            for a in args {
                // SAFETY: the argument types match the kernel's signature
                // (buffers for pointers, u32 for u32), which the conformance
                // suites exercise for every kernel.
                unsafe {
                    match a {
                        KArg::Buf(b) => exec.set_arg::<Buffer<u8>>(&b.0),
                        KArg::U32(v) => exec.set_arg(&(*v as cl_uint)),
                    };
                }
            }
            exec.set_global_work_size(groups * group).set_local_work_size(group);
            // SAFETY: every buffer argument lives until the queue is drained
            // by the next blocking read.
            unsafe { exec.enqueue_nd_range(&self.queue) }
                .map(drop)
                .map_err(|e| self.err(&format!("launching {kernel}"), e))
        })
    }
}

/// The error for `op` on device `label` (see [`OpenCl::err`]).
fn classify(label: &str, op: &str, e: ClError) -> GpuError {
    match e.0 {
        CL_MEM_OBJECT_ALLOCATION_FAILURE => {
            GpuError::OutOfMemory { device: label.into(), detail: format!("{op}: the driver said {e}") }
        }
        CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY => {
            GpuError::Resources { device: label.into(), op: op.into(), reason: e.to_string() }
        }
        _ => GpuError::Call { device: label.into(), op: op.into(), reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencl3::error_codes::CL_INVALID_KERNEL_ARGS;

    #[test]
    fn a_refused_release_is_logged_not_a_panic_even_while_one_unwinds() {
        struct Refused;
        impl Drop for Refused {
            fn drop(&mut self) {
                release("opencl:0 test", "a buffer", || panic!("Error: clReleaseMemObject"));
            }
        }
        drop(Refused);
        // A panic escaping this drop while the first unwinds would abort
        // the test process.
        let unwound = std::panic::catch_unwind(|| {
            let _held = Refused;
            panic!("a device fault");
        });
        assert!(unwound.is_err());
    }

    #[test]
    fn driver_answers_are_told_apart() {
        let class = |code| match classify("opencl:0 test", "launching msm_scatter", ClError(code)) {
            GpuError::OutOfMemory { .. } => "memory",
            GpuError::Resources { .. } => "resources",
            GpuError::Call { .. } => "call",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(class(CL_MEM_OBJECT_ALLOCATION_FAILURE), "memory");
        assert_eq!(class(CL_OUT_OF_RESOURCES), "resources");
        assert_eq!(class(CL_OUT_OF_HOST_MEMORY), "resources");
        assert_eq!(class(CL_INVALID_KERNEL_ARGS), "call");
        let e = classify("opencl:0 test", "launching msm_scatter", ClError(CL_OUT_OF_RESOURCES));
        assert!(e.to_string().contains("launching msm_scatter ran short of resources"), "{e}");
    }
}
