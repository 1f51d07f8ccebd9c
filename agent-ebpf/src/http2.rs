//! HTTP/2 capture: on a connection that began with the client preface, each
//! syscall's first event (`http.rs`, the usual prefix) is followed by
//! segments (`DATA_FLAG_SEGMENT`) holding what userspace needs beyond that
//! prefix: every frame header, and the whole payload of the frames it reads
//! (HEADERS, CONTINUATION, RST_STREAM, SETTINGS, PUSH_PROMISE, GOAWAY). DATA
//! payloads stay lengths. The frames are walked per syscall, in at most
//! [`MAX_STEPS`] steps (a frame or a buffer boundary each) over at most
//! [`MAX_IOV`] buffers; a frame that
//! continues into the next syscall (a 1 MiB DATA frame written in pieces) is
//! carried in per-direction state, so the trailers' HEADERS frame that follows
//! a large DATA frame in one write is still found. When a bound is hit the
//! direction stops being walked and `Http2WalkLost` counts it.
use agent_common::{
    DATA_EVENT_FIXED, DATA_FLAG_SEGMENT, DataEventHead, DataSource, Direction, EventKind,
    KernelCounter, MAX_PAYLOAD,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_probe_read_user},
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};

use crate::{
    maps::{EVENTS, count, output_flags},
    syscall::SyscallArgs,
};

/// Steps of the walk per syscall: one per frame, plus one per buffer
/// boundary crossed. gRPC's C core writes a HEADERS frame as one iovec per
/// encoded field (a response head took 12 iovecs here), so buffers are many.
pub const MAX_STEPS: u32 = 128;
/// Buffers (iovecs) of one syscall looked at.
pub const MAX_IOV: u64 = 64;
/// Length of the client preface, which precedes the client's first frame.
pub const PREFACE_LEN: u32 = 24;
const HEADER_LEN: i64 = 9;

/// Where the next frame starts in one direction of a connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Walk {
    /// Offset of the next frame header from the start of the next syscall.
    next_hdr: u32,
    /// Bytes at the start of the next syscall that belong to the payload of
    /// a frame userspace reads (they must be sent).
    need: u32,
    /// The first `carry_len` bytes of a frame header that the previous
    /// syscall ended in (little-endian); the rest opens the next one.
    carry: u64,
    carry_len: u32,
    /// 1 once a bound was hit: this direction is no longer walked.
    lost: u32,
}

/// Per (socket, direction): `sk | direction` (socket pointers are aligned).
#[map(name = "H2_WALKS")]
static H2_WALKS: LruHashMap<u64, Walk> = LruHashMap::with_max_entries(65_536, 0);

/// The syscall's buffers: its iovec array (read one entry at a time as the
/// walk reaches it) or its one buffer.
#[repr(C)]
pub struct Iovs {
    /// User address of the `struct iovec` array; 0: one buffer, `base0`.
    vec: u64,
    /// Entries in the array (or 1).
    n: u64,
    base0: u64,
    len0: u64,
    /// Where [`launder`] passes values through.
    tmp: u32,
    _pad: u32,
}

#[map(name = "H2_IOVS")]
static H2_IOVS: PerCpuArray<Iovs> = PerCpuArray::with_max_entries(1, 0);

/// A segment event under construction (too big for the BPF stack).
#[repr(C)]
pub struct SegEvent {
    head: DataEventHead,
    payload: [u8; MAX_PAYLOAD],
}

#[map(name = "H2_SEG")]
static H2_SEG: PerCpuArray<SegEvent> = PerCpuArray::with_max_entries(1, 0);

/// Frame types whose payload userspace reads.
#[inline(always)]
fn wants_payload(kind: u8) -> bool {
    matches!(kind, 0x1 | 0x3 | 0x4 | 0x5 | 0x7 | 0x9)
}

/// The buffers of the current syscall (or of a TLS call's plaintext).
pub enum Source<'a> {
    Syscall(&'a SyscallArgs),
    Plain(u64),
}

/// The walk's state across [`step`]s, in offsets from the syscall's start.
#[repr(C)]
struct Step {
    sk: u64,
    dir: u32,
    /// [`STOP_END`] or [`STOP_LOST`] once the walk stops.
    stop: u32,
    len: i64,
    /// The current buffer: its index, where it starts and ends, its address.
    iov: u64,
    cur_start: i64,
    cur_end: i64,
    cur_base: u64,
    /// Where the next frame header starts (negative: its first bytes came
    /// with the previous syscall).
    off: i64,
    /// The header's first `carry_len` bytes, already read (little-endian).
    carry: u64,
    carry_len: i64,
    /// What userspace has up to, and the end of the bytes it needs.
    covered: i64,
    need_end: i64,
}

/// The walk's [`Step`] lives in a map, not on the stack: the steps then
/// start from values the verifier knows nothing about, so it checks the
/// step once instead of for every combination of ranges the walk can
/// reach (on the stack: past its 1M-instruction budget).
#[map(name = "H2_STEP")]
static H2_STEP: PerCpuArray<Step> = PerCpuArray::with_max_entries(1, 0);

const STOP_END: u32 = 1;
const STOP_LOST: u32 = 2;

/// Walk the frames of `len` bytes moved on `sk` in `dir`, of which the
/// syscall's first event held `prefix`. `start`: this syscall carried the
/// client preface, its first frame is that many bytes in (else the walk
/// goes on where the direction's last syscall left it).
#[inline(always)]
pub fn walk(sk: u64, dir: Direction, len: u32, src: Source<'_>, prefix: u32, start: Option<u32>) {
    let key = sk | dir as u64;
    if start.is_some() {
        // The preface: a new connection, whatever an earlier socket at this
        // address left behind.
        let _ = H2_WALKS.remove(&(sk | (1 - dir as u64)));
    }
    let existing = if start.is_some() {
        None
    } else {
        H2_WALKS.get_ptr_mut(&key)
    };
    let st = match existing {
        Some(s) => s,
        None => {
            // One literal for both cases (a second would cost stack).
            let fresh = Walk {
                next_hdr: start.unwrap_or(0),
                need: 0,
                carry: 0,
                carry_len: 0,
                lost: 0,
            };
            let _ = H2_WALKS.insert(&key, &fresh, 0);
            match H2_WALKS.get_ptr_mut(&key) {
                Some(s) => s,
                None => return,
            }
        }
    };
    // SAFETY: value pointer from the map; one syscall per direction at a time.
    let st = unsafe { &mut *st };
    if st.lost != 0 {
        return;
    }
    let Some(iovs) = H2_IOVS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let iovs = unsafe { &mut *iovs };
    if fill_iovs(iovs, &src).is_none() {
        // Bytes that cannot be read (sendfile): a hole, fine inside a DATA payload.
        iovs.n = 0;
    }
    let len = len as i64;
    let (cur_end, cur_base) = match buffer(iovs, 0) {
        Some((base, l)) => (min(l as i64, len), base),
        None => (0, 0),
    };
    let carry_len = st.carry_len as i64;
    let Some(wp) = H2_STEP.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let w = unsafe { &mut *wp };
    // Field by field: a `Step` literal would be built on the stack first,
    // and this program's stack plus the step's must stay under 512 bytes.
    w.sk = sk;
    w.dir = dir as u32;
    w.stop = 0;
    w.len = len;
    w.iov = 0;
    w.cur_start = 0;
    w.cur_end = cur_end;
    w.cur_base = cur_base;
    w.off = if carry_len > 0 {
        -carry_len
    } else {
        st.next_hdr as i64
    };
    w.carry = st.carry;
    w.carry_len = carry_len;
    w.covered = prefix as i64;
    w.need_end = st.need as i64;
    // One frame or buffer boundary per bpf_loop iteration: the verifier
    // checks the step once (a plain loop over frames and buffers exceeded
    // its budget).
    // SAFETY: helper 181 with a static callback and no context.
    unsafe {
        bpf_loop(
            MAX_STEPS,
            step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: the callback wrote these through the map: read them anew.
    let (stop, carry, carry_len, off, need_end) = unsafe {
        (
            core::ptr::read_volatile(&w.stop),
            core::ptr::read_volatile(&w.carry),
            core::ptr::read_volatile(&w.carry_len),
            core::ptr::read_volatile(&w.off),
            core::ptr::read_volatile(&w.need_end),
        )
    };
    if stop != STOP_END {
        st.lost = 1;
        count(KernelCounter::Http2WalkLost);
        return;
    }
    st.carry = carry;
    st.carry_len = carry_len as u32;
    st.next_hdr = if carry_len > 0 { 0 } else { (off - len) as u32 };
    st.need = if need_end > len {
        (need_end - len) as u32
    } else {
        0
    };
}

/// One step: the needed bytes left in this buffer, or one frame header
/// (carried over a buffer boundary if split). 0: go on; 1: stop.
#[inline(never)]
extern "C" fn step(_i: u32, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = H2_STEP.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, filled by `walk` on this CPU.
    let w = unsafe { &mut *w };
    // Needed bytes (a header block) running on from an earlier frame.
    if w.need_end > w.covered {
        if w.covered < w.cur_end {
            let from = if w.covered > w.cur_start {
                w.covered
            } else {
                w.cur_start
            };
            let to = min(w.need_end, w.cur_end);
            send(w, from, to);
        }
        // The rest is in the next buffer (nginx: a frame header and its
        // header block in two iovecs), unless it is in the next syscall.
        if w.need_end > w.cur_end && w.cur_end < w.len {
            return advance(w);
        }
    }
    if w.off + HEADER_LEN > w.len && w.off + w.carry_len >= w.len {
        // The next header starts in a later syscall, or all its bytes here are carried.
        w.stop = STOP_END;
        return 1;
    }
    let hs = w.off + w.carry_len;
    if hs >= w.cur_end {
        return advance(w);
    }
    let lim = min(w.cur_end, w.len);
    let want = HEADER_LEN - w.carry_len;
    let here = lim - hs;
    let n = if here < 8 { here } else { 8 };
    let Some(rd) = read_word(w.cur_base + (hs - w.cur_start) as u64, n as u32) else {
        w.stop = STOP_LOST;
        return 1;
    };
    let sh = (8 * w.carry_len) as u64;
    let word = if sh < 64 {
        w.carry | (rd << sh)
    } else {
        w.carry
    };
    if here < want {
        // The header is split by the end of this buffer (or syscall): carry it.
        w.carry = word;
        w.carry_len += here;
        send(w, hs, lim);
        if lim == w.len {
            w.stop = STOP_END;
            return 1;
        }
        return advance(w);
    }
    let flen = ((word & 0xff) << 16 | (word >> 8 & 0xff) << 8 | (word >> 16 & 0xff)) as i64;
    let kind = (word >> 24) as u8;
    let need_end = w.off + HEADER_LEN + if wants_payload(kind) { flen } else { 0 };
    // From the header on: what lies between is a DATA payload (a hole).
    let from = if hs > w.covered { hs } else { w.covered };
    send(w, from, min(need_end, w.cur_end));
    w.need_end = need_end;
    w.off += HEADER_LEN + flen;
    w.carry = 0;
    w.carry_len = 0;
    0
}

/// Move to the next buffer; none left with bytes still to read: lost.
#[inline(always)]
fn advance(w: &mut Step) -> i64 {
    let Some(iovs) = H2_IOVS.get_ptr(0) else {
        w.stop = STOP_LOST;
        return 1;
    };
    // SAFETY: per-CPU scratch.
    let iovs = unsafe { &*iovs };
    w.iov += 1;
    if w.iov >= MAX_IOV || w.cur_end >= w.len {
        w.stop = STOP_LOST;
        return 1;
    }
    let Some((base, l)) = buffer(iovs, w.iov) else {
        w.stop = STOP_LOST;
        return 1;
    };
    w.cur_start = w.cur_end;
    w.cur_end = min(w.cur_start + l as i64, w.len);
    w.cur_base = base;
    0
}

/// Address and length of buffer `i` of the syscall.
#[inline(always)]
fn buffer(iovs: &Iovs, i: u64) -> Option<(u64, u64)> {
    if i >= iovs.n {
        return None;
    }
    if iovs.vec == 0 {
        return (i == 0).then_some((iovs.base0, iovs.len0));
    }
    // SAFETY: user memory read with a fault-tolerant helper.
    let v: [u64; 2] =
        unsafe { aya_ebpf::helpers::bpf_probe_read_user((iovs.vec + 16 * i) as *const [u64; 2]) }
            .ok()?;
    Some((v[0], v[1]))
}

/// `v`, as the verifier sees a value loaded from a map: with no link to how
/// it was computed. A size or index the verifier must bound would otherwise
/// make it track every offset of the walk precisely, and the states of its
/// steps would never merge (measured: over its 1M-instruction budget).
#[inline(always)]
fn launder(v: u32) -> u32 {
    let Some(p) = H2_IOVS.get_ptr_mut(0) else {
        return u32::MAX;
    };
    // SAFETY: per-CPU scratch; volatile so that LLVM keeps the round trip.
    unsafe {
        core::ptr::write_volatile(&mut (*p).tmp, v);
        core::ptr::read_volatile(&(*p).tmp)
    }
}

#[inline(always)]
fn min(a: i64, b: i64) -> i64 {
    if a < b { a } else { b }
}

/// Up to 8 bytes at `addr` as a little-endian word.
#[inline(always)]
fn read_word(addr: u64, n: u32) -> Option<u64> {
    let n = launder(n);
    if n == 0 || n > 8 {
        return None;
    }
    let mut b = [0u8; 8];
    // SAFETY: n ≤ 8 bytes into an 8-byte stack buffer.
    let rc = unsafe { bpf_probe_read_user(b.as_mut_ptr().cast(), n, addr as *const _) };
    (rc == 0).then(|| u64::from_le_bytes(b))
}

/// Fill `iovs` from the syscall's arguments; `None` when it has no buffer
/// the probe can read.
#[inline(always)]
fn fill_iovs(iovs: &mut Iovs, src: &Source<'_>) -> Option<()> {
    iovs.vec = 0;
    iovs.n = 1;
    match src {
        Source::Plain(buf) => {
            iovs.base0 = *buf;
            iovs.len0 = u64::MAX >> 1;
        }
        Source::Syscall(a) => match a.source {
            DataSource::Read | DataSource::Write | DataSource::Recvfrom | DataSource::Sendto => {
                iovs.base0 = a.arg1;
                iovs.len0 = a.arg2;
            }
            DataSource::Readv | DataSource::Writev => {
                iovs.vec = a.arg1;
                iovs.n = a.arg2;
            }
            DataSource::Recvmsg | DataSource::Sendmsg => {
                // struct user_msghdr: msg_name, msg_namelen (padded), msg_iov, msg_iovlen.
                // SAFETY: user memory read with a fault-tolerant helper.
                let v: [u64; 2] = unsafe {
                    aya_ebpf::helpers::bpf_probe_read_user((a.arg1 + 16) as *const [u64; 2])
                }
                .ok()?;
                iovs.vec = v[0];
                iovs.n = v[1];
            }
            _ => return None,
        },
    }
    (iovs.vec != 0 || iovs.n == 1).then_some(())
}

/// Send the bytes `[from, to)` of the current buffer that userspace lacks
/// as one segment (at most 1 KiB: past that userspace sees a hole and
/// counts the frame as lost); `covered` moves to `to` either way.
// Not inlined: its own frame keeps the step's small enough that the
// program's stack, the step's and this one's stay under 512 bytes together.
#[inline(never)]
fn send(w: &mut Step, from: i64, to: i64) {
    // Bytes below `covered` were sent already (the first event's prefix, an
    // earlier segment): a second copy would not fit where userspace stands.
    let from = if from < w.covered { w.covered } else { from };
    if to <= from {
        return;
    }
    if to > w.covered {
        w.covered = to;
    }
    if from < w.cur_start {
        return;
    }
    let (Some(cfg), Some(seg)) = (crate::maps::config(), H2_SEG.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let seg = unsafe { &mut *seg };
    let n = launder(min(to - from, MAX_PAYLOAD as i64) as u32);
    if n > MAX_PAYLOAD as u32 {
        return;
    }
    let src = w.cur_base + (from - w.cur_start) as u64;
    // SAFETY: n ≤ MAX_PAYLOAD bytes into the payload array.
    if unsafe { bpf_probe_read_user(seg.payload.as_mut_ptr().cast(), n, src as *const _) } != 0 {
        count(KernelCounter::ReadFailed);
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let head = &mut seg.head;
    head.header.kind = EventKind::Data as u32;
    head.header.pid = pid_tgid as u32;
    head.header.tgid = (pid_tgid >> 32) as u32;
    // SAFETY: helper without arguments.
    head.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    head.sk = w.sk;
    head.fd = -1;
    head.direction = w.dir;
    head.source = DataSource::Other as u32;
    head.len = w.len as u32;
    head.captured = n;
    head.flags = DATA_FLAG_SEGMENT;
    head.offset = from as u32;
    let total = DATA_EVENT_FIXED + n as usize;
    if total > core::mem::size_of::<SegEvent>() {
        return;
    }
    // SAFETY: `total` ≤ size_of::<SegEvent>().
    let bytes = unsafe { core::slice::from_raw_parts(seg as *const SegEvent as *const u8, total) };
    if EVENTS.output::<[u8]>(bytes, output_flags(cfg)).is_err() {
        count(KernelCounter::RingbufFull);
    }
}

/// Forget a closed socket's walks.
#[inline(always)]
pub fn forget(sk: u64) {
    let _ = H2_WALKS.remove(&sk);
    let _ = H2_WALKS.remove(&(sk | 1));
}
