//! Device memory budgets.
//!
//! Every buffer a device allocates is counted against its budget while it
//! lives ([`Metered`] wraps the runtime; a buffer gives its bytes back when it
//! is dropped). An allocation that would go over the budget is refused with
//! [`GpuError::OutOfMemory`] before the driver is asked, so that a device
//! whose memory the resident bases have filled says so cleanly instead of
//! failing in the middle of a kernel sequence; the driver's own out-of-memory
//! answers become the same error. Out of memory is not a device fault: the
//! piece of work goes to the CPU and the device stays in service.

use super::runtime::{GpuError, KArg, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One device's budget and what its live buffers take.
#[derive(Debug)]
pub(crate) struct Meter {
    label: String,
    budget: u64,
    live: AtomicU64,
    /// The most `live` has been since [`Meter::take_peak`].
    peak: AtomicU64,
}

impl Meter {
    pub(crate) fn new(label: String, budget: u64) -> Self {
        Self { label, budget, live: AtomicU64::new(0), peak: AtomicU64::new(0) }
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes the live buffers take.
    pub(crate) fn used(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Bytes left in the budget.
    pub(crate) fn free(&self) -> u64 {
        self.budget.saturating_sub(self.used())
    }

    /// The error for `wanted` bytes that do not fit.
    pub(crate) fn out_of_memory(&self, wanted: u64) -> GpuError {
        GpuError::OutOfMemory {
            device: self.label.clone(),
            detail: format!(
                "{wanted} bytes wanted, {} of its budget of {} bytes free",
                self.free(),
                self.budget
            ),
        }
    }

    /// Counts `bytes` as taken, or refuses them.
    pub(crate) fn take(&self, bytes: u64) -> Result<(), GpuError> {
        let mut live = self.live.load(Ordering::Relaxed);
        loop {
            let next = live
                .checked_add(bytes)
                .filter(|&n| n <= self.budget)
                .ok_or_else(|| self.out_of_memory(bytes))?;
            match self.live.compare_exchange_weak(live, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => live = now,
            }
        }
    }

    pub(crate) fn give_back(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The most memory taken at once since the last call (then starts again
    /// from what is taken now).
    #[cfg(test)]
    pub(crate) fn take_peak(&self) -> u64 {
        self.peak.swap(self.used(), Ordering::Relaxed)
    }
}

/// A runtime whose allocations are counted against a [`Meter`], and whose
/// context a test can lose ([`super::Fault::LosesContext`]): every call
/// fails from then on, as on a CUDA context a crashed kernel left, until the
/// device is opened afresh (a new runtime). Closed (see [`Runtime::close`]),
/// every call fails too.
pub(crate) struct Metered<R> {
    inner: Option<R>,
    label: String,
    meter: Arc<Meter>,
    lost: AtomicBool,
}

impl<R: Runtime> Metered<R> {
    pub(crate) fn new(inner: R, meter: Arc<Meter>) -> Self {
        Self { label: inner.label().to_string(), inner: Some(inner), meter, lost: AtomicBool::new(false) }
    }

    /// The runtime, if its context is neither lost nor closed.
    fn usable(&self) -> Result<&R, GpuError> {
        let inner = self.inner.as_ref().ok_or_else(|| GpuError::Call {
            device: self.label.clone(),
            op: "a call".into(),
            reason: "the device is closed (it could not be opened afresh)".into(),
        })?;
        if self.lost.load(Ordering::Relaxed) {
            return Err(GpuError::Injected(format!("{} (its context is lost)", self.label)));
        }
        Ok(inner)
    }
}

/// A buffer that gives its bytes back to the budget when dropped.
pub(crate) struct MeteredBuf<B> {
    buf: B,
    bytes: u64,
    meter: Arc<Meter>,
}

impl<B> Drop for MeteredBuf<B> {
    fn drop(&mut self) {
        self.meter.give_back(self.bytes);
    }
}

impl<R: Runtime> Runtime for Metered<R> {
    type Buf = MeteredBuf<R::Buf>;

    fn label(&self) -> &str {
        &self.label
    }

    fn alloc(&self, bytes: usize) -> Result<Self::Buf, GpuError> {
        let inner = self.usable()?;
        let counted = bytes.max(16) as u64;
        self.meter.take(counted)?;
        match inner.alloc(bytes) {
            Ok(buf) => Ok(MeteredBuf { buf, bytes: counted, meter: self.meter.clone() }),
            Err(e) => {
                self.meter.give_back(counted);
                Err(e)
            }
        }
    }

    fn upload(&self, buf: &mut Self::Buf, data: &[u8]) -> Result<(), GpuError> {
        self.usable()?.upload(&mut buf.buf, data)
    }

    fn download(&self, buf: &Self::Buf, out: &mut [u8]) -> Result<(), GpuError> {
        self.usable()?.download(&buf.buf, out)
    }

    fn sync(&self) -> Result<(), GpuError> {
        self.usable()?.sync()
    }

    fn lose_context(&self) -> Result<(), GpuError> {
        self.usable()?.lose_context()
    }

    fn injected_loss(&self) -> Option<&AtomicBool> {
        Some(&self.lost)
    }

    fn trim(&self) {
        if let Some(inner) = &self.inner {
            inner.trim()
        }
    }

    fn driver_memory(&self) -> Option<(u64, u64)> {
        self.inner.as_ref()?.driver_memory()
    }

    fn close(&mut self) {
        self.inner = None;
    }

    fn max_group(&self, kernel: &str) -> Result<usize, GpuError> {
        self.usable()?.max_group(kernel)
    }

    fn launch(
        &self,
        kernel: &str,
        groups: usize,
        group: usize,
        args: &[KArg<'_, Self::Buf>],
    ) -> Result<(), GpuError> {
        let inner = self.usable()?;
        let args: Vec<KArg<'_, R::Buf>> = args
            .iter()
            .map(|a| match *a {
                KArg::Buf(b) => KArg::Buf(&b.buf),
                KArg::U32(v) => KArg::U32(v),
            })
            .collect();
        inner.launch(kernel, groups, group, &args)
    }
}

/// What a device may allocate by default: its memory less a tenth (at least
/// 512 MiB) for the driver, the compiled kernels and other programs.
pub(crate) fn default_budget(memory: u64) -> u64 {
    memory.saturating_sub((memory / 10).max(512 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_counted_while_they_live_and_refused_over_the_budget() {
        let m = Meter::new("dev".into(), 1000);
        m.take(600).unwrap();
        assert_eq!((m.used(), m.free()), (600, 400));
        let e = m.take(401).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dev: out of memory: 401 bytes wanted, 400 of its budget of 1000 bytes free"
        );
        assert_eq!(m.used(), 600, "a refused allocation takes nothing");
        m.take(400).unwrap();
        assert_eq!(m.free(), 0);
        m.give_back(700);
        assert_eq!(m.used(), 300);
        assert_eq!(m.take_peak(), 1000);
        assert_eq!(m.take_peak(), 300, "the peak starts again from what is live");
        assert!(m.take(u64::MAX).is_err(), "no overflow");
    }

    #[test]
    fn the_default_budget_leaves_room_for_the_driver() {
        assert_eq!(default_budget(80 << 30), 72 << 30);
        assert_eq!(default_budget(4 << 30), (4 << 30) - (512 << 20));
        assert_eq!(default_budget(256 << 20), 0);
    }
}
