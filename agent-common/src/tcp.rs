//! TCP records: retransmits, active-open outcomes, passive opens and
//! closes (`agent-ebpf/src/tcp/`).
use crate::{EventHeader, SockTuple};

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
