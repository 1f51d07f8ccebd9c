//! Maps shared by every probe: the event ring buffer, runtime config from
//! userspace, and kernel-side counters.
use agent_common::{KERNEL_COUNTERS, KernelCounter, ProbeConfig};
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};

/// Events to userspace. 8 MiB: about 80 k data events of full size.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// One [`ProbeConfig`], written by userspace before attaching.
#[map(name = "CONFIG")]
pub static CONFIG: Array<ProbeConfig> = Array::with_max_entries(1, 0);

/// Kernel-side self metrics, indexed by [`KernelCounter`].
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KERNEL_COUNTERS, 0);

#[inline(always)]
pub fn count(c: KernelCounter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn config() -> Option<&'static ProbeConfig> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn count_n(c: KernelCounter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += n };
    }
}
