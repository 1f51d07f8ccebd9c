//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`: one event per
//! retransmission the kernel counted, carrying the segments it added to
//! `TcpRetransSegs`. Both fire in softirq/timer context: userspace attributes
//! them by `sk` (or by tuple for SYN-ACKs), never by the header's task.
use agent_common::{
    EventKind, KernelCounter, TcpRetransmitEvent, tcp_state,
    tp_fields::{tcp_retransmit_skb as rt, tcp_retransmit_synack as rs},
};
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};

use super::{TupleLayout, header, read_tuple};
use crate::maps::{EVENTS, config, count};

const SKB_TUPLE: TupleLayout = TupleLayout {
    sport: rt::SPORT,
    dport: rt::DPORT,
    family: rt::FAMILY,
    saddr_v6: rt::SADDR_V6,
    daddr_v6: rt::DADDR_V6,
};

const SYNACK_TUPLE: TupleLayout = TupleLayout {
    sport: rs::SPORT,
    dport: rs::DPORT,
    family: rs::FAMILY,
    saddr_v6: rs::SADDR_V6,
    daddr_v6: rs::DADDR_V6,
};

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    if try_retransmit_skb(&ctx).is_err() {
        count(KernelCounter::ReadFailed);
    }
    0
}

fn try_retransmit_skb(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY (all ctx reads): offsets inside the record, see tp_fields.
    let err: i32 = unsafe { ctx.read_at(rt::ERR)? };
    if gave_up_before_transmit(err) {
        count(KernelCounter::RetransmitNotSent);
        return Ok(());
    }
    let skb: u64 = unsafe { ctx.read_at(rt::SKBADDR)? };
    let ev = TcpRetransmitEvent {
        header: header(EventKind::TcpRetransmit),
        sk: unsafe { ctx.read_at(rt::SKADDR)? },
        tuple: read_tuple(ctx, &SKB_TUPLE)?,
        segs: skb_pcount(skb),
        state: unsafe { ctx.read_at::<i32>(rt::STATE)? } as u32,
        synack: 0,
        err,
    };
    if EVENTS.output::<TcpRetransmitEvent>(&ev, 0).is_err() {
        count(KernelCounter::RingbufFull);
    }
    Ok(())
}

const EBUSY: i32 = 16;
const EAGAIN: i32 = 11;
const ENOMEM: i32 = 12;
const EINVAL: i32 = 22;
const EHOSTUNREACH: i32 = 113;

/// `__tcp_retransmit_skb` returns these before it adds the skb's segments to
/// `TcpRetransSegs`; any other error comes from the transmit itself, after
/// the kernel counted the retransmission (a local queue full, a local
/// firewall drop), so it stays an event to match the kernel's counter.
#[inline(always)]
fn gave_up_before_transmit(err: i32) -> bool {
    matches!(-err, EBUSY | EAGAIN | ENOMEM | EINVAL | EHOSTUNREACH)
}

/// `tcp_skb_pcount(skb)`: `TCP_SKB_CB(skb)->tcp_gso_segs`, which
/// `__tcp_retransmit_skb` has just set (≥ 1) and added to `TcpRetransSegs`
/// before the tracepoint fires. A 0 or failed read means a bad offset: the skb
/// was still one retransmission, so it counts as 1 segment.
#[inline(always)]
fn skb_pcount(skb: u64) -> u32 {
    let Some(cfg) = config() else {
        count(KernelCounter::ReadFailed);
        return 1;
    };
    if cfg.offsets.valid == 0 || skb == 0 {
        return 1;
    }
    let ptr = (skb + cfg.offsets.skb_gso_segs as u64) as *const u16;
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns Err.
    match unsafe { bpf_probe_read_kernel(ptr) } {
        Ok(0) => 1,
        Ok(n) => n as u32,
        Err(_) => {
            count(KernelCounter::ReadFailed);
            1
        }
    }
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    if try_retransmit_synack(&ctx).is_err() {
        count(KernelCounter::ReadFailed);
    }
    0
}

fn try_retransmit_synack(ctx: &TracePointContext) -> Result<(), i64> {
    // Fires only when the SYN-ACK went out (tcp_rtx_synack checks the send
    // result), and the kernel counts it as one segment in TcpRetransSegs.
    let ev = TcpRetransmitEvent {
        header: header(EventKind::TcpRetransmit),
        // The listener: the connection's own socket does not exist yet.
        sk: unsafe { ctx.read_at(rs::SKADDR)? },
        tuple: read_tuple(ctx, &SYNACK_TUPLE)?,
        segs: 1,
        state: tcp_state::SYN_RECV,
        synack: 1,
        err: 0,
    };
    if EVENTS.output::<TcpRetransmitEvent>(&ev, 0).is_err() {
        count(KernelCounter::RingbufFull);
    }
    Ok(())
}
