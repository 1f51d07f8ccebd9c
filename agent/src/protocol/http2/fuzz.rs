//! Fuzz harness for the HTTP/2 path (frames → HPACK → streams), see
//! `crate::fuzz`. The input is cut into syscalls alternating between the
//! client and the server; a leading byte picks where each cut falls and how
//! much of it was "captured", so holes (lengths without bytes) are fuzzed too.
use super::{DataChunk, Direction, Http2Tracker, PREFACE};
use crate::protocol::ProtocolTracker;
use crate::protocol::http1::HttpConfig;

/// Frames and header blocks from both directions of one connection that
/// began with the client preface, then a close. Every request emitted has
/// a path and method that the input carried, a start before its end, and
/// the tracker forgets the connection on close.
pub fn frames(data: &[u8]) {
    let cfg = HttpConfig {
        max_streams_per_connection: 8,
        max_head_bytes: 512,
        ..HttpConfig::default()
    };
    let mut t = Http2Tracker::new(&cfg);
    let mut out = Vec::new();
    let first = DataChunk {
        conn_id: 1,
        direction: Direction::Ingress,
        ts_ns: 1,
        len: PREFACE.len() as u32,
        payload: PREFACE,
    };
    assert!(t.claim(&first, &mut out));
    let mut rest = data;
    let mut ts = 2;
    let mut dir = Direction::Ingress;
    while let Some((&ctl, tail)) = rest.split_first() {
        let n = usize::from(ctl & 0x3f).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        // High bit: a hole of up to 64 bytes after the captured part.
        let hole = if ctl & 0x80 != 0 {
            u32::from(ctl & 0x3f)
        } else {
            0
        };
        let chunk = DataChunk {
            conn_id: 1,
            direction: dir,
            ts_ns: ts,
            len: n as u32 + hole,
            payload: bytes,
        };
        t.on_data(&chunk, &mut out);
        if ctl & 0x40 != 0 {
            dir = match dir {
                Direction::Ingress => Direction::Egress,
                Direction::Egress => Direction::Ingress,
            };
        }
        ts += 1;
        rest = tail;
    }
    t.on_close(1, ts, &mut out);
    assert_eq!(t.connections(), 0);
    for r in &out {
        assert!(r.http2);
        assert!(r.start_ns <= r.end_ns && r.end_ns <= ts, "{r:?}");
        assert!(r.target.len() <= 2048 && r.method.len() <= 2048);
        if !r.incomplete {
            assert!(r.status >= 200 || r.status == 0, "{r:?}");
        }
    }
}
