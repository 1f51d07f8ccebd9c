//! TLS plaintext at Go's `crypto/tls.(*Conn).Read` and `(*Conn).Write`.
//!
//! Go passes arguments in registers (ABIInternal, amd64): at entry the
//! receiver `*Conn` is in RAX and the slice `b` in RBX (pointer), RCX
//! (length) and RDI (capacity); R14 always holds the running goroutine `g`.
//! The results come back in RAX (`n`) and RBX/RCX (`err`). There are no
//! uretprobes here: a uretprobe overwrites the return address on the stack,
//! and Go copies goroutine stacks when they grow, so userspace puts a plain
//! uprobe on every RET instruction of the two functions instead.
//!
//! A call is keyed by `(tgid, g)`, not by thread: a goroutine that finds no
//! data parks on EAGAIN and may resume on another OS thread. The socket is
//! the one of a syscall made inside the call: `sock:sock_*_length` reads the
//! user R14 of the thread from its saved registers (`bpf_task_pt_regs`) to
//! find the goroutine, so the tie holds across threads. It is remembered
//! per `(tgid, *Conn)` (the same map as OpenSSL's `SSL*`) for reads served
//! from the TLS buffer; the goroutine's last TLS socket outside a call (its
//! handshake) stands in for a connection's first such read.
use agent_common::{DataSource, Direction};
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
    },
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};

use crate::maps::config;

/// A goroutine of one process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoKey {
    pub tgid: u32,
    pub _pad: u32,
    pub g: u64,
}

/// A `Read`/`Write` in flight on one goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoCall {
    pub conn: u64,
    pub buf: u64,
    pub len: u64,
    /// Socket of a syscall made inside the call, 0 if none (yet).
    pub sk: u64,
    /// 1 for `Write`: its plaintext is sent at the call's first socket
    /// syscall (see [`on_socket_io`]).
    pub write: u32,
    /// 1 once the plaintext went out.
    pub sent: u32,
}

/// LRU: a call whose return never comes (the goroutine panicked through
/// it, the process died) must not leak its entry.
#[map(name = "GO_CALLS")]
static GO_CALLS: LruHashMap<GoKey, GoCall> = LruHashMap::with_max_entries(16_384, 0);

/// Processes running attached Go code (set at the first call; userspace
/// also sets it when it attaches), so socket syscalls of every other process
/// skip the goroutine lookup.
#[map(name = "GO_PROCS")]
static GO_PROCS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16_384, 0);

/// Per goroutine: the TLS socket it last read or wrote outside a call.
#[map(name = "GO_LAST_SK")]
static GO_LAST_SK: LruHashMap<GoKey, u64> = LruHashMap::with_max_entries(16_384, 0);

/// Entry of `(*Conn).Read`.
#[uprobe]
pub fn go_tls_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, 0);
    0
}

/// Entry of `(*Conn).Write` (same arguments as `Read`).
#[uprobe]
pub fn go_tls_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, 1);
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, write: u32) {
    let Some(cfg) = config() else { return };
    if cfg.cost_stage == agent_common::cost_stage::ATTACH {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.self_tgid || !crate::scope::admits(cfg, tgid) {
        return;
    }
    let r = regs(ctx);
    if r.g == 0 {
        return;
    }
    let call = GoCall {
        conn: r.rax,
        buf: r.rbx,
        len: r.rcx,
        sk: 0,
        write,
        sent: 0,
    };
    // Entered again after the prologue grew the stack: same values.
    let _ = GO_CALLS.insert(&key(tgid, r.g), &call, 0);
    if GO_PROCS.get_ptr(&tgid).is_none() {
        let _ = GO_PROCS.insert(&tgid, &1, 0);
    }
}

/// A RET of `(*Conn).Read`: `n` bytes of plaintext are in `b[:n]`.
#[uprobe]
pub fn go_tls_read_ret(ctx: ProbeContext) -> u32 {
    ret(&ctx, Direction::Ingress, DataSource::GoTlsRead);
    0
}

/// A RET of `(*Conn).Write`: `b[:n]` was written (sent here only when no
/// socket syscall inside the call was seen).
#[uprobe]
pub fn go_tls_write_ret(ctx: ProbeContext) -> u32 {
    ret(&ctx, Direction::Egress, DataSource::GoTlsWrite);
    0
}

struct Regs {
    rax: u64,
    rbx: u64,
    rcx: u64,
    g: u64,
}

#[inline(always)]
fn regs(ctx: &ProbeContext) -> Regs {
    let r = ctx.regs as *const pt_regs;
    // SAFETY: direct loads from the uprobe's context (the user registers).
    unsafe {
        Regs {
            rax: core::ptr::read_volatile(&(*r).rax),
            rbx: core::ptr::read_volatile(&(*r).rbx),
            rcx: core::ptr::read_volatile(&(*r).rcx),
            g: core::ptr::read_volatile(&(*r).r14),
        }
    }
}

#[inline(always)]
fn key(tgid: u32, g: u64) -> GoKey {
    GoKey { tgid, _pad: 0, g }
}

#[inline(always)]
fn ret(ctx: &ProbeContext, dir: Direction, source: DataSource) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let r = regs(ctx);
    let k = key(tgid, r.g);
    let Some(call) = GO_CALLS.get_ptr(&k) else {
        return;
    };
    // SAFETY: value pointer from the map, copied before the entry goes.
    let call = unsafe { *call };
    let _ = GO_CALLS.remove(&k);
    let Some(cfg) = config() else { return };
    let n = r.rax as i64;
    // n ≤ len(b) by contract; a value outside it is not trusted.
    if call.sent != 0 || n <= 0 || n as u64 > call.len {
        return;
    }
    crate::tls::deliver(
        cfg,
        pid_tgid,
        call.conn,
        call.sk,
        call.buf,
        n as u64,
        dir,
        source,
        // SAFETY: value pointer from the map.
        || GO_LAST_SK.get_ptr(&k).map(|sk| unsafe { *sk }),
    );
}

/// A socket syscall of a TLS (or not yet classified) connection outside an
/// OpenSSL call. In a Go process, find the goroutine from the thread's
/// user R14: inside a `Read`/`Write` name the call's socket and return true;
/// outside one remember the goroutine's TLS socket (`tls`: the connection's
/// verdict is TLS).
#[inline(always)]
pub fn on_socket_io(sk: u64, pid_tgid: u64, tls: bool) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    if GO_PROCS.get_ptr(&tgid).is_none() {
        return false;
    }
    let Some(g) = user_g() else { return false };
    let k = key(tgid, g);
    if let Some(c) = GO_CALLS.get_ptr_mut(&k) {
        // SAFETY: value pointer from the map; only this goroutine writes it.
        let c = unsafe { &mut *c };
        c.sk = sk;
        // A Write's plaintext goes out before its first record does: sent
        // at its return instead, it could reach userspace after the peer's
        // answer, read on another CPU (seen: each client connection's first
        // response overtook its request).
        if c.write != 0 && c.sent == 0 {
            c.sent = 1;
            if let Some(cfg) = config() {
                crate::tls::deliver(
                    cfg,
                    pid_tgid,
                    c.conn,
                    sk,
                    c.buf,
                    c.len,
                    Direction::Egress,
                    DataSource::GoTlsWrite,
                    || None,
                );
            }
        }
        return true;
    }
    if tls {
        let _ = GO_LAST_SK.insert(&k, &sk, 0);
    }
    false
}

/// The user-mode R14 (Go's `g`) of the current thread, from the registers
/// saved at syscall entry.
#[inline(always)]
fn user_g() -> Option<u64> {
    // SAFETY: helpers on the current task; the pt_regs pointer is a kernel
    // address read fault-tolerantly.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    if regs.is_null() {
        return None;
    }
    let g = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).r14)) }.ok()?;
    (g != 0).then_some(g)
}
