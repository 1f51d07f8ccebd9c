//! TLS plaintext at OpenSSL's `SSL_read`/`SSL_read_ex`/`SSL_write`/
//! `SSL_write_ex` (uprobes at entry, uretprobes at return; the C ABI allows
//! uretprobes). The plaintext becomes the same [`DataEvent`] as socket data,
//! flagged [`DATA_FLAG_TLS`] and keyed by the socket that carries the
//! records, so the HTTP/1.x tracker pairs it like plain HTTP.
//!
//! Tying an `SSL*` to its socket: the socket syscall OpenSSL makes inside the
//! call (its `sock:sock_*_length` tracepoint runs in the same thread while
//! the call is in flight, see [`on_socket_io`]) names the `sk`; it is kept per
//! `(tgid, SSL*)` for calls served from OpenSSL's buffer without a syscall.
//! Runtimes that feed OpenSSL through memory BIOs (Node.js) never make a
//! syscall inside the call: for them the thread's last TLS socket outside a
//! call stands in (their event loop reads the records, then decrypts them
//! on the same thread; docs/probes.md).
//!
//! [`DataEvent`]: agent_common::DataEvent
use agent_common::{
    DATA_FLAG_TLS, DataSource, Direction, KernelCounter, cost_stage,
    tp_fields::sys_enter_mmap as mm,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};

use crate::{
    http::{Capture, emit},
    maps::{config, count, count_n},
    sock::{SOCKS, Verdict, field},
};

/// A TLS library call in flight on one thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *readbytes`/`*written` of the `_ex` calls, 0 for the plain ones.
    pub done_ptr: u64,
    /// Socket of a syscall made inside the call, 0 if none (yet).
    pub sk: u64,
}

/// Calls in flight by thread (`pid_tgid`). LRU: a return that never comes
/// (thread killed mid-call) must not leak its entry.
#[map(name = "TLS_CALLS")]
static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16_384, 0);

/// `SSL*` pointers are per address space: key them by process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// The socket an `SSL*` last read or wrote through. The plaintext's verdict
/// is kept with the socket (`SockState::tls_verdict`), not here: an `SSL*`
/// address outlives its connection when the library reuses it.
#[map(name = "SSL_CONNS")]
static SSL_CONNS: LruHashMap<SslKey, u64> = LruHashMap::with_max_entries(65_536, 0);

/// Per thread: the TLS socket it last read or wrote outside a TLS call.
#[map(name = "LAST_TLS_SK")]
static LAST_TLS_SK: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16_384, 0);

/// Process ids that just exec'd or mapped a file's code, for userspace to
/// look for TLS libraries in.
#[map(name = "EXECS")]
pub static EXECS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

// SSL_read(SSL *s, void *buf, int num), SSL_write(SSL *s, const void *buf, int num)
#[uprobe]
pub fn ssl_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, false);
    0
}

// SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes) and
// SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
#[uprobe]
pub fn ssl_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, true);
    0
}

#[uretprobe]
pub fn ssl_read_exit(ctx: RetProbeContext) -> u32 {
    exit(&ctx, Direction::Ingress, DataSource::SslRead);
    0
}

#[uretprobe]
pub fn ssl_write_exit(ctx: RetProbeContext) -> u32 {
    exit(&ctx, Direction::Egress, DataSource::SslWrite);
    0
}

/// `sched:sched_process_exec`: tell userspace which process to look at
/// (its executable may carry OpenSSL, as node's does).
#[tracepoint]
pub fn tls_exec(_ctx: TracePointContext) -> u32 {
    look_at_me();
    0
}

/// `syscalls:sys_enter_mmap` of a file with `PROT_EXEC`: the loader mapping
/// a library's code (at start or on `dlopen`, e.g. Python's `import ssl`),
/// so userspace looks at the process's maps as soon as it can. Anonymous
/// and non-executable mappings (malloc, JIT heaps, data) return at once.
#[tracepoint]
pub fn tls_mmap(ctx: TracePointContext) -> u32 {
    let p = ctx.as_ptr() as *const u8;
    // SAFETY: direct loads from the tracepoint record at offsets the
    // kernel-format test checks.
    let prot: u64 = unsafe { field(p, mm::PROT) };
    let fd: u64 = unsafe { field(p, mm::FD) };
    if prot & PROT_EXEC != 0 && (fd as i64) >= 0 {
        look_at_me();
    }
    0
}

const PROT_EXEC: u64 = 4;

/// Per CPU: the process last hinted and when, so a program start's dozens
/// of library mappings send one record, not one each.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastHint {
    pub tgid: u32,
    pub _pad: u32,
    pub ts_ns: u64,
}

#[map(name = "LAST_HINT")]
static LAST_HINT: PerCpuArray<LastHint> = PerCpuArray::with_max_entries(1, 0);

/// Hints of one process closer than this are one: userspace looks at a
/// hinted process at its next poll and again a poll (100 ms) later, by
/// which time the mappings made in this window exist.
const HINT_MERGE_NS: u64 = 50_000_000;

#[inline(always)]
fn look_at_me() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if config().is_some_and(|c| c.self_tgid == tgid) {
        return;
    }
    if let Some(last) = LAST_HINT.get_ptr_mut(0) {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        let last = unsafe { &mut *last };
        if last.tgid == tgid && now.wrapping_sub(last.ts_ns) < HINT_MERGE_NS {
            return;
        }
        last.tgid = tgid;
        last.ts_ns = now;
    }
    // Full: dropped; the periodic rescan catches up.
    let _ = EXECS.output::<u32>(&tgid, 0);
}

#[inline(always)]
fn enter(ctx: &ProbeContext, ex: bool) {
    let Some(cfg) = config() else { return };
    if cfg.cost_stage == cost_stage::ATTACH {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Out of scope: no call recorded, so the return probe ends at its first
    // lookup and no plaintext is sent.
    if tgid == cfg.self_tgid || !crate::scope::admits(cfg, tgid) {
        return;
    }
    let call = TlsCall {
        ssl: ctx.arg(0).unwrap_or(0),
        buf: ctx.arg(1).unwrap_or(0),
        done_ptr: if ex { ctx.arg(3).unwrap_or(0) } else { 0 },
        sk: 0,
    };
    let _ = TLS_CALLS.insert(&pid_tgid, &call, 0);
}

#[inline(always)]
fn exit(ctx: &RetProbeContext, dir: Direction, source: DataSource) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = TLS_CALLS.get_ptr(&pid_tgid) else {
        return;
    };
    // SAFETY: value pointer from the map, copied before the entry goes.
    let call = unsafe { *call };
    let _ = TLS_CALLS.remove(&pid_tgid);
    let Some(cfg) = config() else { return };
    let rc = ctx.ret::<u64>() as i32;
    let len: u64 = if call.done_ptr != 0 {
        // The _ex calls return 1 on success and store the count.
        if rc != 1 {
            return;
        }
        // SAFETY: a user pointer the caller passed; read fault-tolerantly.
        match unsafe { bpf_probe_read_user(call.done_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(KernelCounter::ReadFailed);
                return;
            }
        }
    } else if rc > 0 {
        rc as u64
    } else {
        return;
    };
    deliver(
        cfg,
        pid_tgid,
        call.ssl,
        call.sk,
        call.buf,
        len,
        dir,
        source,
        || {
            // SAFETY: value pointer from the map.
            LAST_TLS_SK.get_ptr(&pid_tgid).map(|sk| unsafe { *sk })
        },
    );
}

/// Plaintext of one TLS library call (`len` bytes at user address `buf`)
/// through the socket capture path. `conn_ptr` is the library's connection
/// pointer (`SSL*`, Go's `*tls.Conn`), `call_sk` the socket of a syscall
/// made inside the call (0: none), `fallback` the socket to assume when
/// neither that nor a remembered one is known. Shared by OpenSSL and Go so
/// both follow the same rules.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn deliver<F: FnOnce() -> Option<u64>>(
    cfg: &agent_common::ProbeConfig,
    pid_tgid: u64,
    conn_ptr: u64,
    call_sk: u64,
    buf: u64,
    len: u64,
    dir: Direction,
    source: DataSource,
    fallback: F,
) {
    if len == 0 || len > u32::MAX as u64 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: conn_ptr,
    };
    let known = SSL_CONNS.get_ptr(&key);
    let sk = if call_sk != 0 {
        call_sk
    } else if let Some(c) = known
        // SAFETY: value pointer from the map.
        && is_live_tls(unsafe { *c })
    {
        unsafe { *c }
    } else if let Some(sk) = fallback() {
        sk
    } else {
        count(KernelCounter::TlsUnattributed);
        return;
    };
    // SAFETY: value pointer from the map.
    if known.is_none_or(|c| unsafe { *c } != sk) {
        let _ = SSL_CONNS.insert(&key, &sk, 0);
    }
    // The connection's own state: a socket closed since (or never seen as
    // TLS) has nothing to attribute the plaintext to.
    let Some(state) = SOCKS.get_ptr_mut(&sk) else {
        count(KernelCounter::TlsUnattributed);
        return;
    };
    // SAFETY: value pointer from the map.
    let verdict = unsafe { (*state).tls_verdict };
    if verdict == Verdict::NotHttp as u32 {
        return;
    }
    if cfg.capture_http == 0 || cfg.cost_stage == cost_stage::CLASSIFY {
        return;
    }
    let at = Capture {
        sk,
        dir,
        len: len as u32,
        fd: -1,
        source,
        flags: DATA_FLAG_TLS,
    };
    let buffer = (cfg.cost_stage != cost_stage::TRANSFER).then_some((buf, len));
    let known_h2 = verdict == Verdict::Http2 as u32;
    let known = verdict == Verdict::Http as u32 || known_h2;
    let (captured, h2_here) = emit(cfg, &at, buffer, known, |v, _| {
        if v == Verdict::NotHttp {
            // Another protocol or garbage inside TLS.
            count(KernelCounter::TlsNotHttpConnections);
        }
        // SAFETY: value pointer from the map.
        unsafe { (*state).tls_verdict = v as u32 };
    });
    // ALPN h2: the plaintext starts with the client preface.
    if (known_h2 || h2_here) && buffer.is_some() {
        let src = crate::http2::Source::Plain(buf);
        let start = h2_here.then_some(crate::http2::PREFACE_LEN);
        crate::http2::walk(sk, dir, len as u32, src, captured, start);
    }
}

/// Is `sk` still a live TLS socket? (Closed sockets leave `SOCKS`; a
/// remembered `SSL*` → `sk` must not outlive its connection.)
#[inline(always)]
fn is_live_tls(sk: u64) -> bool {
    match SOCKS.get_ptr(&sk) {
        // SAFETY: value pointer from the map.
        Some(s) => unsafe { (*s).verdict == Verdict::Tls as u32 },
        None => false,
    }
}

/// A socket syscall on a connection not (yet) known as HTTP: if it is TLS
/// (its verdict, or the thread is inside a TLS call) count its ciphertext,
/// remember the socket, and return true (nothing to capture).
#[inline(always)]
pub fn on_socket_io(sk: u64, pid_tgid: u64, verdict: u32, len: i32) -> bool {
    let is_tls = verdict == Verdict::Tls as u32;
    let in_call = match TLS_CALLS.get_ptr_mut(&pid_tgid) {
        Some(c) => {
            // SAFETY: value pointer from the map; only this thread writes it.
            unsafe { (*c).sk = sk };
            true
        }
        // Not in an OpenSSL call: maybe in a Go crypto/tls one.
        None => crate::gotls::on_socket_io(sk, pid_tgid, is_tls),
    };
    if !is_tls && !in_call {
        return false;
    }
    if !is_tls {
        // Bytes seen first inside a TLS call (a connection older than the
        // probes): ciphertext whatever they look like.
        crate::sock::set_verdict(sk, (pid_tgid >> 32) as u32, Verdict::Tls);
        count(KernelCounter::TlsConnections);
    } else if !in_call {
        let _ = LAST_TLS_SK.insert(&pid_tgid, &sk, 0);
    }
    count(KernelCounter::TlsSyscalls);
    count_n(KernelCounter::TlsBytes, len as u64);
    true
}

/// The first bytes of a connection were a TLS record (seen outside a TLS
/// call: the handshake).
#[inline(always)]
pub fn on_first_record(sk: u64, len: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = LAST_TLS_SK.insert(&pid_tgid, &sk, 0);
    let _ = crate::gotls::on_socket_io(sk, pid_tgid, true);
    count(KernelCounter::TlsConnections);
    count(KernelCounter::TlsSyscalls);
    count_n(KernelCounter::TlsBytes, len as u64);
}
