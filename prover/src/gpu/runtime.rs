//! The device-agnostic seam under the MSM and NTT drivers: buffers, copies and
//! kernel launches, implemented by the OpenCL and CUDA runtimes.

use std::sync::atomic::AtomicBool;

/// What went wrong on (or while looking for) a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No usable CUDA driver or NVRTC.
    #[error("no CUDA: {0}")]
    NoCuda(String),
    /// No usable OpenCL platform.
    #[error("no OpenCL: {0}")]
    NoOpenCl(String),
    /// The kernel source did not compile.
    #[error("{compiler} could not compile the kernels for {device}: {log}")]
    Compile {
        /// NVRTC or the OpenCL compiler.
        compiler: &'static str,
        /// The device it was compiled for.
        device: String,
        /// The compiler's log.
        log: String,
    },
    /// A runtime call failed.
    #[error("{device}: {op} failed: {reason}")]
    Call {
        /// The device.
        device: String,
        /// What was being done.
        op: String,
        /// The runtime's error.
        reason: String,
    },
    /// A device computed a wrong answer in its admission test.
    #[error("{device} failed its known-answer test: {what}")]
    KnownAnswer {
        /// The device.
        device: String,
        /// Which check.
        what: String,
    },
    /// A problem this device's kernels do not take (the caller uses the CPU).
    #[error("{0}")]
    Unsupported(String),
    /// The device failed while its result was being copied over the input
    /// (an in-place call): the input is gone, so the CPU cannot take over.
    #[error("{device} failed while copying its result back, over the input: {reason}")]
    OutputLost {
        /// The device.
        device: String,
        /// The copy's error.
        reason: String,
    },
    /// An allocation that does not fit the device's memory budget, or that
    /// the driver refused for want of memory. Not a fault: the work goes to
    /// the CPU and the device stays in service.
    #[error("{device}: out of memory: {detail}")]
    OutOfMemory {
        /// The device.
        device: String,
        /// What was wanted and what was free, or what the driver said.
        detail: String,
    },
    /// An MSM over bases this device does not hold (they were lost when the
    /// device failed to rearrange its memory). Not a fault: the work goes
    /// elsewhere.
    #[error("{0}")]
    NotResident(String),
    /// The driver ran short of resources during a copy, a launch or a wait
    /// (OpenCL's out-of-resources and out-of-host-memory answers). Often
    /// transient (memory a driver backs lazily, or frees only once the queue
    /// has run, can briefly run out), but some drivers report a kernel's
    /// crash that way too: the call goes to the CPU, and the device stays in
    /// service only if it passes its known-answer test again at once.
    #[error("{device}: {op} ran short of resources: {reason}")]
    Resources {
        /// The device.
        device: String,
        /// What was being done.
        op: String,
        /// The runtime's error.
        reason: String,
    },
    /// A failure injected by a test.
    #[error("{0}: injected fault")]
    Injected(String),
    /// The driver code panicked in a call (cudarc panics on some driver
    /// errors): the device is taken out of service like one whose call
    /// failed, and the CPU takes over. (A panic while an in-place call's
    /// result is copied over its input is [`GpuError::OutputLost`].)
    #[error("{device} panicked in a call: {message}")]
    Panicked {
        /// The device.
        device: String,
        /// The panic's message.
        message: String,
    },
}

/// A kernel argument.
#[derive(Debug)]
pub(crate) enum KArg<'a, B> {
    /// A device buffer.
    Buf(&'a B),
    /// A 32-bit unsigned integer.
    U32(u32),
}

impl<B> Clone for KArg<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for KArg<'_, B> {}

/// A compiled program on one device, with its queue.
pub(crate) trait Runtime: Send + 'static {
    /// A buffer in device memory.
    type Buf: Send;
    /// "opencl:0 NAME" or "cuda:0 NAME".
    fn label(&self) -> &str;
    /// An uninitialised buffer of at least `bytes` bytes (never empty).
    fn alloc(&self, bytes: usize) -> Result<Self::Buf, GpuError>;
    /// Copies `data` to the start of `buf`.
    fn upload(&self, buf: &mut Self::Buf, data: &[u8]) -> Result<(), GpuError>;
    /// Copies the start of `buf` into `out` (waits for the queue).
    fn download(&self, buf: &Self::Buf, out: &mut [u8]) -> Result<(), GpuError>;
    /// Waits until everything queued has run.
    fn sync(&self) -> Result<(), GpuError>;
    /// The largest work-group `kernel` can be launched with here.
    fn max_group(&self, kernel: &str) -> Result<usize, GpuError>;
    /// Launches `kernel` on `groups` work-groups of `group` threads.
    fn launch(
        &self,
        kernel: &str,
        groups: usize,
        group: usize,
        args: &[KArg<'_, Self::Buf>],
    ) -> Result<(), GpuError>;
    /// Loses this runtime's context for real, as a crashed kernel does (for
    /// tests of the recovery on hardware); a runtime that has no safe way
    /// to says so.
    fn lose_context(&self) -> Result<(), GpuError> {
        Err(GpuError::Unsupported(format!("{}: no way to lose its context on demand", self.label())))
    }
    /// The flag a test sets to lose this runtime's context
    /// ([`super::Fault::LosesContext`]), where it has one: once set, every
    /// call on it fails.
    fn injected_loss(&self) -> Option<&AtomicBool> {
        None
    }
    /// Gives the driver back the device memory it keeps free for reuse (once
    /// an old context is closed, what it held goes back).
    fn trim(&self) {}
    /// The driver's free and total memory of the device, where it says.
    fn driver_memory(&self) -> Option<(u64, u64)> {
        None
    }
    /// Closes the runtime's context now (every later call fails), where it
    /// can be closed before it is dropped.
    fn close(&mut self) {}
}
