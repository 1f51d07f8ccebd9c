//! HTTP/1.x capture: a [`DataEvent`] per socket syscall on connections whose
//! bytes start like HTTP/1.x, with a bounded payload prefix; other connections
//! are classified once and then only counted.
use agent_common::{
    DATA_EVENT_FIXED, DATA_FLAG_CLASSIFIED_HERE, DATA_FLAG_UNDECIDED, DataEvent, DataSource,
    Direction, EventKind, KernelCounter, MAX_PAYLOAD, ProbeConfig, cost_stage,
    http_prefix::{PREFIX_LEN, PrefixClass, classify, is_tls_record},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::map,
    maps::PerCpuArray,
};

use crate::{
    http2,
    maps::{EVENTS, count, output_flags},
    sock::{Verdict, count_non_http, set_verdict},
    syscall::{self, first_buffer},
};

/// Where a [`DataEvent`] is built: too big for the 512-byte BPF stack.
#[map(name = "DATA_SCRATCH")]
static DATA_SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// Emit the data event for `len` bytes moved on `sk` by the current syscall;
/// `verdict`: the connection's so far (HTTP/1, HTTP/2 or unknown). On
/// HTTP/2 the frame walk (`http2.rs`) sends what lies beyond the prefix.
#[inline(always)]
pub fn capture(cfg: &ProbeConfig, sk: u64, dir: Direction, len: u32, verdict: u32, tgid: u32) {
    let known_h2 = verdict == Verdict::Http2 as u32;
    let known_http = verdict == Verdict::Http as u32 || known_h2;
    let args = syscall::current();
    // Measuring the transfer alone: an event without payload, nothing read.
    let transfer_only = cfg.cost_stage == cost_stage::TRANSFER;
    let inspectable =
        !transfer_only && !matches!(args.source, DataSource::Sendfile | DataSource::Other);
    if !inspectable && !known_http && !transfer_only {
        // Bytes we cannot look at on a connection not yet classified.
        count(KernelCounter::DataUnclassified);
        return;
    }
    let buffer = if inspectable {
        match first_buffer(&args) {
            Err(_) => {
                count(KernelCounter::ReadFailed);
                if !known_http {
                    return;
                }
                None
            }
            Ok(b) => Some(b),
        }
    } else {
        None
    };
    let at = Capture {
        sk,
        dir,
        len,
        fd: args.fd,
        source: args.source,
        flags: 0,
    };
    // The verdict is acted on after `emit`, not in its callback: a callback
    // this size was compiled as a BPF subprogram of its own, whose stack
    // with the program's exceeded 512 bytes once the HTTP/2 walk came.
    let mut verdict = None;
    let (captured, h2_here) = emit(cfg, &at, buffer, known_http, |v, wn| {
        verdict = Some((v, wn));
    });
    match verdict {
        // Ciphertext: the plaintext comes from the TLS library probes.
        Some((Verdict::NotHttp, (w, n))) if is_tls_record(w, n) => {
            set_verdict(sk, tgid, Verdict::Tls);
            crate::tls::on_first_record(sk, len);
        }
        Some((Verdict::NotHttp, _)) => {
            set_verdict(sk, tgid, Verdict::NotHttp);
            count(KernelCounter::NonHttpConnections);
            count_non_http(len as i32);
        }
        Some((v, _)) => set_verdict(sk, tgid, v),
        None => {}
    }
    if (known_h2 || h2_here) && !transfer_only {
        let start = h2_here.then_some(http2::PREFACE_LEN);
        http2::walk(sk, dir, len, http2::Source::Syscall(&args), captured, start);
    }
}

/// Where the bytes of a data event were seen.
pub struct Capture {
    pub sk: u64,
    pub dir: Direction,
    /// Bytes moved.
    pub len: u32,
    pub fd: i32,
    pub source: DataSource,
    /// `DATA_FLAG_*` bits to add.
    pub flags: u32,
}

/// Classify (unless `known_http`) and copy the prefix of the user buffer
/// `(address, length)` and send the data event. `set_verdict` records what
/// the first bytes showed (with those bytes as a little-endian word and
/// their count), where the caller keeps its per-connection verdict; on
/// `NotHttp` nothing is sent. Shared by socket syscalls and TLS library
/// calls, so both follow the same capture rules and bounds. Gives the bytes
/// of payload the event carried, and whether these bytes began an HTTP/2
/// connection (its client preface; counted here).
#[inline(always)]
pub fn emit<F: FnOnce(Verdict, (u64, usize))>(
    cfg: &ProbeConfig,
    at: &Capture,
    buffer: Option<(u64, u64)>,
    known_http: bool,
    set_verdict: F,
) -> (u32, bool) {
    let mut h2 = false;
    let Some(ev) = DATA_SCRATCH.get_ptr_mut(0) else {
        return (0, h2);
    };
    // SAFETY: per-CPU scratch; a BPF program does not migrate mid-run.
    let ev = unsafe { &mut *ev };
    let mut flags = at.flags;
    let mut captured = 0u32;
    let len = at.len;
    if let Some((buf, buf_len)) = buffer {
        let avail = if (len as u64) < buf_len {
            len as u64
        } else {
            buf_len
        };
        if !known_http {
            match classify_user(ev, buf, avail) {
                Some((PrefixClass::Http, w)) => {
                    set_verdict(Verdict::Http, w);
                    flags |= DATA_FLAG_CLASSIFIED_HERE;
                }
                Some((PrefixClass::Http2, w)) => {
                    set_verdict(Verdict::Http2, w);
                    flags |= DATA_FLAG_CLASSIFIED_HERE;
                    count(KernelCounter::Http2Connections);
                    h2 = true;
                }
                Some((PrefixClass::Undecided, _)) => flags |= DATA_FLAG_UNDECIDED,
                Some((PrefixClass::NotHttp, w)) => {
                    set_verdict(Verdict::NotHttp, w);
                    return (0, h2);
                }
                None => {
                    count(KernelCounter::ReadFailed);
                    return (0, h2);
                }
            }
        }
        captured = copy_prefix(ev, buf, avail);
    }
    // comm and cgroup id travel in the SockOwnerEvent instead (cheaper).
    let pid_tgid = bpf_get_current_pid_tgid();
    let head = &mut ev.head;
    head.header.kind = EventKind::Data as u32;
    head.header.pid = pid_tgid as u32;
    head.header.tgid = (pid_tgid >> 32) as u32;
    // SAFETY: helper without arguments.
    head.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    head.sk = at.sk;
    head.fd = at.fd;
    head.direction = at.dir as u32;
    head.source = at.source as u32;
    head.len = len;
    head.captured = captured;
    head.flags = flags;
    head.offset = 0;
    let total = DATA_EVENT_FIXED + captured as usize;
    if total > core::mem::size_of::<DataEvent>() {
        return (0, h2);
    }
    // SAFETY: `total` ≤ size_of::<DataEvent>() and `ev` is a whole DataEvent.
    let bytes = unsafe { core::slice::from_raw_parts(ev as *const DataEvent as *const u8, total) };
    if EVENTS.output::<[u8]>(bytes, output_flags(cfg)).is_err() {
        count(KernelCounter::RingbufFull);
    }
    (captured, h2)
}

/// Classify the first bytes at `buf` (`avail` valid), using the payload area
/// as the read target; with the verdict, the bytes read (as a little-endian
/// word) and how many. `None` when the user memory could not be read.
#[inline(always)]
fn classify_user(ev: &mut DataEvent, buf: u64, avail: u64) -> Option<(PrefixClass, (u64, usize))> {
    let n = if avail < PREFIX_LEN as u64 {
        avail as u32
    } else {
        PREFIX_LEN as u32
    };
    if n == 0 {
        return Some((PrefixClass::Undecided, (0, 0)));
    }
    let dst = ev.payload.as_mut_ptr();
    // SAFETY: n ≤ 8 ≤ MAX_PAYLOAD bytes into the scratch payload.
    let rc = unsafe { bpf_probe_read_user(dst.cast(), n & 15, buf as *const _) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the payload holds at least 8 bytes; those past n are ignored.
    let w = unsafe { core::ptr::read_unaligned(dst as *const u64) };
    let n = n as usize;
    Some((classify(w, n), (w, n)))
}

/// Copy up to `MAX_PAYLOAD` of the `avail` bytes at `buf`; bytes copied.
#[inline(always)]
fn copy_prefix(ev: &mut DataEvent, buf: u64, avail: u64) -> u32 {
    let mut n = avail as u32;
    if n > MAX_PAYLOAD as u32 {
        n = MAX_PAYLOAD as u32;
    }
    // Keep the bound visible to the verifier.
    n &= (2 * MAX_PAYLOAD - 1) as u32;
    if n > MAX_PAYLOAD as u32 {
        return 0;
    }
    // SAFETY: n ≤ MAX_PAYLOAD bytes into the payload array.
    let rc = unsafe { bpf_probe_read_user(ev.payload.as_mut_ptr().cast(), n, buf as *const _) };
    if rc != 0 {
        count(KernelCounter::ReadFailed);
        return 0;
    }
    n
}
