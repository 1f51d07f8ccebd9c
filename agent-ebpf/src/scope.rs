//! The tracing scope: which task groups the socket probes trace.
//!
//! Userspace resolves the configured scope (process name, executable,
//! listening port, Kubernetes namespace and pod labels) to task group ids
//! and keeps `SCOPE` current (agent/src/kernel/scope/). With
//! `ProbeConfig::scope_active` at 0 (the default: everything) the check is one
//! load of a field already read; with it on, an out-of-scope task costs this
//! one hash lookup and a counter, and the probe returns before touching the
//! socket or its state.
//!
//! Only the socket-syscall probes (`sock.rs`) are scoped: they run in the
//! task's own context. The TCP state and retransmit probes mostly run in
//! softirq, where the current task is whoever was interrupted, so a tgid
//! check there would be meaningless; they stay host-wide (see docs/probes.md).
use agent_common::{KernelCounter, ProbeConfig};
use aya_ebpf::{macros::map, maps::HashMap};

use crate::maps::count;

/// Task groups in scope. The value is unused (presence is the answer).
/// Bounded: userspace counts the processes it could not add.
#[map(name = "SCOPE")]
pub static SCOPE: HashMap<u32, u8> = HashMap::with_max_entries(16_384, 0);

/// Whether the probes should trace task group `tgid`.
#[inline(always)]
pub fn admits(cfg: &ProbeConfig, tgid: u32) -> bool {
    if cfg.scope_active == 0 {
        return true;
    }
    // SAFETY: the value is only tested for presence, never read.
    if unsafe { SCOPE.get(&tgid) }.is_some() {
        return true;
    }
    count(KernelCounter::OutOfScope);
    false
}
