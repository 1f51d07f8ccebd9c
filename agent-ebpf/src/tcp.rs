//! TCP signals: retransmits, connect latency and outcome, lifecycle.
use agent_common::{EventHeader, EventKind, KernelCounter, SockTuple, TcpRetransmitEvent};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::maps::{EVENTS, count};

// Offsets in tcp:tcp_retransmit_skb's format (checked against
// /sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format on Linux 6.18).
const RT_SKBADDR: usize = 8;
const RT_SKADDR: usize = 16;
const RT_STATE: usize = 24;
const RT_SPORT: usize = 28;
const RT_DPORT: usize = 30;
const RT_FAMILY: usize = 32;
const RT_SADDR_V6: usize = 42;
const RT_DADDR_V6: usize = 58;
const RT_ERR: usize = 76;

#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u32,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit_skb(&ctx);
    0
}

fn try_retransmit_skb(ctx: &TracePointContext) -> Result<(), i64> {
    let err: i32 = unsafe { ctx.read_at(RT_ERR)? };
    if err != 0 {
        count(KernelCounter::RetransmitNotSent);
        return Ok(());
    }
    let _skb: u64 = unsafe { ctx.read_at(RT_SKBADDR)? };
    let ev = TcpRetransmitEvent {
        // Softirq/timer context: the task fields are whoever runs; userspace
        // attributes by `sk` through the connection table instead.
        header: header(EventKind::TcpRetransmit),
        sk: unsafe { ctx.read_at(RT_SKADDR)? },
        tuple: SockTuple {
            saddr: unsafe { ctx.read_at(RT_SADDR_V6)? },
            daddr: unsafe { ctx.read_at(RT_DADDR_V6)? },
            sport: unsafe { ctx.read_at(RT_SPORT)? },
            dport: unsafe { ctx.read_at(RT_DPORT)? },
            family: unsafe { ctx.read_at(RT_FAMILY)? },
            _pad: 0,
        },
        segs: 1,
        state: unsafe { ctx.read_at::<i32>(RT_STATE)? } as u32,
        synack: 0,
        _pad: 0,
    };
    if EVENTS.output::<TcpRetransmitEvent>(&ev, 0).is_err() {
        count(KernelCounter::RingbufFull);
    }
    Ok(())
}
