//! HTTP/2 tracker tests on frames built with `loona-hpack`'s encoder (one
//! encoder per direction, as a real peer keeps its table across requests).
use loona_hpack::Encoder;

use super::frame::{flag, kind};
use super::{DataChunk, Direction, Http2Tracker, PREFACE};
use crate::protocol::ProtocolTracker;
use crate::protocol::http1::HttpConfig;
use crate::request::{HttpRequest, Side};

const CONN: u64 = 7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = len.to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(stream.to_be_bytes());
    v.extend(payload);
    v
}

/// A peer's encoder: header blocks that reuse its dynamic table.
struct Peer(Encoder<'static>);

impl Peer {
    fn new() -> Self {
        Self(Encoder::new())
    }

    fn headers(&mut self, stream: u32, flags: u8, h: &[(&str, &str)]) -> Vec<u8> {
        let block = self
            .0
            .encode(h.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        frame(kind::HEADERS, flags | flag::END_HEADERS, stream, &block)
    }
}

fn grpc_request(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "250m"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("x-gray-tag", "version:canary"),
    ]
}

fn chunk(dir: Direction, ts: u64, bytes: &[u8]) -> DataChunk<'_> {
    DataChunk {
        conn_id: CONN,
        direction: dir,
        ts_ns: ts,
        len: bytes.len() as u32,
        payload: bytes,
    }
}

fn tracker() -> Http2Tracker {
    Http2Tracker::new(&HttpConfig::default())
}

/// Server side: the client's bytes are read (ingress), the server's written.
fn feed(t: &mut Http2Tracker, steps: &[(Direction, u64, Vec<u8>)]) -> Vec<HttpRequest> {
    let mut out = Vec::new();
    for (dir, ts, bytes) in steps {
        t.on_data(&chunk(*dir, *ts, bytes), &mut out);
    }
    out
}

use Direction::{Egress as W, Ingress as R};

/// One unary gRPC call, as the server's syscalls see it.
fn unary_call(
    client: &mut Peer,
    server: &mut Peer,
    stream: u32,
    path: &str,
    code: &str,
) -> (Vec<u8>, Vec<u8>) {
    let mut req = client.headers(stream, 0, &grpc_request(path));
    req.extend(frame(
        kind::DATA,
        flag::END_STREAM,
        stream,
        &[0, 0, 0, 0, 2, 8, 1],
    ));
    let mut resp = server.headers(
        stream,
        0,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    resp.extend(frame(kind::DATA, 0, stream, &[0, 0, 0, 0, 1, 7]));
    resp.extend(server.headers(
        stream,
        flag::END_STREAM,
        &[("grpc-status", code), ("grpc-message", "")],
    ));
    (req, resp)
}

fn opening() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    v
}

#[test]
fn grpc_unary_call_is_paired_with_status_deadline_and_trace_headers() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let (req, resp) = unary_call(&mut c, &mut s, 1, "/demo.Greeter/Hello", "0");
    let out = feed(
        &mut t,
        &[
            (R, 100, opening()),
            (W, 110, frame(kind::SETTINGS, 0, 0, &[])),
            (R, 1_000, req),
            (W, 5_000, resp),
        ],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let r = &out[0];
    assert_eq!(r.side, Side::Server);
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/demo.Greeter/Hello")
    );
    assert_eq!((r.status, r.incomplete, r.http2), (200, false, true));
    assert_eq!((r.start_ns, r.end_ns), (1_000, 5_000));
    let g = r.grpc.expect("a gRPC call");
    assert_eq!((g.status, g.timeout_ns), (Some(0), Some(250_000_000)));
    assert!(!r.is_server_error());
    assert_eq!(r.protocol_version(), "2");
    assert_eq!(r.headers.host(), Some("localhost:50051"));
    assert_eq!(r.headers.x_gray_tag(), Some("version:canary"));
    // The same trace context as from an HTTP/1 head.
    let e = crate::request::trace::context::extract(&r.headers);
    assert_eq!(
        e.context.expect("traceparent").trace_id_hex(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(t.counters().exchanges, 1);
}

#[test]
fn frames_split_anywhere_across_syscalls_decode_the_same() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut steps = vec![(R, 1, opening())];
    let mut ts = 10;
    let mut client = vec![];
    let mut server = frame(kind::SETTINGS, 0, 0, &[]);
    for i in 0..20u32 {
        let (req, resp) = unary_call(&mut c, &mut s, 2 * i + 1, &format!("/p.S/M{}", i % 4), "0");
        client.extend(req);
        server.extend(resp);
    }
    // After the preface, client bytes one at a time, then server bytes in 7-byte writes: the
    // HPACK tables and frame boundaries must survive every cut.
    for b in client.chunks(1) {
        steps.push((R, ts, b.to_vec()));
        ts += 1;
    }
    for b in server.chunks(7) {
        steps.push((W, ts, b.to_vec()));
        ts += 1;
    }
    let mut t = tracker();
    let out = feed(&mut t, &steps);
    assert_eq!(out.len(), 20);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.target, format!("/p.S/M{}", i % 4));
        assert_eq!(r.grpc.unwrap().status, Some(0));
        assert!(!r.incomplete);
    }
    assert_eq!(t.counters().hpack_unknown_fields, 0);
}

#[test]
fn trailers_after_a_large_data_frame_in_one_write_still_end_the_call() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let (req, _) = unary_call(&mut c, &mut Peer::new(), 1, "/demo.Big/Get", "0");
    // One write: response head, a 1 MiB DATA frame, the trailers. The kernel
    // captured the head and the DATA frame's header, then (as lengths only)
    // the DATA payload, then the trailers.
    let head = s.headers(
        1,
        0,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    let data = frame(kind::DATA, 0, 1, &vec![0u8; 1 << 20]);
    let trailers = s.headers(1, flag::END_STREAM, &[("grpc-status", "0")]);
    let mut captured = head.clone();
    captured.extend(&data[..9]);
    let mut out = feed(&mut t, &[(R, 100, opening()), (R, 200, req)]);
    let write = DataChunk {
        conn_id: CONN,
        direction: W,
        ts_ns: 900,
        len: (captured.len() + (1 << 20)) as u32,
        payload: &captured,
    };
    t.on_data(&write, &mut out);
    assert!(out.is_empty(), "not ended before the trailers");
    t.on_data(&chunk(W, 900, &trailers), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].grpc.unwrap().status, Some(0));
    assert_eq!(out[0].end_ns, 900);
    assert!(out[0].response_bytes > 1 << 20);
}

#[test]
fn trailers_only_unavailable_is_a_server_error() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let mut req = c.headers(1, flag::END_STREAM, &grpc_request("/demo.Flaky/Call"));
    req.extend(c.headers(3, flag::END_STREAM, &grpc_request("/demo.Flaky/Call")));
    let resp = s.headers(
        1,
        flag::END_STREAM,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
        ],
    );
    let resp3 = s.headers(
        3,
        flag::END_STREAM,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "5"),
        ],
    );
    let out = feed(
        &mut t,
        &[(R, 1, opening()), (R, 2, req), (W, 3, resp), (W, 4, resp3)],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].grpc.unwrap().status, Some(14));
    assert!(out[0].is_server_error());
    assert_eq!(out[1].grpc.unwrap().status, Some(5));
    assert!(!out[1].is_server_error(), "NOT_FOUND is the caller's error");
}

#[test]
fn plain_http2_requests_carry_their_status_and_pair_out_of_order() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let get = |p: &'static str| {
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", p),
            (":authority", "x"),
        ]
    };
    let mut req = c.headers(1, flag::END_STREAM, &get("/a?q=1"));
    req.extend(c.headers(3, flag::END_STREAM, &get("/b")));
    // The second request is answered first; a 100 Continue precedes one.
    let mut resp = s.headers(3, 0, &[(":status", "100")]);
    resp.extend(s.headers(3, 0, &[(":status", "404")]));
    resp.extend(frame(kind::DATA, flag::END_STREAM, 3, b"nope"));
    resp.extend(s.headers(1, flag::END_STREAM, &[(":status", "204")]));
    let out = feed(&mut t, &[(R, 1, opening()), (R, 2, req), (W, 3, resp)]);
    let got: Vec<_> = out.iter().map(|r| (r.target.as_str(), r.status)).collect();
    assert_eq!(got, vec![("/b", 404), ("/a?q=1", 204)]);
    assert!(out.iter().all(|r| r.grpc.is_none() && r.http2));
}

#[test]
fn a_hundred_interleaved_streams_on_one_connection() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let mut steps = vec![(R, 1, opening())];
    let mut client = vec![];
    for i in 0..100u32 {
        client.extend(c.headers(2 * i + 1, 0, &grpc_request(&format!("/p.S/M{}", i % 7))));
    }
    for i in 0..100u32 {
        client.extend(frame(kind::DATA, flag::END_STREAM, 2 * i + 1, &[0; 5]));
    }
    steps.push((R, 2, client));
    // Responses in reverse order, each head and trailers interleaved with others.
    let mut server = vec![];
    for i in (0..100u32).rev() {
        server.extend(s.headers(
            2 * i + 1,
            0,
            &[(":status", "200"), ("content-type", "application/grpc")],
        ));
    }
    for i in (0..100u32).rev() {
        let code = if i % 10 == 0 { "14" } else { "0" };
        server.extend(s.headers(2 * i + 1, flag::END_STREAM, &[("grpc-status", code)]));
    }
    steps.push((W, 3, server));
    let out = feed(&mut t, &steps);
    assert_eq!(out.len(), 100);
    let errors = out.iter().filter(|r| r.is_server_error()).count();
    assert_eq!(errors, 10);
    for r in &out {
        let i: u32 = r.target.rsplit('M').next().unwrap().parse().unwrap();
        assert!(i < 7);
    }
}

#[test]
fn reset_streams_and_goaway_end_calls_as_the_peers_did() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let mut req = vec![];
    for id in [1, 3, 5] {
        req.extend(c.headers(id, flag::END_STREAM, &grpc_request("/p.S/Slow")));
    }
    // The client cancels stream 1; the server processed up to 3 and goes away.
    req.extend(frame(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    let mut resp = frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
    resp.extend(s.headers(
        3,
        flag::END_STREAM,
        &[(":status", "200"), ("grpc-status", "0")],
    ));
    let out = feed(&mut t, &[(R, 1, opening()), (R, 2, req), (W, 3, resp)]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].incomplete);
    assert_eq!(out[0].grpc.unwrap().status, Some(1), "CANCELLED");
    assert_eq!(out[1].target, "/p.S/Slow");
    assert!(!out[1].incomplete);
    assert_eq!(t.counters().goaway_dropped, 1, "stream 5 never ran");
    assert_eq!(t.counters().reset_streams, 1);
}

#[test]
fn continuation_frames_complete_a_header_block() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let block = c.0.encode(
        grpc_request("/p.S/Cont")
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    );
    let (a, b) = block.split_at(block.len() / 2);
    let mut req = frame(kind::HEADERS, flag::END_STREAM, 1, a);
    req.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, b));
    let resp = s.headers(
        1,
        flag::END_STREAM,
        &[(":status", "200"), ("grpc-status", "0")],
    );
    let out = feed(&mut t, &[(R, 1, opening()), (R, 2, req), (W, 3, resp)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].target, "/p.S/Cont");
}

#[test]
fn a_hole_over_a_frame_header_ends_pairing_and_is_counted() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let req = c.headers(1, flag::END_STREAM, &grpc_request("/p.S/Lost"));
    let mut out = feed(&mut t, &[(R, 1, opening()), (R, 2, req)]);
    let resp = s.headers(
        1,
        flag::END_STREAM,
        &[(":status", "200"), ("grpc-status", "0")],
    );
    // Only 3 bytes of the write were captured: the frame header is cut.
    let lossy = DataChunk {
        conn_id: CONN,
        direction: W,
        ts_ns: 3,
        len: resp.len() as u32,
        payload: &resp[..3],
    };
    t.on_data(&lossy, &mut out);
    // The hole is known once the next syscall in that direction starts.
    t.on_data(&chunk(W, 4, &resp), &mut out);
    assert_eq!(t.counters().desynced_connections, 1);
    assert_eq!(out.len(), 1);
    assert!(out[0].incomplete);
    assert_eq!(
        out[0].end_ns, 3,
        "ended with the syscall that lost the framing"
    );
    // Whatever follows is not parsed as frames (nothing invented).
    t.on_data(&chunk(W, 5, &resp), &mut out);
    assert_eq!(out.len(), 1);
}

/// What the kernel sends for one write holding the response head, a 1 MiB
/// DATA frame and the trailers (gRPC's large unary response): the first
/// 1 KiB as the syscall's event, then a segment at the trailers' offset.
#[test]
fn a_segment_after_a_large_data_frame_delivers_the_trailers_of_the_same_write() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let (req, _) = unary_call(&mut c, &mut Peer::new(), 1, "/demo.Big/Get", "0");
    let mut write = s.headers(
        1,
        0,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    write.extend(frame(kind::DATA, 0, 1, &vec![7u8; 1 << 20]));
    let at = write.len();
    write.extend(s.headers(1, flag::END_STREAM, &[("grpc-status", "0")]));
    let mut out = feed(&mut t, &[(R, 100, opening()), (R, 200, req)]);
    let first = DataChunk {
        conn_id: CONN,
        direction: W,
        ts_ns: 900,
        len: write.len() as u32,
        payload: &write[..1024],
    };
    t.on_data(&first, &mut out);
    assert!(out.is_empty(), "not ended before the trailers");
    t.on_segment(CONN, W, at as u32, &write[at..], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].grpc.unwrap().status, Some(0));
    assert_eq!((out[0].end_ns, out[0].incomplete), (900, false));
    // A segment that overlaps what was already taken is refused, counted.
    t.on_segment(CONN, W, 10, &write[10..20], &mut out);
    assert_eq!(t.counters().misplaced_segments, 1);
    assert_eq!(t.counters().desynced_connections, 0);
}

/// A plain HTTP/2 response whose last DATA frame (END_STREAM) is mostly
/// uncaptured ends with that write, not with the connection's next one.
#[test]
fn a_response_ending_in_an_uncaptured_data_frame_ends_with_its_write() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let req = c.headers(
        1,
        flag::END_STREAM,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/big"),
            (":authority", "x"),
        ],
    );
    let mut write = s.headers(1, 0, &[(":status", "200")]);
    write.extend(frame(kind::DATA, flag::END_STREAM, 1, &vec![1u8; 5000]));
    let mut out = feed(&mut t, &[(R, 1, opening()), (R, 2, req)]);
    let first = DataChunk {
        conn_id: CONN,
        direction: W,
        ts_ns: 50,
        len: write.len() as u32,
        payload: &write[..1024],
    };
    t.on_data(&first, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].status, out[0].end_ns), (200, 50));
}

#[test]
fn joined_mid_connection_never_invents_a_route() {
    let mut t = tracker();
    t.join(CONN, R, 1);
    // nghttp2-style: `:path` sent as an index into a table the agent never saw.
    let mut block = vec![0x83, 0x86, 0x80 | 62];
    block.extend([0x40 | 31, 16]);
    block.extend(b"application/grpc");
    let req = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    );
    // A second request whose path is a literal: measured.
    let mut block = vec![0x83, 0x86, 0x44, 8];
    block.extend(b"/p.S/New");
    let req3 = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &block,
    );
    let mut resp = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &[0x88],
    );
    resp.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &[0x88],
    ));
    let out = feed(&mut t, &[(R, 2, req), (R, 3, req3), (W, 4, resp)]);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].target.as_str(), out[0].status), ("/p.S/New", 200));
    assert_eq!(t.counters().undecodable_requests, 1);
    assert_eq!(t.counters().hpack_unknown_fields, 1);
}

#[test]
fn client_side_is_mirrored_and_close_emits_open_calls() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut t = tracker();
    let (req, resp) = unary_call(&mut c, &mut s, 1, "/p.S/Out", "13");
    let req3 = c.headers(3, flag::END_STREAM, &grpc_request("/p.S/Hang"));
    let mut out = feed(
        &mut t,
        &[
            (W, 10, opening()),
            (W, 20, req),
            (W, 25, req3),
            (R, 90, resp),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Client);
    assert_eq!((out[0].start_ns, out[0].end_ns), (20, 90));
    assert!(out[0].is_server_error(), "INTERNAL");
    t.on_close(CONN, 100, &mut out);
    assert_eq!(out.len(), 2);
    assert!(out[1].incomplete && out[1].target == "/p.S/Hang");
    assert_eq!(t.connections(), 0);
}

#[test]
fn streams_beyond_the_cap_are_counted_not_tracked() {
    let cfg = HttpConfig {
        max_streams_per_connection: 2,
        ..HttpConfig::default()
    };
    let mut t = Http2Tracker::new(&cfg);
    let mut c = Peer::new();
    let mut req = vec![];
    for id in [1, 3, 5] {
        req.extend(c.headers(id, flag::END_STREAM, &grpc_request("/p.S/M")));
    }
    feed(&mut t, &[(R, 1, opening()), (R, 2, req)]);
    assert_eq!(t.counters().stream_overflows, 1);
}

#[test]
fn http1_and_other_bytes_are_not_claimed() {
    let mut t = tracker();
    let mut out = vec![];
    for b in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PRI * H",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        assert!(!t.claim(&chunk(R, 1, b), &mut out));
    }
    assert_eq!(t.connections(), 0);
}

#[test]
fn fuzz_harness_runs_on_the_unit_cases() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let (req, resp) = unary_call(&mut c, &mut s, 1, "/p.S/F", "0");
    let mut input = vec![];
    for part in [req, resp] {
        let n = part.chunks(60).count();
        for (i, b) in part.chunks(60).enumerate() {
            // Switch to the server's direction after the request's last piece.
            input.push(b.len() as u8 | if i + 1 == n { 0x40 } else { 0 });
            input.extend(b);
        }
    }
    super::fuzz::frames(&input);
}
