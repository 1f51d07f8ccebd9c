//! `sock:inet_sock_set_state` (TCP only): connect latency and outcome, passive
//! opens and closes, with as few events as the connection table needs.
//!
//! - `* → SYN_SENT` runs in the connecting task's context: remember when and
//!   who in `CONNECT_START`, keyed by socket.
//! - `SYN_SENT → ESTABLISHED | CLOSE`: one `TcpConnectEvent` with that task as
//!   header. On CLOSE the kernel has already stored the error in `sk->sk_err`
//!   (`tcp_done_with_error` writes it before `tcp_done`; `inet_sk_error_report`
//!   fires only after the state change and carries no socket address).
//! - `SYN_RECV → ESTABLISHED` (passive open) and `* → CLOSE`: one
//!   `TcpStateEvent`, so userspace can add and drop sockets. No other
//!   transition emits anything.
use agent_common::{
    ConnectOutcome, EventHeader, EventKind, KernelCounter, TcpConnectEvent, TcpStateEvent,
    tcp_state, tp_fields::inet_sock_set_state as f,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};

use super::{TupleLayout, header, read_tuple};
use crate::maps::{EVENTS, config, count};

const IPPROTO_TCP: u16 = 6;
const ECONNREFUSED: i32 = 111;
const ETIMEDOUT: i32 = 110;

const TUPLE: TupleLayout = TupleLayout {
    sport: f::SPORT,
    dport: f::DPORT,
    family: f::FAMILY,
    saddr_v6: f::SADDR_V6,
    daddr_v6: f::DADDR_V6,
};

/// What SYN_SENT entry left for the end of the connect.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConnectStart {
    /// The connecting task; `ts_ns` is when SYN_SENT was entered.
    header: EventHeader,
    /// 1 for the agent's own sockets: tracked so their end is not miscounted
    /// as unmatched, but never reported.
    own: u32,
    _pad: u32,
}

/// Connects in flight. LRU so a flood of half-open connects can evict old
/// entries but never fill the map for good; those ends count as unmatched.
#[map(name = "CONNECT_START")]
static CONNECT_START: LruHashMap<u64, ConnectStart> = LruHashMap::with_max_entries(16_384, 0);

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if try_set_state(&ctx).is_err() {
        count(KernelCounter::ReadFailed);
    }
    0
}

fn try_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY (all ctx reads): offsets inside the record, see tp_fields.
    let protocol: u16 = unsafe { ctx.read_at(f::PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let old = unsafe { ctx.read_at::<i32>(f::OLDSTATE)? } as u32;
    let new = unsafe { ctx.read_at::<i32>(f::NEWSTATE)? } as u32;
    let sk: u64 = unsafe { ctx.read_at(f::SKADDR)? };

    if new == tcp_state::SYN_SENT {
        connect_started(sk);
        return Ok(());
    }
    if old == tcp_state::SYN_SENT {
        connect_ended(ctx, sk, new)?;
    }
    if new == tcp_state::CLOSE || (old == tcp_state::SYN_RECV && new == tcp_state::ESTABLISHED) {
        let ev = TcpStateEvent {
            header: header(EventKind::TcpState),
            sk,
            tuple: read_tuple(ctx, &TUPLE)?,
            oldstate: old,
            newstate: new,
        };
        if EVENTS.output::<TcpStateEvent>(&ev, 0).is_err() {
            count(KernelCounter::RingbufFull);
        }
    }
    Ok(())
}

#[inline(always)]
fn connect_started(sk: u64) {
    let header = header(EventKind::TcpConnect);
    let own = match config() {
        Some(c) => (c.self_tgid != 0 && c.self_tgid == header.tgid) as u32,
        None => 0,
    };
    let start = ConnectStart {
        header,
        own,
        _pad: 0,
    };
    if CONNECT_START.insert(sk, start, 0).is_err() {
        count(KernelCounter::ConnectMapFull);
    }
}

#[inline(always)]
fn connect_ended(ctx: &TracePointContext, sk: u64, new: u32) -> Result<(), i64> {
    let Some(start) = CONNECT_START.get_ptr(sk) else {
        // Only ESTABLISHED and CLOSE end a connect we would have reported.
        if new == tcp_state::ESTABLISHED || new == tcp_state::CLOSE {
            count(KernelCounter::ConnectUnmatched);
        }
        return Ok(());
    };
    // SAFETY: valid map value pointer; copied out before the entry is removed.
    let start = unsafe { *start };
    let _ = CONNECT_START.remove(sk);
    if start.own != 0 {
        return Ok(());
    }
    let (outcome, error) = match new {
        tcp_state::ESTABLISHED => (ConnectOutcome::Established, 0),
        tcp_state::CLOSE => close_reason(sk),
        // Simultaneous open (SYN_SENT → SYN_RECV): not a connect outcome.
        _ => return Ok(()),
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let mut header = start.header;
    let started = header.ts_ns;
    header.ts_ns = now;
    let ev = TcpConnectEvent {
        header,
        sk,
        tuple: read_tuple(ctx, &TUPLE)?,
        duration_ns: now.saturating_sub(started),
        outcome: outcome as u32,
        error: error as u32,
    };
    if EVENTS.output::<TcpConnectEvent>(&ev, 0).is_err() {
        count(KernelCounter::RingbufFull);
    }
    Ok(())
}

/// Why a connect went from SYN_SENT to CLOSE, from `sk->sk_err`.
#[inline(always)]
fn close_reason(sk: u64) -> (ConnectOutcome, i32) {
    let Some(cfg) = config() else {
        count(KernelCounter::ReadFailed);
        return (ConnectOutcome::Other, 0);
    };
    if cfg.offsets.valid == 0 {
        return (ConnectOutcome::Other, 0);
    }
    let ptr = (sk + cfg.offsets.sock_sk_err as u64) as *const i32;
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns Err.
    let err = match unsafe { bpf_probe_read_kernel(ptr) } {
        Ok(e) => e,
        Err(_) => {
            count(KernelCounter::ReadFailed);
            return (ConnectOutcome::Other, 0);
        }
    };
    let outcome = match err {
        ECONNREFUSED => ConnectOutcome::Refused,
        ETIMEDOUT => ConnectOutcome::TimedOut,
        _ => ConnectOutcome::Other,
    };
    (outcome, err)
}
