//! Fuzz harnesses for the HTTP/1.x code (see `crate::fuzz`): each takes
//! arbitrary bytes and panics when an invariant breaks. They live here
//! because the parsers are private to `http`.
use super::chunked::{ChunkedDecoder, Feed};
use super::head::{
    Classify, Head, HeadEndScan, HeadParse, MsgKind, classify, is_definite_start, parse_head,
    parse_truncated, skip_empty_lines,
};
use super::{DataChunk, Direction, Http1Tracker, HttpConfig};
use crate::protocol::ProtocolTracker;
use crate::request::{Header, HttpRequest};

/// Longest method `classify` lets through (head.rs `MAX_METHOD`).
const MAX_METHOD: usize = 24;

/// Head parsing: recognition, complete and truncated heads, end-of-head scan.
pub fn head(data: &[u8]) {
    let class = classify(skip_empty_lines(data));
    match parse_head(data) {
        HeadParse::Complete { head, len } => {
            assert!(
                len > 0 && len <= data.len(),
                "head length {len} of {}",
                data.len()
            );
            match (&head, class) {
                (Head::Request(_), Classify::Request) | (Head::Response(_), Classify::Response) => {
                }
                (h, c) => panic!("parsed {:?} but classified {c:?}", h.kind()),
            }
            check_head(&head, len);
            // The head ends where it says: its bytes alone parse the same.
            assert_eq!(
                parse_head(&data[..len]),
                HeadParse::Complete {
                    head: head.clone(),
                    len
                },
                "head does not parse the same without its body"
            );
            assert_ne!(
                std::mem::discriminant(&parse_head(&data[..len - 1])),
                std::mem::discriminant(&HeadParse::Complete { head, len }),
                "a head minus its last byte is still complete"
            );
        }
        HeadParse::Partial => assert!(
            matches!(
                class,
                Classify::Request | Classify::Response | Classify::NeedMore
            ),
            "partial head classified {class:?}"
        ),
        HeadParse::Invalid => {}
    }
    for kind in [MsgKind::Request, MsgKind::Response] {
        if is_definite_start(data, kind) {
            let want = match kind {
                MsgKind::Request => Classify::Request,
                MsgKind::Response => Classify::Response,
            };
            assert_eq!(class, want, "definite {kind:?} start classified otherwise");
        }
    }
    if let Some(head) = parse_truncated(data, &mut Vec::new()) {
        check_head(&head, data.len());
    }
    // The end of a head is found the same however the bytes are split.
    let whole = HeadEndScan::default().find(data);
    for split in split_points(data) {
        let mut s = HeadEndScan::default();
        let (a, b) = data.split_at(split);
        let found = s.find(a).or_else(|| s.find(b).map(|i| i + a.len()));
        assert_eq!(found, whole, "head end differs when split at {split}");
    }
    if let Some(end) = whole {
        assert_eq!(data[end], b'\n');
    }
}

/// What any parsed head must satisfy: fields bounded by the bytes read,
/// methods are tokens, status codes have three digits.
fn check_head(head: &Head, read: usize) {
    match head {
        Head::Request(r) => {
            assert!(
                !r.method.is_empty() && r.method.len() <= MAX_METHOD,
                "{:?}",
                r.method
            );
            assert!(
                r.method
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c == b'-' || c == b'_'),
                "method {:?}",
                r.method
            );
            assert!(!r.target.is_empty(), "empty target");
            // A target cut short is kept lossily: a byte may widen to U+FFFD.
            assert!(r.method.len() < read && r.target.len() <= 3 * read);
            assert!(r.version_minor <= 9);
            for h in ALL_HEADERS {
                if let Some(v) = r.headers.get(h) {
                    // Lossy UTF-8 may widen a byte to three.
                    assert!(v.len() <= 3 * read, "{h:?} longer than the head");
                    assert_eq!(v, v.trim_matches(|c: char| c.is_ascii_whitespace()));
                }
            }
        }
        Head::Response(r) => {
            assert!(r.status <= 999, "status {}", r.status);
            assert!(r.version_minor <= 9);
        }
    }
}

const ALL_HEADERS: [Header; 12] = [
    Header::Host,
    Header::Traceparent,
    Header::Tracestate,
    Header::B3,
    Header::XB3TraceId,
    Header::XB3SpanId,
    Header::XB3ParentSpanId,
    Header::XB3Sampled,
    Header::XB3Flags,
    Header::XRequestId,
    Header::XGrayTag,
    Header::UserAgent,
];

/// A few split points spread over `data` (every one would be quadratic).
fn split_points(data: &[u8]) -> impl Iterator<Item = usize> {
    let n = data.len();
    [1, n / 3, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(move |&p| p > 0 && p < n)
}

/// Chunked decoding: the same verdict however the bytes are split, and a
/// body chunk-encoded from the input decodes to exactly its length.
pub fn chunked(data: &[u8]) {
    let whole = ChunkedDecoder::default().feed(data);
    if let Feed::Done { consumed } = whole {
        assert!(
            consumed >= 3 && consumed <= data.len(),
            "consumed {consumed}"
        );
        assert_eq!(data[consumed - 1], b'\n');
    }
    for split in split_points(data) {
        let (a, b) = data.split_at(split);
        let mut d = ChunkedDecoder::default();
        let got = match d.feed(a) {
            Feed::NeedMore => match d.feed(b) {
                Feed::Done { consumed } => Feed::Done {
                    consumed: consumed + a.len(),
                },
                other => other,
            },
            other => other,
        };
        assert_eq!(got, whole, "split at {split}");
    }
    // Bytes the capture missed may only be skipped inside chunk data.
    let mut d = ChunkedDecoder::default();
    if d.feed(data) == Feed::NeedMore {
        let _ = d.skip(data.len() as u64);
    }

    // Encode the input as a chunked body, chunk sizes taken from the input.
    let mut body = Vec::with_capacity(data.len() * 2 + 16);
    let mut rest = data;
    let mut sizes = data.iter().cycle();
    while !rest.is_empty() {
        let n = usize::from(*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        body.extend_from_slice(format!("{n:X};x=y\r\n").as_bytes());
        body.extend_from_slice(&rest[..n]);
        body.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    body.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
    let framed = body.len();
    body.extend_from_slice(data);
    assert_eq!(
        ChunkedDecoder::default().feed(&body),
        Feed::Done { consumed: framed },
        "own chunked encoding not decoded"
    );
}

/// Limits of the tracker under fuzzing: small, so that eviction, head
/// truncation, pipelining overflow and expiry all happen.
const MAX_CONNECTIONS: usize = 3;
const MAX_HEAD_BYTES: usize = 256;

/// The whole tracker fed a sequence of data, close and expiry events decoded
/// from the input. Bounded memory and sane records whatever the bytes.
pub fn stream(data: &[u8]) {
    let cfg = HttpConfig {
        max_connections: MAX_CONNECTIONS,
        max_head_bytes: MAX_HEAD_BYTES,
        // Small, so the global reassembly budget's drop path is fuzzed too.
        max_head_buffer_bytes: MAX_HEAD_BYTES * 4,
        max_pipelined: 3,
        idle_timeout: std::time::Duration::from_nanos(50),
        ..HttpConfig::default()
    };
    let mut t = Http1Tracker::new(&cfg);
    let mut out = Vec::new();
    let mut ts = 1u64;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        ts += 1;
        let conn = u64::from(op >> 4 & 3);
        match op & 15 {
            0..=11 => {
                let n = usize::from(take(&mut rest, 1).first().copied().unwrap_or(0));
                let unseen = match take(&mut rest, 1).first() {
                    Some(&u) if u & 0x80 != 0 => u32::from(u & 0x7f) * 97,
                    _ => 0,
                };
                let payload = take(&mut rest, n);
                let chunk = DataChunk {
                    conn_id: conn,
                    direction: if op & 1 == 0 {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    ts_ns: ts,
                    len: payload.len() as u32 + unseen,
                    payload,
                };
                t.on_data(&chunk, &mut out);
            }
            12 | 13 => t.on_close(conn, ts, &mut out),
            14 => t.expire(ts, &mut out),
            _ => ts += 40,
        }
        assert!(
            t.connections() <= MAX_CONNECTIONS,
            "{} connections",
            t.connections()
        );
        check_records(&out, ts);
    }
    ts += 1;
    for conn in 0..4 {
        t.on_close(conn, ts, &mut out);
    }
    assert_eq!(t.connections(), 0, "connections left after closing all");
    check_records(&out, ts);
    let c = t.counters();
    assert!(c.exchanges + c.incomplete_exchanges >= out.len() as u64);
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = rest.split_at(n.min(rest.len()));
    *rest = b;
    a
}

/// Records are bounded by the head limit and ordered in time.
fn check_records(out: &[HttpRequest], now: u64) {
    for r in out {
        assert!(r.start_ns <= r.end_ns && r.end_ns <= now, "times {r:?}");
        assert!(
            r.incomplete || (100..=999).contains(&r.status),
            "status {r:?}"
        );
        assert!(r.method.len() <= MAX_METHOD, "method {:?}", r.method);
        assert!(
            r.target.len() <= 3 * MAX_HEAD_BYTES,
            "target {} bytes",
            r.target.len()
        );
        for h in ALL_HEADERS {
            if let Some(v) = r.headers.get(h) {
                assert!(v.len() <= 3 * MAX_HEAD_BYTES, "{h:?} {} bytes", v.len());
            }
        }
    }
}
