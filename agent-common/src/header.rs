//! The header every ring-buffer record starts with, the socket 4-tuple the
//! TCP records share, and the safe readers userspace decodes them with.

/// Length of `task->comm`.
pub const COMM_LEN: usize = 16;

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
