//! Property tests: parsers and tracker never panic on arbitrary input, and a
//! valid stream yields the same records however it is split into syscalls.
use crate::protocol::ProtocolTracker;
use proptest::prelude::*;

use super::chunked::ChunkedDecoder;
use super::head::{HeadEndScan, MsgKind, classify, is_definite_start, parse_head, parse_truncated};
use super::*;
use crate::request::{HttpRequest, Side};

/// Bounded so the suite stays fast; `PROPTEST_CASES` asks for a deeper run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that are often near-HTTP: fragments of real messages mixed with noise.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    const CORPUS: &[&[u8]] = &[
        b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"1\r\na\r\n",
        b"0\r\n\r\n",
        b"\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xf8\x01",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: gzip\r\n",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (
            0..CORPUS.len(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(i, a, b)| {
                let c = CORPUS[i];
                let (x, y) = (a.index(c.len() + 1), b.index(c.len() + 1));
                c[x.min(y)..x.max(y)].to_vec()
            }),
        (0..CORPUS.len()).prop_map(|i| CORPUS[i].to_vec()),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Data {
        conn: u64,
        ingress: bool,
        bytes: Vec<u8>,
        unseen: u32,
    },
    Close {
        conn: u64,
    },
    Expire {
        now: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3u64, any::<bool>(), wire_bytes(), prop_oneof![Just(0u32), 0..5000u32])
            .prop_map(|(conn, ingress, bytes, unseen)| Op::Data { conn, ingress, bytes, unseen }),
        1 => (0..3u64).prop_map(|conn| Op::Close { conn }),
        1 => (0..200u64).prop_map(|now| Op::Expire { now }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn head_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = classify(&bytes);
        let _ = parse_head(&bytes);
        let _ = is_definite_start(&bytes, MsgKind::Request);
        let _ = is_definite_start(&bytes, MsgKind::Response);
        let _ = parse_truncated(&bytes, &mut Vec::new());
        let _ = HeadEndScan::default().find(&bytes);
        let mut d = ChunkedDecoder::default();
        let _ = d.feed(&bytes);
        let _ = d.skip(bytes.len() as u64);
    }

    #[test]
    fn near_http_heads_never_panic(bytes in wire_bytes()) {
        let _ = parse_head(&bytes);
        let _ = parse_truncated(&bytes, &mut Vec::new());
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn tracker_never_panics_and_stays_bounded(ops in prop::collection::vec(op(), 0..60)) {
        let cfg = HttpConfig {
            max_connections: 2,
            max_head_bytes: 256,
            // Less than 2 connections × 2 directions × 256: the budget binds.
            max_head_buffer_bytes: 300,
            max_pipelined: 3,
            idle_timeout: std::time::Duration::from_nanos(50),
            ..HttpConfig::default()
        };
        let mut t = Http1Tracker::new(&cfg);
        let mut out = Vec::new();
        for (ts, op) in ops.iter().enumerate() {
            let ts = ts as u64;
            match op {
                Op::Data { conn, ingress, bytes, unseen } => {
                    let chunk = DataChunk {
                        conn_id: *conn,
                        direction: if *ingress { Direction::Ingress } else { Direction::Egress },
                        ts_ns: ts,
                        len: (bytes.len() as u32).saturating_add(*unseen),
                        payload: bytes,
                    };
                    t.on_data(&chunk, &mut out);
                }
                Op::Close { conn } => t.on_close(*conn, ts, &mut out),
                Op::Expire { now } => t.expire(*now, &mut out),
            }
            prop_assert!(t.connections() <= 2);
            prop_assert!(t.head_buffer_bytes() <= 300, "{}", t.head_buffer_bytes());
        }
        for r in &out {
            prop_assert!(r.end_ns >= r.start_ns);
            prop_assert!(r.incomplete || r.status >= 100);
        }
        let c = t.counters();
        prop_assert_eq!(c.exchanges + c.incomplete_exchanges >= out.len() as u64, true);
    }
}

/// One generated exchange and the bytes of its request and response.
#[derive(Clone, Debug)]
struct Exchange {
    method: &'static str,
    target: String,
    status: u16,
    request: Vec<u8>,
    response: Vec<u8>,
}

fn chunked(body_len: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = body_len;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'd', n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE"]),
        "/[a-z0-9]{1,8}(/[0-9]{1,4})?(\\?q=[a-z]{1,4})?",
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500, 503]),
        0..400usize,
        any::<bool>(),
        0..3000usize,
        any::<bool>(),
        1..700usize,
        any::<bool>(),
    )
        .prop_map(
            |(
                method,
                target,
                status,
                req_body,
                req_chunked,
                resp_body,
                resp_chunked,
                chunk,
                cont,
            )| {
                let mut request =
                    format!("{method} {target} HTTP/1.1\r\nHost: h\r\nX-Request-Id: r1\r\n");
                let body_allowed = matches!(method, "POST" | "PUT");
                let mut req_tail = Vec::new();
                if body_allowed && req_chunked {
                    request.push_str("Transfer-Encoding: chunked\r\n");
                    req_tail = chunked(req_body, chunk);
                } else if body_allowed {
                    request.push_str(&format!("Content-Length: {req_body}\r\n"));
                    req_tail.extend(std::iter::repeat_n(b'b', req_body));
                }
                request.push_str("\r\n");
                let mut request = request.into_bytes();
                request.extend(req_tail);
                let mut response = Vec::new();
                if cont && body_allowed {
                    response.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                let no_body = method == "HEAD" || status == 204 || status == 304;
                let mut head = format!("HTTP/1.1 {status} X\r\nServer: t\r\n");
                let body = if resp_chunked {
                    head.push_str("Transfer-Encoding: chunked\r\n");
                    chunked(resp_body, chunk)
                } else {
                    head.push_str(&format!("Content-Length: {resp_body}\r\n"));
                    vec![b'r'; resp_body]
                };
                head.push_str("\r\n");
                response.extend_from_slice(head.as_bytes());
                if !no_body {
                    response.extend(body);
                }
                Exchange {
                    method,
                    target,
                    status,
                    request,
                    response,
                }
            },
        )
}

/// Cut `bytes` at the given fractions into pieces (empty pieces dropped).
fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2)
        .filter(|w| w[0] < w[1])
        .map(|w| &bytes[w[0]..w[1]])
        .collect()
}

type Record = (
    Side,
    String,
    String,
    u16,
    u64,
    u64,
    u64,
    u64,
    bool,
    Option<String>,
);

fn records(out: &[HttpRequest]) -> Vec<Record> {
    out.iter()
        .map(|r| {
            (
                r.side,
                r.method.clone(),
                r.target.clone(),
                r.status,
                r.start_ns,
                r.end_ns,
                r.request_bytes,
                r.response_bytes,
                r.incomplete,
                r.headers.x_request_id().map(str::to_owned),
            )
        })
        .collect()
}

/// Feed the exchanges one after the other (keep-alive), each message split
/// at `cuts`; server side unless `client`.
fn run_sequential(exs: &[Exchange], cuts: &[prop::sample::Index], client: bool) -> Vec<Record> {
    let (req_dir, resp_dir) = if client {
        (Direction::Egress, Direction::Ingress)
    } else {
        (Direction::Ingress, Direction::Egress)
    };
    let mut t = Http1Tracker::new(&HttpConfig::default());
    let mut out = Vec::new();
    for (i, ex) in exs.iter().enumerate() {
        for (dir, bytes, ts) in [
            (req_dir, &ex.request, 10 * i as u64 + 1),
            (resp_dir, &ex.response, 10 * i as u64 + 5),
        ] {
            for piece in split(bytes, cuts) {
                let c = DataChunk {
                    conn_id: 7,
                    direction: dir,
                    ts_ns: ts,
                    len: piece.len() as u32,
                    payload: piece,
                };
                t.on_data(&c, &mut out);
            }
        }
    }
    t.on_close(7, 10_000, &mut out);
    records(&out)
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn split_stream_gives_the_same_records(
        exs in prop::collection::vec(exchange(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        client in any::<bool>(),
    ) {
        let whole = run_sequential(&exs, &[], client);
        let pieces = run_sequential(&exs, &cuts, client);
        prop_assert_eq!(&whole, &pieces);
        prop_assert_eq!(whole.len(), exs.len());
        for (i, (r, ex)) in whole.iter().zip(&exs).enumerate() {
            prop_assert_eq!(r.0, if client { Side::Client } else { Side::Server });
            prop_assert_eq!(r.1.as_str(), ex.method);
            prop_assert_eq!(&r.2, &ex.target);
            prop_assert_eq!(r.3, ex.status);
            prop_assert_eq!((r.4, r.5), (10 * i as u64 + 1, 10 * i as u64 + 5));
            prop_assert_eq!(r.6, ex.request.len() as u64);
            prop_assert_eq!(r.7, ex.response.len() as u64);
            prop_assert!(!r.8);
            prop_assert_eq!(r.9.as_deref(), Some("r1"));
        }
    }

    #[test]
    fn pipelined_stream_split_anywhere(
        exs in prop::collection::vec(exchange(), 1..5),
        req_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        resp_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let requests: Vec<u8> = exs.iter().flat_map(|e| e.request.clone()).collect();
        let responses: Vec<u8> = exs.iter().flat_map(|e| e.response.clone()).collect();
        let mut t = Http1Tracker::new(&HttpConfig::default());
        let mut out = Vec::new();
        for (dir, bytes, cuts, ts) in [
            (Direction::Ingress, &requests, &req_cuts, 1),
            (Direction::Egress, &responses, &resp_cuts, 2),
        ] {
            for piece in split(bytes, cuts) {
                let c = DataChunk { conn_id: 9, direction: dir, ts_ns: ts, len: piece.len() as u32, payload: piece };
                t.on_data(&c, &mut out);
            }
        }
        let got: Vec<_> = out.iter().map(|r| (r.target.clone(), r.status, r.response_bytes, r.incomplete)).collect();
        let want: Vec<_> = exs.iter().map(|e| (e.target.clone(), e.status, e.response.len() as u64, false)).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(t.counters().parse_errors, 0);
    }
}
