//! Decoding raw ring-buffer records into typed events. The bytes come from
//! our own kernel programs, but a short or unknown record (version skew, a
//! bug) is counted and skipped, never trusted.
use agent_common::{
    DATA_EVENT_FIXED, DataEvent, DataEventHead, EventHeader, EventKind, MAX_PAYLOAD,
    SockOwnerEvent, SockTuple, TcpConnectEvent, TcpRetransmitEvent, TcpStateEvent, header_of,
    read_event,
};

/// A decoded event. `Data` borrows its payload from the record.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    TcpRetransmit(TcpRetransmitEvent),
    TcpConnect(TcpConnectEvent),
    TcpState(TcpStateEvent),
    SockOwner(SockOwnerEvent),
    Data(DataRef<'a>),
}

/// A data event without copying its payload.
#[derive(Clone, Copy)]
pub struct DataRef<'a> {
    pub head: DataEventHead,
    /// The captured bytes, never more than the syscall moved.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record shorter than its header")]
    Short,
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("record too short for its kind")]
    Truncated,
}

/// Label value for `sloguard_events_total{kind}`.
pub fn kind_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::TcpRetransmit => "tcp_retransmit",
        EventKind::TcpConnect => "tcp_connect",
        EventKind::TcpState => "tcp_state",
        EventKind::SockOwner => "sock_owner",
        EventKind::Data => "data",
    }
}

pub const ALL_KINDS: [EventKind; 5] = [
    EventKind::TcpRetransmit,
    EventKind::TcpConnect,
    EventKind::TcpState,
    EventKind::SockOwner,
    EventKind::Data,
];

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let h = header_of(bytes).ok_or(DecodeError::Short)?;
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    // SAFETY (all read_event calls): every event type is #[repr(C)] plain data
    // valid for any bit pattern; read_event checks the length.
    Ok(match kind {
        EventKind::TcpRetransmit => {
            Event::TcpRetransmit(unsafe { read_event(bytes) }.ok_or(DecodeError::Truncated)?)
        }
        EventKind::TcpConnect => {
            Event::TcpConnect(unsafe { read_event(bytes) }.ok_or(DecodeError::Truncated)?)
        }
        EventKind::TcpState => {
            Event::TcpState(unsafe { read_event(bytes) }.ok_or(DecodeError::Truncated)?)
        }
        EventKind::SockOwner => {
            Event::SockOwner(unsafe { read_event(bytes) }.ok_or(DecodeError::Truncated)?)
        }
        EventKind::Data => Event::Data(decode_data(bytes)?),
    })
}

fn decode_data(bytes: &[u8]) -> Result<DataRef<'_>, DecodeError> {
    let (ev, payload) = agent_common::read_data_event(bytes).ok_or(DecodeError::Truncated)?;
    // Never trust `captured` beyond what the syscall moved.
    let payload = &payload[..payload.len().min(ev.len as usize)];
    Ok(DataRef { head: ev, payload })
}

impl Event<'_> {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::TcpRetransmit(_) => EventKind::TcpRetransmit,
            Event::TcpConnect(_) => EventKind::TcpConnect,
            Event::TcpState(_) => EventKind::TcpState,
            Event::SockOwner(_) => EventKind::SockOwner,
            Event::Data(_) => EventKind::Data,
        }
    }
}

/// Process name from a NUL-padded `comm`. The kernel cuts names at 15
/// bytes, possibly inside a UTF-8 character, and a task names itself
/// (`prctl(PR_SET_NAME)`) with any bytes; the name ends up in labels and
/// logs, so invalid UTF-8 becomes U+FFFD and control characters `?` (the
/// rest of the name stays).
pub fn comm_str(comm: &[u8; 16]) -> std::borrow::Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    let name = String::from_utf8_lossy(&comm[..end]);
    if name.chars().any(char::is_control) {
        name.replace(char::is_control, "?").into()
    } else {
        name
    }
}

/// Local and remote socket addresses of a tuple (IPv4 shown unmapped).
pub fn tuple_addrs(t: &SockTuple) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let ip = |a: [u8; 16]| {
        let v6 = std::net::Ipv6Addr::from(a);
        match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        }
    };
    (
        std::net::SocketAddr::new(ip(t.saddr), t.sport),
        std::net::SocketAddr::new(ip(t.daddr), t.dport),
    )
}

/// Test and bench helpers: the bytes the kernel would send for an event.
pub mod encode {
    use super::*;

    /// Request targets of the pipeline benches (`{}` takes a number): an id
    /// route, a nested id route, a static file, a probe, a query.
    pub const BENCH_PATHS: [&str; 5] = [
        "/api/users/{}",
        "/api/orders/{}/items",
        "/static/app.js",
        "/health",
        "/search?q={}",
    ];

    pub fn header(kind: EventKind, tgid: u32, ts_ns: u64, comm: &str) -> EventHeader {
        let mut c = [0u8; 16];
        let n = comm.len().min(15);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        EventHeader {
            kind: kind as u32,
            pid: tgid,
            tgid,
            _pad: 0,
            ts_ns,
            cgroup_id: 1,
            comm: c,
        }
    }

    pub fn tuple_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> SockTuple {
        let map = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
        SockTuple {
            saddr: map(src),
            daddr: map(dst),
            sport,
            dport,
            family: agent_common::AF_INET,
            _pad: 0,
        }
    }

    /// Raw bytes of a plain-data event.
    pub fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a #[repr(C)] plain-data event; we read its bytes.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
            .to_vec()
    }

    /// A data record as sent: fixed part plus `payload` (at most MAX_PAYLOAD).
    pub fn data(header: EventHeader, sk: u64, direction: u32, len: u32, payload: &[u8]) -> Vec<u8> {
        let captured = payload.len().min(MAX_PAYLOAD);
        let mut ev = DataEvent {
            head: DataEventHead {
                header,
                sk,
                fd: 3,
                direction,
                source: 0,
                len,
                captured: captured as u32,
                flags: 0,
                offset: 0,
                _pad: 0,
            },
            payload: [0; MAX_PAYLOAD],
        };
        ev.payload[..captured].copy_from_slice(&payload[..captured]);
        let mut out = bytes_of(&ev);
        out.truncate(DATA_EVENT_FIXED + captured);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    #[test]
    fn decodes_every_kind_and_rejects_short_records() {
        let h = header(EventKind::TcpRetransmit, 7, 1, "curl");
        let ev = TcpRetransmitEvent {
            header: h,
            sk: 42,
            tuple: tuple_v4([127, 0, 0, 1], 1, [127, 0, 0, 1], 2),
            segs: 3,
            state: 1,
            synack: 0,
            err: 0,
        };
        let b = bytes_of(&ev);
        match decode(&b).unwrap() {
            Event::TcpRetransmit(e) => assert_eq!((e.sk, e.segs), (42, 3)),
            _ => panic!("wrong kind"),
        }
        assert_eq!(decode(&b[..10]).err(), Some(DecodeError::Short));
        assert_eq!(
            decode(&b[..b.len() - 1]).err(),
            Some(DecodeError::Truncated)
        );
        let mut bad = b.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad).err(), Some(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn data_payload_is_only_the_captured_prefix() {
        let h = header(EventKind::Data, 7, 1, "nginx");
        let rec = data(h, 9, 0, 5000, b"GET / HTTP/1.1\r\n");
        let Event::Data(d) = decode(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(d.payload, b"GET / HTTP/1.1\r\n");
        assert_eq!(d.head.len, 5000);
        // A record shorter than its `captured` says is refused, never read past its end.
        assert_eq!(
            decode(&rec[..rec.len() - 4]).err(),
            Some(DecodeError::Truncated)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        for n in 0..2000usize {
            let buf: Vec<u8> = (0..n % 1200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode(&buf);
        }
    }

    /// Found by fuzzing: a task may name itself anything (`prctl(PR_SET_NAME)`),
    /// and the name becomes a `service_name` label; a raw line break or quote
    /// there broke the `/metrics` text and let a process forge samples.
    #[test]
    fn comm_control_characters_are_replaced() {
        let mut comm = [0u8; 16];
        comm[..14].copy_from_slice(b"shop\r\nx\"} 1\n\x7fz");
        // Quotes and backslashes stay: the exporters escape them (metrics::label).
        assert_eq!(comm_str(&comm), "shop??x\"} 1??z");
        assert_eq!(comm_str(b"a\\b\0\0\0\0\0\0\0\0\0\0\0\0\0"), "a\\b");
        assert_eq!(comm_str(b"nginx\0\0\0\0\0\0\0\0\0\0\0"), "nginx");
        assert_eq!(
            comm_str(b"\xff\xfe\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            "\u{fffd}\u{fffd}"
        );
    }

    #[test]
    fn comm_keeps_its_valid_part_when_cut_inside_a_character() {
        // 16 bytes of name: the kernel keeps 15, half of the last "é".
        let mut c = [0u8; 16];
        let name = "caf\u{e9}-\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}".as_bytes();
        c[..15].copy_from_slice(&name[..15]);
        assert_eq!(comm_str(&c), "caf\u{e9}-\u{e9}\u{e9}\u{e9}\u{e9}\u{fffd}");
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"a\xffb\"");
        assert_eq!(comm_str(&raw), "a\u{fffd}b\"");
    }

    #[test]
    fn v4_mapped_addresses_print_as_v4() {
        let t = tuple_v4([10, 0, 3, 7], 40000, [10, 0, 3, 8], 5432);
        let (l, r) = tuple_addrs(&t);
        assert_eq!(l.to_string(), "10.0.3.7:40000");
        assert_eq!(r.to_string(), "10.0.3.8:5432");
    }
}
