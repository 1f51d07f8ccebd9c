//! Events that cross the ring buffer from `agent-ebpf` to `agent`.
//!
//! Every event starts with an [`EventHeader`]; its `kind` says which struct
//! follows. Layouts are `#[repr(C)]` with explicit padding so the kernel and
//! userspace agree byte for byte. Kernel pointers (`sk`, `skaddr`) travel only as
//! join keys: userspace never exports them.
#![no_std]

pub mod http_prefix;

/// Length of `task->comm`.
pub const COMM_LEN: usize = 16;
/// Largest payload prefix the kernel copies from one socket syscall. Enough for
/// a request line plus the headers we read (host, traceparent, b3, x-request-id,
/// x-gray-tag) in ordinary clients; longer heads are reassembled from several
/// syscalls' prefixes only when each syscall starts inside the head.
pub const MAX_PAYLOAD: usize = 1024;

/// Address families as the kernel reports them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`TcpRetransmitEvent`]
    TcpRetransmit = 1,
    /// [`TcpConnectEvent`]: an active open ended (established or failed).
    TcpConnect = 2,
    /// [`TcpStateEvent`]: a socket reached ESTABLISHED passively, or CLOSE.
    TcpState = 3,
    /// [`SockOwnerEvent`]: first time a task was seen using a socket.
    SockOwner = 4,
    /// [`DataEvent`]: bytes read from or written to a TCP socket.
    Data = 5,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::TcpRetransmit,
            2 => Self::TcpConnect,
            3 => Self::TcpState,
            4 => Self::SockOwner,
            5 => Self::Data,
            _ => return None,
        })
    }
}

/// First bytes of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// Thread id of the current task. Events that fire in softirq or timer
    /// context (retransmits, passive opens, most closes) carry whatever task
    /// the CPU was running, 0 when idle: not the socket's owner.
    pub pid: u32,
    /// Process id (tgid) of the current task; same caveat as `pid`.
    pub tgid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// cgroup v2 id of the current task; same caveat as `pid`.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// The 4-tuple of a TCP socket. IPv4 addresses are stored v4-mapped
/// (`::ffff:a.b.c.d`) so one layout serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockTuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub _pad: u16,
}

/// One retransmission the kernel counted in `TcpRetransSegs`: sent (`err == 0`)
/// or handed to the transmit path and dropped there (`err != 0`). Attempts the
/// kernel gave up on before that (-EBUSY, -EAGAIN, -ENOMEM, -EINVAL,
/// -EHOSTUNREACH) are not events; they count as `RetransmitNotSent`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpRetransmitEvent {
    pub header: EventHeader,
    /// Join key to the connection table; never exported. For `synack` events
    /// this is the listening socket (the connection's socket does not exist
    /// yet): join those by tuple.
    pub sk: u64,
    pub tuple: SockTuple,
    /// Segments in the retransmitted skb (`tcp_skb_pcount`), which is what the
    /// kernel adds to `TcpRetransSegs`.
    pub segs: u32,
    /// TCP state of the socket when it retransmitted.
    pub state: u32,
    /// 1 for `tcp_retransmit_synack`, 0 for `tcp_retransmit_skb`.
    pub synack: u32,
    /// 0, or the transmit path's error for a retransmission the kernel counted
    /// but that did not leave the host (1 = NET_XMIT_DROP: a local queue was
    /// full; -105 ENOBUFS; -1 EPERM: dropped by a local firewall).
    pub err: i32,
}

/// TCP states as `inet_sock_set_state` and the retransmit tracepoints report them.
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
    pub const NEW_SYN_RECV: u32 = 12;
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    Established = 0,
    /// RST in answer to the SYN (ECONNREFUSED).
    Refused = 1,
    /// SYN retries exhausted (ETIMEDOUT).
    TimedOut = 2,
    /// Closed from SYN_SENT for another reason: `error` says which (113
    /// EHOSTUNREACH, ...), 0 when the application aborted it (close()).
    Other = 3,
}

impl ConnectOutcome {
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Established,
            1 => Self::Refused,
            2 => Self::TimedOut,
            _ => Self::Other,
        }
    }
}

/// An active open that left SYN_SENT. The header's task is the connecting task
/// (captured when SYN_SENT was entered, which happens in its context); its
/// `ts_ns` is when the connect ended. A failed connect is followed by a
/// [`TcpStateEvent`] to CLOSE for the same `sk`, like every other close.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpConnectEvent {
    pub header: EventHeader,
    pub sk: u64,
    pub tuple: SockTuple,
    /// SYN_SENT → ESTABLISHED/CLOSE, in nanoseconds.
    pub duration_ns: u64,
    /// A [`ConnectOutcome`] as u32.
    pub outcome: u32,
    /// `sk->sk_err` when the socket left SYN_SENT for CLOSE (111 ECONNREFUSED,
    /// 110 ETIMEDOUT, 113 EHOSTUNREACH, ...); 0 when established, when the
    /// connect was aborted (close() during the handshake) or unreadable.
    pub error: u32,
}

/// Passive open established (SYN_RECV → ESTABLISHED), or a socket reached
/// CLOSE from any state. Both usually fire in softirq or timer context, so the
/// header's task is whatever the CPU was running (pid 0 when idle, or an
/// unrelated task): attribute by `sk` through the connection table instead.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpStateEvent {
    pub header: EventHeader,
    pub sk: u64,
    pub tuple: SockTuple,
    pub oldstate: u32,
    pub newstate: u32,
}

/// A task read or wrote a TCP socket that the probe had not yet seen it use:
/// the first syscall on the socket, or the first after another process used
/// it (one owner is remembered per socket, so two processes alternating on one
/// socket re-announce themselves). Lets userspace attribute TCP events that fire
/// in softirq context to the owner. Sent even when HTTP capture is off; the
/// header's task is the owner.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockOwnerEvent {
    pub header: EventHeader,
    pub sk: u64,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bytes the task read from the socket.
    Ingress = 0,
    /// Bytes the task wrote to the socket.
    Egress = 1,
}

/// Syscall that moved the bytes of a [`DataEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    Read = 0,
    Readv = 1,
    Recvfrom = 2,
    Recvmsg = 3,
    Write = 4,
    Writev = 5,
    Sendto = 6,
    Sendmsg = 7,
    Sendfile = 8,
    Other = 9,
}

/// Bytes moved by one socket syscall on a TCP connection that is HTTP/1.x (its
/// first classified bytes started like a request or a response; see
/// [`http_prefix`]), or by a syscall whose bytes start like HTTP/1.x. Only
/// `captured` bytes of `payload` are valid, and only they are sent through the
/// ring buffer (the tail of the struct is not transmitted): records are
/// `DATA_EVENT_FIXED + captured` bytes long.
///
/// One event per `sock:sock_{send,recv}_length`, i.e. per syscall, except
/// `sendfile`, which may yield several events (one per chunk the kernel hands
/// to the socket), each with `captured == 0`. Payload is the first
/// `min(len, MAX_PAYLOAD)` bytes of the first buffer (first iovec for
/// readv/writev/recvmsg/sendmsg; shorter when that iovec is shorter).
/// `captured == 0 && len > 0` also when the user buffer could not be read.
///
/// To keep the hot path cheap the header's `comm` and `cgroup_id` are NOT
/// filled (zero): take them from the latest [`SockOwnerEvent`] for the same
/// `(sk, tgid)`, which always precedes the data events of that pair.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub head: DataEventHead,
    pub payload: [u8; MAX_PAYLOAD],
}

/// The bytes of this event are the first the probe classified on the
/// connection (the kernel marked it HTTP here, or left it undecided).
pub const DATA_FLAG_CLASSIFIED_HERE: u32 = 1;
/// The connection is not yet classified (the prefix was too short to tell).
pub const DATA_FLAG_UNDECIDED: u32 = 2;

/// Offset of `payload` in [`DataEvent`]: the fixed part that is always sent.
pub const DATA_EVENT_FIXED: usize = core::mem::size_of::<DataEvent>() - MAX_PAYLOAD;

/// The fixed part of a [`DataEvent`] record: what userspace decodes without
/// copying the payload area (1 KiB per event otherwise).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEventHead {
    pub header: EventHeader,
    pub sk: u64,
    pub fd: i32,
    /// A [`Direction`] as u32.
    pub direction: u32,
    /// A [`DataSource`] as u32.
    pub source: u32,
    /// Bytes the syscall moved (its return value).
    pub len: u32,
    /// Bytes of `payload` that are valid (≤ `MAX_PAYLOAD`, ≤ `len`).
    pub captured: u32,
    /// `DATA_FLAG_*` bits.
    pub flags: u32,
}

// The head must be exactly the bytes before `payload`.
const _: () = assert!(
    core::mem::size_of::<DataEventHead>() == DATA_EVENT_FIXED
        && core::mem::offset_of!(DataEvent, payload) == DATA_EVENT_FIXED
);

/// Kernel struct offsets found in BTF by userspace at start-up and handed to
/// the probes through the `CONFIG` array map (aya has no CO-RE for Rust probes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// `offsetof(struct sk_buff, cb) + offsetof(struct tcp_skb_cb, tcp_gso_segs)`.
    pub skb_gso_segs: u32,
    /// 1 once userspace filled this struct; probes fall back to 1 segment per skb
    /// and to [`ConnectOutcome::Other`] for failed connects otherwise.
    pub valid: u32,
    /// `offsetof(struct sock, sk_err)`: the kernel stores the connect error there
    /// just before it moves a socket from SYN_SENT to CLOSE.
    pub sock_sk_err: u32,
    pub _pad: u32,
    /// Offset in `struct sock` of the 4 bytes holding the adjacent u16s
    /// `sk_protocol` and `sk_type` (in the kernel's order).
    pub sk_type_proto: u32,
    /// Those 4 bytes, read as a little-endian u32, for a TCP stream socket.
    pub sk_tcp_word: u32,
}

/// Runtime settings for the probes (single entry of the `CONFIG` array map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeConfig {
    pub offsets: KernelOffsets,
    /// The agent's own tgid, so its sockets are never traced.
    pub self_tgid: u32,
    /// 1 to capture HTTP payloads (`DataEvent`s), 0 for TCP signals only.
    pub capture_http: u32,
    /// Wake the ring-buffer reader only once this many bytes are pending (the
    /// reader must then also drain on a timer); 0 wakes it on every event.
    pub wakeup_bytes: u32,
    /// How far the HTTP probes go, one of [`cost_stage`]: measurement only.
    pub cost_stage: u32,
}

/// Values of [`ProbeConfig::cost_stage`]: where the HTTP probes stop, so the
/// cost of each stage can be measured on a live load (`cargo xtask bench
/// --only stages`). Anything but `FULL` captures no HTTP.
pub mod cost_stage {
    /// Everything: classify, copy the payload prefix, send the event.
    pub const FULL: u32 = 0;
    /// Return as soon as the program has read its config (dispatch cost).
    pub const ATTACH: u32 = 1;
    /// Filter the socket and look up its per-connection state, send nothing
    /// (but the owner announcement).
    pub const CLASSIFY: u32 = 2;
    /// Also send a data event per socket syscall, without reading or copying
    /// any payload: the cost of the transfer to userspace.
    pub const TRANSFER: u32 = 3;
}

/// Indices of the per-CPU `COUNTERS` array (kernel-side self metrics).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCounter {
    /// An event could not be reserved in the ring buffer (consumer too slow).
    RingbufFull = 0,
    /// `tcp_retransmit_skb` gave up before transmitting (-EBUSY: the original
    /// is still in a local queue, -EAGAIN, -ENOMEM...): the kernel does not
    /// count it in `TcpRetransSegs` and no event is sent.
    RetransmitNotSent = 1,
    /// A probe could not read what it needed (bpf_probe_read failed).
    ReadFailed = 2,
    /// A connect left SYN_SENT without a start record (evicted from the bounded
    /// map, or started before the probes were attached): no `TcpConnectEvent`.
    ConnectUnmatched = 3,
    /// The connect-start map refused an entry.
    ConnectMapFull = 4,
    /// Socket syscalls on TCP connections classified as not HTTP/1.x (no event sent).
    NonHttpSyscalls = 5,
    /// Bytes moved by those syscalls.
    NonHttpBytes = 6,
    /// Socket I/O on a connection not yet classified that the probe could not
    /// inspect (sendfile, splice, io_uring, sendmmsg...): no event sent.
    DataUnclassified = 7,
    /// Connections whose first bytes were classified as not HTTP/1.x (TLS,
    /// garbage, other protocols): once per connection, unlike the syscalls.
    NonHttpConnections = 8,
}
pub const KERNEL_COUNTERS: u32 = 9;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for ProbeConfig {}
}

/// Safe view of the fixed header of a raw event, for userspace decoding.
pub fn header_of(bytes: &[u8]) -> Option<EventHeader> {
    if bytes.len() < core::mem::size_of::<EventHeader>() {
        return None;
    }
    // SAFETY: length checked; EventHeader is plain data valid for any bytes.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const EventHeader) })
}

/// Read a plain-data event of type `T` from the front of `bytes`.
///
/// # Safety
/// `T` must be a `#[repr(C)]` struct of integers and byte arrays (valid for any
/// bit pattern), as every event here is.
pub unsafe fn read_event<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// Field offsets in the tracepoint records the TCP probes read, from
/// `/sys/kernel/tracing/events/<category>/<name>/format` on Linux 6.18. The
/// `tests` crate checks them against the running kernel's format files.
pub mod tp_fields {
    /// `tcp:tcp_retransmit_skb`
    pub mod tcp_retransmit_skb {
        pub const SKBADDR: usize = 8;
        pub const SKADDR: usize = 16;
        pub const STATE: usize = 24;
        pub const SPORT: usize = 28;
        pub const DPORT: usize = 30;
        pub const FAMILY: usize = 32;
        pub const SADDR_V6: usize = 42;
        pub const DADDR_V6: usize = 58;
        pub const ERR: usize = 76;
    }
    /// `tcp:tcp_retransmit_synack`
    pub mod tcp_retransmit_synack {
        pub const SKADDR: usize = 8;
        pub const SPORT: usize = 24;
        pub const DPORT: usize = 26;
        pub const FAMILY: usize = 28;
        pub const SADDR_V6: usize = 38;
        pub const DADDR_V6: usize = 54;
    }
    /// `sock:inet_sock_set_state`
    pub mod inet_sock_set_state {
        pub const SKADDR: usize = 8;
        pub const OLDSTATE: usize = 16;
        pub const NEWSTATE: usize = 20;
        pub const SPORT: usize = 24;
        pub const DPORT: usize = 26;
        pub const FAMILY: usize = 28;
        pub const PROTOCOL: usize = 30;
        pub const SADDR_V6: usize = 40;
        pub const DADDR_V6: usize = 56;
    }
    /// Every (tracepoint, field, offset) above, for the format check.
    pub const ALL: &[(&str, &str, usize)] = &[
        (
            "tcp/tcp_retransmit_skb",
            "skbaddr",
            tcp_retransmit_skb::SKBADDR,
        ),
        (
            "tcp/tcp_retransmit_skb",
            "skaddr",
            tcp_retransmit_skb::SKADDR,
        ),
        ("tcp/tcp_retransmit_skb", "state", tcp_retransmit_skb::STATE),
        ("tcp/tcp_retransmit_skb", "sport", tcp_retransmit_skb::SPORT),
        ("tcp/tcp_retransmit_skb", "dport", tcp_retransmit_skb::DPORT),
        (
            "tcp/tcp_retransmit_skb",
            "family",
            tcp_retransmit_skb::FAMILY,
        ),
        (
            "tcp/tcp_retransmit_skb",
            "saddr_v6",
            tcp_retransmit_skb::SADDR_V6,
        ),
        (
            "tcp/tcp_retransmit_skb",
            "daddr_v6",
            tcp_retransmit_skb::DADDR_V6,
        ),
        ("tcp/tcp_retransmit_skb", "err", tcp_retransmit_skb::ERR),
        (
            "tcp/tcp_retransmit_synack",
            "skaddr",
            tcp_retransmit_synack::SKADDR,
        ),
        (
            "tcp/tcp_retransmit_synack",
            "sport",
            tcp_retransmit_synack::SPORT,
        ),
        (
            "tcp/tcp_retransmit_synack",
            "dport",
            tcp_retransmit_synack::DPORT,
        ),
        (
            "tcp/tcp_retransmit_synack",
            "family",
            tcp_retransmit_synack::FAMILY,
        ),
        (
            "tcp/tcp_retransmit_synack",
            "saddr_v6",
            tcp_retransmit_synack::SADDR_V6,
        ),
        (
            "tcp/tcp_retransmit_synack",
            "daddr_v6",
            tcp_retransmit_synack::DADDR_V6,
        ),
        (
            "sock/inet_sock_set_state",
            "skaddr",
            inet_sock_set_state::SKADDR,
        ),
        (
            "sock/inet_sock_set_state",
            "oldstate",
            inet_sock_set_state::OLDSTATE,
        ),
        (
            "sock/inet_sock_set_state",
            "newstate",
            inet_sock_set_state::NEWSTATE,
        ),
        (
            "sock/inet_sock_set_state",
            "sport",
            inet_sock_set_state::SPORT,
        ),
        (
            "sock/inet_sock_set_state",
            "dport",
            inet_sock_set_state::DPORT,
        ),
        (
            "sock/inet_sock_set_state",
            "family",
            inet_sock_set_state::FAMILY,
        ),
        (
            "sock/inet_sock_set_state",
            "protocol",
            inet_sock_set_state::PROTOCOL,
        ),
        (
            "sock/inet_sock_set_state",
            "saddr_v6",
            inet_sock_set_state::SADDR_V6,
        ),
        (
            "sock/inet_sock_set_state",
            "daddr_v6",
            inet_sock_set_state::DADDR_V6,
        ),
    ];
}

/// Decode a variable-length [`DataEvent`] record (`DATA_EVENT_FIXED + captured`
/// bytes): its fixed head and the valid payload, borrowed from the record.
/// `None` when the record is shorter than it says or `captured` is out of range.
pub fn read_data_event(bytes: &[u8]) -> Option<(DataEventHead, &[u8])> {
    if bytes.len() < DATA_EVENT_FIXED {
        return None;
    }
    // SAFETY: the length is checked above; the head is plain integers, valid
    // for any bit pattern, and read unaligned.
    let ev: DataEventHead =
        unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const DataEventHead) };
    let captured = ev.captured as usize;
    if captured > MAX_PAYLOAD || bytes.len() < DATA_EVENT_FIXED + captured {
        return None;
    }
    Some((ev, &bytes[DATA_EVENT_FIXED..DATA_EVENT_FIXED + captured]))
}

#[cfg(test)]
mod data_event_tests {
    use super::*;

    #[test]
    fn short_records_decode_and_lies_are_refused() {
        let mut ev: DataEvent = unsafe { core::mem::zeroed() };
        ev.head.header.kind = EventKind::Data as u32;
        ev.head.len = 100;
        ev.head.captured = 5;
        ev.payload[..5].copy_from_slice(b"GET /");
        let all = unsafe {
            core::slice::from_raw_parts(
                &ev as *const DataEvent as *const u8,
                core::mem::size_of::<DataEvent>(),
            )
        };
        let (d, p) = read_data_event(&all[..DATA_EVENT_FIXED + 5]).unwrap();
        assert_eq!((d.len, p), (100, &b"GET /"[..]));
        assert!(read_data_event(&all[..DATA_EVENT_FIXED + 4]).is_none());
        assert!(read_data_event(&all[..DATA_EVENT_FIXED - 1]).is_none());
        ev.head.captured = MAX_PAYLOAD as u32 + 1;
        let all = unsafe {
            core::slice::from_raw_parts(
                &ev as *const DataEvent as *const u8,
                core::mem::size_of::<DataEvent>(),
            )
        };
        assert!(read_data_event(all).is_none());
    }
}
