//! TCP signals: retransmits, connect latency and outcome, lifecycle.
//!
//! | event | when | task in the header |
//! |---|---|---|
//! | `TcpRetransmit` | every retransmission the kernel counted in `TcpRetransSegs`, `segs` = its segments; SYN-ACKs with `synack = 1` | softirq/timer: not the owner, join by `sk` (SYN-ACK: by tuple) |
//! | `TcpConnect` | an active open left SYN_SENT: ESTABLISHED, or CLOSE with Refused/TimedOut/Other from `sk_err` | the connecting task (captured at SYN_SENT) |
//! | `TcpState` | SYN_RECV → ESTABLISHED (passive open), and every → CLOSE | usually softirq: join by `sk` |
//!
//! Connects of the agent's own process are not reported; everything else is
//! reported whoever owns it, and failures to emit are counted in `COUNTERS`.
//!
//! Tracepoint field offsets live in `agent_common::tp_fields`, where the
//! `tests` crate checks them against the running kernel's format files.
mod retransmit;
mod state;

use agent_common::{EventHeader, EventKind, SockTuple};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    programs::TracePointContext,
};

/// Header with the current task's identity and the current time.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u32,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// Where a tracepoint keeps the socket's ports and addresses.
struct TupleLayout {
    sport: usize,
    dport: usize,
    family: usize,
    saddr_v6: usize,
    daddr_v6: usize,
}

/// Ports and v4-mapped addresses as the tracepoint recorded them.
#[inline(always)]
fn read_tuple(ctx: &TracePointContext, l: &TupleLayout) -> Result<SockTuple, i64> {
    // SAFETY: offsets inside the tracepoint record, checked against its format.
    unsafe {
        Ok(SockTuple {
            saddr: ctx.read_at(l.saddr_v6)?,
            daddr: ctx.read_at(l.daddr_v6)?,
            sport: ctx.read_at(l.sport)?,
            dport: ctx.read_at(l.dport)?,
            family: ctx.read_at(l.family)?,
            _pad: 0,
        })
    }
}
