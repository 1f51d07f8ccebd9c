//! Socket I/O records: the owner of a socket and the bytes each syscall
//! moved, with a bounded payload prefix (`agent-ebpf/src/{sock,http}.rs`).
use crate::EventHeader;

/// Largest payload prefix the kernel copies from one socket syscall. Enough for
/// a request line plus the headers we read (host, traceparent, b3, x-request-id,
/// x-gray-tag) in ordinary clients; longer heads are reassembled from several
/// syscalls' prefixes only when each syscall starts inside the head.
pub const MAX_PAYLOAD: usize = 1024;

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
    /// Plaintext returned by OpenSSL's `SSL_read`/`SSL_read_ex` (a uretprobe).
    SslRead = 10,
    /// Plaintext handed to OpenSSL's `SSL_write`/`SSL_write_ex` (a uretprobe).
    SslWrite = 11,
    /// Plaintext read by Go's `crypto/tls.(*Conn).Read` (uprobes at its RETs).
    GoTlsRead = 12,
    /// Plaintext written by Go's `crypto/tls.(*Conn).Write` (uprobes at its RETs).
    GoTlsWrite = 13,
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
/// The bytes are TLS plaintext seen at the TLS library (`source` says which
/// call); `sk` is the socket carrying its records, `fd` is -1.
pub const DATA_FLAG_TLS: u32 = 4;

/// A segment of a syscall's bytes on an HTTP/2 connection, sent after the
/// syscall's first event: `offset` says where in the syscall's `len` bytes its
/// `captured` bytes start (frame headers and the payloads of frames the
/// tracker reads, past what the first event held; `agent-ebpf/src/http2.rs`).
pub const DATA_FLAG_SEGMENT: u32 = 8;

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
    /// With [`DATA_FLAG_SEGMENT`]: where the payload starts in the syscall's
    /// bytes; 0 otherwise.
    pub offset: u32,
    pub _pad: u32,
}

// The head must be exactly the bytes before `payload`.
const _: () = assert!(
    core::mem::size_of::<DataEventHead>() == DATA_EVENT_FIXED
        && core::mem::offset_of!(DataEvent, payload) == DATA_EVENT_FIXED
);

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
    use crate::EventKind;

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
