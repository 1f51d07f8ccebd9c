//! Socket I/O seen from `sock:sock_send_length` / `sock:sock_recv_length`.
//!
//! Both fire inside the read/write/send/recv syscall of a socket, in the
//! calling task's context, with `sk`: so they tie a task (and through its saved
//! registers, an fd and a user buffer) to the `sk` the TCP tracepoints carry.
//! Here: cheap filters, socket ownership, and the per-connection HTTP verdict;
//! payload capture is in `http.rs`.
use agent_common::{
    Direction, EventKind, KernelCounter, ProbeConfig, SockOwnerEvent, cost_stage, tcp_state,
    tp_fields::inet_sock_set_state as ss,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint, tracepoint},
    maps::LruHashMap,
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    http,
    maps::{EVENTS, config, count, count_n, output_flags},
    tcp::header,
};

const MSG_PEEK: i32 = 2;

/// What the probe knows about one socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    /// Last task group seen using the socket (announced with a SockOwnerEvent).
    pub tgid: u32,
    /// A [`Verdict`] as u32.
    pub verdict: u32,
    /// On a TLS socket, the [`Verdict`] of the plaintext it carries. It lives
    /// here, not with the `SSL*`, so that it is forgotten with the socket:
    /// nginx hands a freed `SSL*` and socket address to the next connection.
    pub tls_verdict: u32,
}

/// Whether a connection carries HTTP/1.x, decided on its first bytes.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unknown = 0,
    Http = 1,
    NotHttp = 2,
    /// TLS records: counted, never captured (see `tls.rs`).
    Tls = 3,
    /// Began with the HTTP/2 client preface: captured with a frame walk
    /// (`http2.rs`).
    Http2 = 4,
}

/// Per-socket state, keyed by `sk`. Forgotten when the socket reaches CLOSE
/// (its address is reused by the next socket); LRU bounds it if a CLOSE is missed.
#[map(name = "SOCKS")]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65_536, 0);

// Raw tracepoints: TP_PROTO(struct sock *sk, int ret, int flags). Measured
// cheaper than the perf-record tracepoint (no record to build), at the price of
// reading family and protocol from `sk` at offsets userspace found in BTF.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    on_sock_io(&ctx, Direction::Ingress);
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    on_sock_io(&ctx, Direction::Egress);
    0
}

/// Forget a socket when it closes and again when a connection is born on it,
/// so a new socket at the same address starts fresh. Birth matters too: a
/// server that drains a socket after its CLOSE (nginx's lingering close)
/// makes the probe classify those late bytes and re-insert the entry, which
/// would otherwise hand a stale NotHttp verdict to the next socket allocated
/// at that address (seen: a whole keep-alive connection went uncaptured).
#[tracepoint]
pub fn sock_forget_closed(ctx: TracePointContext) -> u32 {
    let p = ctx.as_ptr() as *const u8;
    // SAFETY: direct loads from the tracepoint record, at the offsets that
    // `tp_fields` holds and the kernel-format test checks.
    let newstate: u32 = unsafe { field(p, ss::NEWSTATE) };
    if newstate == tcp_state::CLOSE
        || newstate == tcp_state::SYN_SENT
        || newstate == tcp_state::SYN_RECV
    {
        let sk: u64 = unsafe { field(p, ss::SKADDR) };
        let _ = SOCKS.remove(&sk);
        crate::http2::forget(sk);
    }
    0
}

/// Read a field of the tracepoint record with a direct context load (cheaper
/// than the bpf_probe_read_kernel that `TracePointContext::read_at` uses).
#[inline(always)]
pub unsafe fn field<T: Copy>(p: *const u8, off: usize) -> T {
    unsafe { core::ptr::read_volatile(p.add(off) as *const T) }
}

#[inline(always)]
fn on_sock_io(ctx: &RawTracePointContext, dir: Direction) {
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32;
    let flags = ctx.arg::<u64>(2) as i32;
    if ret <= 0 {
        return;
    }
    // A peek leaves the bytes in the socket: the real read reports them.
    if dir == Direction::Ingress && flags & MSG_PEEK != 0 {
        return;
    }
    let Some(cfg) = config() else { return };
    if cfg.cost_stage == cost_stage::ATTACH {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid || cfg.offsets.valid == 0 {
        return;
    }
    if !crate::scope::admits(cfg, tgid) {
        return;
    }
    // `sk_type` and `sk_protocol` are adjacent u16s: one read. Only inet
    // sockets are created as SOCK_STREAM with protocol 6, so no family check.
    // SAFETY: `sk` is the tracepoint's socket; the offset comes from this kernel's BTF.
    let type_proto: u32 =
        unsafe { bpf_probe_read_kernel((sk + cfg.offsets.sk_type_proto as u64) as *const u32) }
            .unwrap_or(0);
    if type_proto != cfg.offsets.sk_tcp_word {
        return;
    }
    let verdict = match SOCKS.get_ptr_mut(&sk) {
        Some(s) => {
            // SAFETY: value pointer from the map; racing writers only rewrite these u32s.
            let s = unsafe { &mut *s };
            if s.tgid != tgid {
                s.tgid = tgid;
                announce_owner(cfg, sk);
            }
            s.verdict
        }
        None => {
            let fresh = SockState {
                tgid,
                verdict: Verdict::Unknown as u32,
                tls_verdict: Verdict::Unknown as u32,
            };
            let _ = SOCKS.insert(&sk, &fresh, 0);
            announce_owner(cfg, sk);
            Verdict::Unknown as u32
        }
    };
    if verdict == Verdict::NotHttp as u32 {
        count_non_http(ret);
        return;
    }
    // Plain HTTP (the hot path) never pays for the TLS lookup.
    if verdict != Verdict::Http as u32
        && verdict != Verdict::Http2 as u32
        && crate::tls::on_socket_io(sk, pid_tgid, verdict, ret)
    {
        return;
    }
    if cfg.capture_http == 0 || cfg.cost_stage == cost_stage::CLASSIFY {
        return;
    }
    http::capture(cfg, sk, dir, ret as u32, verdict, tgid);
}

#[inline(always)]
pub fn count_non_http(ret: i32) {
    count(KernelCounter::NonHttpSyscalls);
    count_n(KernelCounter::NonHttpBytes, ret as u64);
}

/// Record this socket's verdict (once per connection).
#[inline(always)]
pub fn set_verdict(sk: u64, tgid: u32, v: Verdict) {
    let st = SockState {
        tgid,
        verdict: v as u32,
        tls_verdict: Verdict::Unknown as u32,
    };
    let _ = SOCKS.insert(&sk, &st, 0);
}

#[inline(always)]
fn announce_owner(cfg: &ProbeConfig, sk: u64) {
    let ev = SockOwnerEvent {
        header: header(EventKind::SockOwner),
        sk,
    };
    if EVENTS
        .output::<SockOwnerEvent>(&ev, output_flags(cfg))
        .is_err()
    {
        count(KernelCounter::RingbufFull);
    }
}
