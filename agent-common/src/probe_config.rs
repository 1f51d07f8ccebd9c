//! What userspace hands the probes (`CONFIG` map: BTF offsets, settings) and
//! what the probes count instead of sending (`COUNTERS` map).

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
    /// 1 when the user narrowed the tracing scope: the socket probes then
    /// trace only task groups in the `SCOPE` map; 0 traces everything (the
    /// default, which costs no lookup).
    pub scope_active: u32,
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
    /// Connections whose first bytes were TLS records (handshake or
    /// application data): their ciphertext is counted here, never captured;
    /// the plaintext comes from the TLS library probes.
    TlsConnections = 9,
    /// Socket syscalls that moved TLS records (ciphertext).
    TlsSyscalls = 10,
    /// Bytes of those syscalls.
    TlsBytes = 11,
    /// TLS connections whose plaintext is not HTTP/1.x (HTTP/2, other
    /// protocols, garbage): once per connection, no event sent.
    TlsNotHttpConnections = 12,
    /// TLS library calls whose socket the probe could not tell (no syscall
    /// inside the call and no earlier one remembered): plaintext dropped.
    TlsUnattributed = 13,
    /// Socket syscalls and TLS library calls of processes outside the
    /// configured scope: the probe returned after the scope check, before
    /// any other lookup.
    OutOfScope = 14,
    /// HTTP/2 connections (client preface seen: prior knowledge).
    Http2Connections = 15,
    /// HTTP/2 syscalls whose frame walk stopped before the syscall's end (more
    /// than the frames walked per syscall, bytes the probe could not read, a
    /// header split over too short a syscall): that direction's frames are
    /// no longer followed, userspace loses the connection's framing.
    Http2WalkLost = 16,
}
pub const KERNEL_COUNTERS: u32 = 17;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for ProbeConfig {}
}
