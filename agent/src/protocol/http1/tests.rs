//! Tracker behaviour, one scenario per test, fed as the kernel would feed it.
use crate::protocol::ProtocolTracker;
use std::time::Duration;

use super::*;
use crate::request::{HttpRequest, Side};

const CONN: u64 = 0xffff_8880_0abc_d000;
/// The kernel's capture limit (agent_common::MAX_PAYLOAD).
const CAP: usize = agent_common::MAX_PAYLOAD;

struct Harness {
    t: Http1Tracker,
    out: Vec<HttpRequest>,
}

impl Harness {
    fn new() -> Self {
        Self::with(HttpConfig::default())
    }

    fn with(cfg: HttpConfig) -> Self {
        Self {
            t: Http1Tracker::new(&cfg),
            out: Vec::new(),
        }
    }

    /// A syscall that moved `bytes`, captured as the kernel would (a prefix).
    fn io(&mut self, conn: u64, dir: Direction, ts: u64, bytes: &[u8]) {
        let payload = &bytes[..bytes.len().min(CAP)];
        self.t.on_data(
            &DataChunk {
                conn_id: conn,
                direction: dir,
                ts_ns: ts,
                len: bytes.len() as u32,
                payload,
            },
            &mut self.out,
        );
    }

    fn rx(&mut self, ts: u64, bytes: &[u8]) {
        self.io(CONN, Direction::Ingress, ts, bytes);
    }

    fn tx(&mut self, ts: u64, bytes: &[u8]) {
        self.io(CONN, Direction::Egress, ts, bytes);
    }

    /// A syscall whose bytes were not captured at all (sendfile).
    fn tx_len(&mut self, ts: u64, len: u32) {
        self.t.on_data(
            &DataChunk {
                conn_id: CONN,
                direction: Direction::Egress,
                ts_ns: ts,
                len,
                payload: &[],
            },
            &mut self.out,
        );
    }

    fn close(&mut self, ts: u64) {
        self.t.on_close(CONN, ts, &mut self.out);
    }

    fn take(&mut self) -> Vec<HttpRequest> {
        std::mem::take(&mut self.out)
    }

    fn c(&self) -> &HttpCounters {
        self.t.counters()
    }
}

const GET: &[u8] = b"GET /users/42?x=1 HTTP/1.1\r\nHost: api\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn server_keep_alive_exchanges() {
    let mut h = Harness::new();
    h.rx(100, GET);
    assert!(h.take().is_empty());
    h.tx(250, OK);
    h.rx(300, b"DELETE /users/7 HTTP/1.1\r\nHost: api\r\n\r\n");
    h.tx(
        420,
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    );
    let r = h.take();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].side, Side::Server);
    assert_eq!(
        (r[0].method.as_str(), r[0].target.as_str()),
        ("GET", "/users/42?x=1")
    );
    assert_eq!((r[0].status, r[0].start_ns, r[0].end_ns), (200, 100, 250));
    assert_eq!(r[0].request_bytes, GET.len() as u64);
    assert_eq!(r[0].response_bytes, OK.len() as u64);
    assert_eq!(r[0].headers.host(), Some("api"));
    assert!(r[0].headers.traceparent().is_some());
    assert_eq!(r[0].conn_id(), CONN);
    assert!(!r[0].incomplete);
    assert_eq!((r[1].method.as_str(), r[1].status), ("DELETE", 503));
    assert_eq!(r[1].duration_ns(), 120);
    assert_eq!(h.c().exchanges, 2);
}

#[test]
fn heads_split_byte_by_byte() {
    let mut h = Harness::new();
    for (i, b) in GET.iter().enumerate() {
        h.rx(10 + i as u64, std::slice::from_ref(b));
    }
    for (i, b) in OK.iter().enumerate() {
        h.tx(1000 + i as u64, std::slice::from_ref(b));
    }
    let r = h.take();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].status, r[0].start_ns), (200, 10));
    assert_eq!(r[0].end_ns, 1000 + OK.len() as u64 - 1);
    assert_eq!(r[0].target, "/users/42?x=1");
    assert_eq!(r[0].request_bytes, GET.len() as u64);
    assert_eq!(r[0].response_bytes, OK.len() as u64);
}

#[test]
fn three_pipelined_requests_in_one_read() {
    let mut h = Harness::new();
    let mut reqs = Vec::new();
    for p in ["/a", "/b", "/c"] {
        reqs.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    h.rx(5, &reqs);
    // The first two responses in one write, the third alone.
    let two = [
        OK,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
    ]
    .concat();
    h.tx(20, &two);
    h.tx(
        30,
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nerr\r\n0\r\n\r\n",
    );
    let r = h.take();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.target.as_str(), r.status, r.start_ns, r.end_ns))
        .collect();
    assert_eq!(
        got,
        vec![("/a", 200, 5, 20), ("/b", 404, 5, 20), ("/c", 500, 5, 30)]
    );
}

#[test]
fn expect_100_continue_is_not_the_final_status() {
    let mut h = Harness::new();
    let head =
        b"PUT /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n";
    h.rx(1, head);
    h.tx(2, b"HTTP/1.1 100 Continue\r\n\r\n");
    h.rx(3, b"0123456789");
    assert!(h.take().is_empty());
    h.tx(9, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let r = h.take();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].status, r[0].start_ns, r[0].end_ns), (201, 1, 9));
    assert_eq!(r[0].request_bytes, head.len() as u64 + 10);
}

#[test]
fn chunked_response_with_framing_split_everywhere() {
    let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n";
    for split in [50, 51, 52, 53, 80, 85, 90, body.len() - 1] {
        let mut h = Harness::new();
        h.rx(1, GET);
        h.tx(10, &body[..split]);
        assert!(h.take().is_empty(), "split {split}");
        h.tx(20, &body[split..]);
        let r = h.take();
        assert_eq!(r.len(), 1, "split {split}");
        assert_eq!((r[0].status, r[0].end_ns), (200, 20));
        assert_eq!(r[0].response_bytes, body.len() as u64);
    }
}

#[test]
fn chunked_data_beyond_the_capture_is_skipped_by_length() {
    let mut h = Harness::new();
    h.rx(1, GET);
    h.tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    // nginx-style writev: size line, 4096 data bytes and CRLF; only 1024 captured.
    let mut piece = b"1000\r\n".to_vec();
    piece.extend(std::iter::repeat_n(b'z', 4096));
    piece.extend_from_slice(b"\r\n");
    h.tx(3, &piece);
    h.tx(4, &piece);
    assert!(h.take().is_empty());
    h.tx(5, b"0\r\n\r\n");
    let r = h.take();
    assert_eq!((r.len(), r[0].end_ns), (1, 5));
    assert_eq!(h.c().framing_lost, 0);
}

#[test]
fn lost_chunk_framing_ends_at_last_chunk_or_next_request() {
    let mut h = Harness::new();
    h.rx(1, GET);
    h.tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    // Two chunks in one large write: the second size line is not captured.
    let mut w = b"800\r\n".to_vec();
    w.extend(std::iter::repeat_n(b'a', 0x800));
    w.extend_from_slice(b"\r\n10\r\n0123456789abcdef\r\n");
    h.tx(3, &w);
    assert_eq!(h.c().framing_lost, 1);
    h.tx(4, b"0\r\n\r\n");
    let r = h.take();
    assert_eq!((r.len(), r[0].end_ns), (1, 4));

    // Same, but the terminator rides at the end of a large write: the next
    // request ends it at the last response byte seen.
    h.rx(10, GET);
    h.tx(11, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut w2 = w.clone();
    w2.extend_from_slice(b"0\r\n\r\n");
    h.tx(12, &w2);
    assert!(h.take().is_empty());
    h.rx(20, GET);
    let r = h.take();
    assert_eq!(
        (r.len(), r[0].start_ns, r[0].end_ns, r[0].incomplete),
        (1, 10, 12, false)
    );
    assert_eq!(h.c().unframed_responses, 1);
    h.tx(25, OK);
    assert_eq!(h.take()[0].end_ns, 25);
}

#[test]
fn sendfile_body_is_counted_by_length() {
    let mut h = Harness::new();
    h.rx(1, b"GET /big.iso HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    h.tx(2, head);
    h.tx_len(3, 65536);
    assert!(h.take().is_empty());
    h.tx_len(7, 100000 - 65536);
    let r = h.take();
    assert_eq!((r.len(), r[0].end_ns), (1, 7));
    assert_eq!(r[0].response_bytes, head.len() as u64 + 100_000);
    h.rx(8, GET);
    h.tx(9, OK);
    assert_eq!(h.take()[0].end_ns, 9);
}

#[test]
fn large_request_body_with_small_captures() {
    let mut h = Harness::new();
    let mut req = b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'q', 5000));
    req.extend_from_slice(GET);
    // The second read holds the body's tail and the next request, within the capture.
    let split = req.len() - GET.len() - 500;
    h.rx(1, &req[..split]);
    h.rx(2, &req[split..]);
    h.tx(3, OK);
    h.tx(4, OK);
    let r = h.take();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.method.as_str(), r.start_ns, r.end_ns))
        .collect();
    assert_eq!(got, vec![("POST", 1, 3), ("GET", 2, 4)]);
    assert_eq!(r[0].request_bytes, req.len() as u64 - GET.len() as u64);
}

#[test]
fn close_mid_request_emits_incomplete() {
    let mut h = Harness::new();
    h.rx(5, b"GET /slow HTTP/1.1\r\nHost: a\r\n");
    h.close(50);
    let r = h.take();
    assert_eq!(r.len(), 1);
    assert!(r[0].incomplete);
    assert_eq!(
        (
            r[0].target.as_str(),
            r[0].status,
            r[0].start_ns,
            r[0].end_ns
        ),
        ("/slow", 0, 5, 50)
    );
    assert_eq!(h.c().incomplete_exchanges, 1);
    assert_eq!(h.t.connections(), 0);
}

#[test]
fn close_while_waiting_or_mid_response() {
    let mut h = Harness::new();
    h.rx(1, GET);
    h.close(9);
    let r = h.take();
    assert!(r[0].incomplete && r[0].status == 0 && r[0].end_ns == 9);

    h.rx(10, GET);
    h.tx(
        11,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
    );
    h.close(30);
    let r = h.take();
    assert!(r[0].incomplete);
    assert_eq!((r[0].status, r[0].end_ns), (200, 11));
    assert_eq!(h.c().incomplete_exchanges, 2);
}

#[test]
fn http10_close_delimited_response_ends_at_last_byte() {
    let mut h = Harness::new();
    h.rx(1, b"GET /old HTTP/1.0\r\n\r\n");
    h.tx(
        2,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome",
    );
    h.tx(3, b" more body");
    assert!(h.take().is_empty());
    h.close(99);
    let r = h.take();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].status,
            r[0].end_ns,
            r[0].incomplete,
            r[0].version_minor
        ),
        (200, 3, false, 0)
    );
    assert_eq!(h.c().unframed_responses, 1);
}

#[test]
fn client_reading_close_delimited_response_ignores_the_eof_read() {
    let mut h = Harness::new();
    h.tx(1, b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n");
    h.rx(5, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one");
    h.rx(8, b" part two");
    h.rx(12, b"");
    h.close(13);
    let r = h.take();
    assert_eq!(
        (r.len(), r[0].side, r[0].end_ns, r[0].incomplete),
        (1, Side::Client, 8, false)
    );
}

#[test]
fn head_response_has_no_body() {
    let mut h = Harness::new();
    h.rx(1, b"HEAD /f HTTP/1.1\r\nHost: x\r\n\r\n");
    h.tx(2, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    h.rx(3, GET);
    h.tx(4, OK);
    let r = h.take();
    assert_eq!(r.iter().map(|r| r.end_ns).collect::<Vec<_>>(), vec![2, 4]);
}

#[test]
fn header_of_64_kib_is_truncated_and_the_stream_recovers() {
    let mut h = Harness::new();
    let mut req = b"GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'v', 64 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    // Read in 1 KiB syscalls, each fully captured.
    for (i, part) in req.chunks(1024).enumerate() {
        h.rx(1 + i as u64, part);
    }
    assert_eq!(h.c().truncated_heads, 1);
    h.tx(
        100,
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
    );
    h.rx(101, GET);
    h.tx(102, OK);
    let r = h.take();
    let got: Vec<_> = r.iter().map(|r| (r.target.as_str(), r.status)).collect();
    assert_eq!(got, vec![("/huge", 431), ("/users/42?x=1", 200)]);
    // And in one 64 KiB read of which the kernel captured 1 KiB.
    let mut h = Harness::new();
    h.rx(1, &req);
    h.tx(2, OK);
    assert_eq!(h.take()[0].target, "/huge");
    assert_eq!(h.c().truncated_heads, 1);
}

#[test]
fn truncated_capture_inside_a_head_is_parsed_as_far_as_seen() {
    let mut h = Harness::new();
    let mut req = b"GET /t HTTP/1.1\r\nHost: h\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'c', 3000));
    req.extend_from_slice(b"\r\n\r\n");
    h.rx(1, &req);
    h.tx(2, OK);
    let r = h.take();
    assert_eq!(
        (r[0].target.as_str(), r[0].headers.host()),
        ("/t", Some("h"))
    );
    assert_eq!(r[0].request_bytes, req.len() as u64);
}

#[test]
fn garbage_tls_and_http2_are_not_http() {
    let tls_client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03, 0x5b, 0x1a,
    ];
    let cases: [&[u8]; 4] = [
        b"\x00\x01garbage\xff\xfe",
        tls_client_hello,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ];
    let mut h = Harness::new();
    for (i, c) in cases.iter().enumerate() {
        let conn = 100 + i as u64;
        h.io(conn, Direction::Ingress, 1, c);
        h.io(
            conn,
            Direction::Egress,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        h.io(conn, Direction::Ingress, 3, c);
    }
    assert!(h.take().is_empty());
    assert_eq!(h.c().non_http_connections, 4);
    assert_eq!(h.c().exchanges, 0);
    // Payload-free events of unknown connections leave no state behind.
    h.t.on_data(
        &DataChunk {
            conn_id: 999,
            direction: Direction::Ingress,
            ts_ns: 4,
            len: 100,
            payload: &[],
        },
        &mut h.out,
    );
    assert_eq!(h.t.connections(), 4);
}

#[test]
fn connection_misjudged_mid_body_revives_on_a_request() {
    let mut h = Harness::new();
    h.rx(1, b"\x89PNG body bytes of an upload we joined late");
    assert_eq!(h.c().non_http_connections, 1);
    h.rx(2, GET);
    h.tx(3, OK);
    assert_eq!(h.take().len(), 1);
    assert_eq!(h.c().revived_connections, 1);
}

#[test]
fn client_side_exchange() {
    let mut h = Harness::new();
    h.tx(10, GET);
    h.rx(40, &OK[..20]);
    h.rx(55, &OK[20..]);
    let r = h.take();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].side, Side::Client);
    assert_eq!((r[0].status, r[0].start_ns, r[0].end_ns), (200, 10, 55));
}

#[test]
fn joined_mid_connection_response_is_unmatched() {
    let mut h = Harness::new();
    h.tx(1, OK);
    assert_eq!(h.c().unmatched_responses, 1);
    h.rx(2, GET);
    h.tx(3, OK);
    let r = h.take();
    assert_eq!((r.len(), r[0].side, r[0].end_ns), (1, Side::Server, 3));
}

#[test]
fn upgrade_stops_tracking() {
    let mut h = Harness::new();
    h.rx(
        1,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    h.tx(
        2,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    );
    h.rx(3, b"\x81\x85abcdefghi");
    h.rx(4, GET);
    let r = h.take();
    assert_eq!((r.len(), r[0].status, r[0].end_ns), (1, 101, 2));
    assert_eq!(h.c().upgraded_connections, 1);
    assert_eq!((h.c().parse_errors, h.c().non_http_connections), (0, 0));
}

#[test]
fn parse_error_resyncs_on_next_request() {
    let mut h = Harness::new();
    h.rx(1, GET);
    h.tx(2, OK);
    h.rx(3, b"GET /bad path HTTP/1.1\r\n\r\n");
    h.tx(4, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    h.rx(5, GET);
    h.tx(6, OK);
    let r = h.take();
    assert_eq!(r.iter().map(|r| r.end_ns).collect::<Vec<_>>(), vec![2, 6]);
    assert_eq!(h.c().parse_errors, 1);
    assert_eq!(h.c().unmatched_responses, 1);
}

#[test]
fn idle_expiry_emits_and_forgets() {
    let secs = 1_000_000_000;
    let mut h = Harness::with(HttpConfig {
        idle_timeout: Duration::from_secs(30),
        ..Default::default()
    });
    h.rx(secs, GET);
    h.tx(secs + 5, b"HTTP/1.1 200 OK\r\n\r\nclose-delimited");
    h.io(7, Direction::Ingress, 20 * secs, GET);
    h.t.expire(32 * secs, &mut h.out);
    let r = h.take();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].status, r[0].end_ns, r[0].incomplete),
        (200, secs + 5, false)
    );
    assert_eq!(h.t.connections(), 1);
    h.t.expire(60 * secs, &mut h.out);
    let r = h.take();
    assert_eq!(
        (r.len(), r[0].incomplete, r[0].end_ns),
        (1, true, 20 * secs)
    );
    assert_eq!(h.c().expired_connections, 2);
    assert_eq!(h.t.connections(), 0);
}

#[test]
fn connection_cap_evicts_least_recently_active() {
    let mut h = Harness::with(HttpConfig {
        max_connections: 32,
        ..Default::default()
    });
    for i in 0..100u64 {
        h.io(1000 + i, Direction::Ingress, i, GET);
    }
    assert!(h.t.connections() <= 32);
    let evicted = h.c().evicted_connections;
    assert!(evicted >= 68, "{evicted}");
    let r = h.take();
    assert_eq!(r.len() as u64, evicted);
    assert!(r.iter().all(|r| r.incomplete));
    // The newest connection is still tracked and pairs normally.
    h.io(1099, Direction::Egress, 200, OK);
    assert_eq!(h.take()[0].start_ns, 99);
}

#[test]
fn pipelined_requests_beyond_the_capture_desync_instead_of_mispairing() {
    let mut h = Harness::new();
    // 20 requests in one read: only the first `seen` fit in the 1 KiB capture.
    let batch = GET.repeat(20);
    let seen = CAP / GET.len();
    assert!(seen < 20 && !CAP.is_multiple_of(GET.len()));
    h.rx(1, &batch);
    // More requests pipelined before any response: their order is unknown.
    h.rx(2, GET);
    assert_eq!(h.c().desynced_connections, 1);
    assert!(h.take().is_empty());
    for i in 0..22 {
        h.tx(10 + i, OK);
    }
    // The requests seen are paired with the first responses, nothing more.
    let r = h.take();
    assert_eq!(r.len(), seen);
    assert!(r.iter().all(|r| !r.incomplete && r.start_ns == 1));
    let ends: Vec<u64> = r.iter().map(|r| r.end_ns).collect();
    assert_eq!(ends, (10..10 + seen as u64).collect::<Vec<_>>());
    h.rx(40, GET);
    h.tx(41, OK);
    assert!(
        h.take().is_empty(),
        "no record may pair a response with the wrong request"
    );
    h.close(50);
    h.rx(60, GET);
    h.tx(61, OK);
    assert_eq!(h.take()[0].start_ns, 60);
}

#[test]
fn lost_response_framing_with_requests_waiting_desyncs() {
    let mut h = Harness::new();
    h.rx(1, &[GET, GET].concat());
    h.tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut w = b"800\r\n".to_vec();
    w.extend(std::iter::repeat_n(b'a', 0x800));
    w.extend_from_slice(b"\r\n10\r\n0123456789abcdef\r\n");
    h.tx(3, &w);
    let r = h.take();
    assert_eq!((r.len(), h.c().desynced_connections), (2, 1));
    assert!(r.iter().all(|r| r.incomplete));
}

#[test]
fn pipeline_depth_is_bounded() {
    let mut h = Harness::with(HttpConfig {
        max_pipelined: 4,
        ..Default::default()
    });
    let short: &[u8] = b"GET /p HTTP/1.1\r\n\r\n";
    h.rx(1, &short.repeat(10));
    for i in 0..10 {
        h.rx(2 + i, short);
    }
    assert_eq!(h.c().pipeline_overflows, 16);
    assert_eq!(h.take().len(), 16);
}

#[test]
fn config_section_parses_and_validates() {
    use crate::config::Config;
    let none = Vec::<(String, String)>::new();
    let c = Config::from_yaml_with_env(
        "http:\n  idle_timeout: 5s\n  max_connections: 10\nroutes:\n  max_per_service: 20\n  gray_tags: [canary]\n",
        none.clone(),
    )
    .unwrap();
    assert_eq!(c.http.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.http.max_connections, 10);
    assert_eq!(c.http.max_head_bytes, 16 * 1024);
    assert_eq!(c.routes.max_per_service, 20);
    let e = Config::from_yaml_with_env("http:\n  max_connections: 0\n", none.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("http.max_connections"), "{e}");
    let e = Config::from_yaml_with_env("http:\n  idle_timeout: soon\n", none.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("idle_timeout"), "{e}");
    let e = Config::from_yaml_with_env("routes:\n  patterns: [{pattern: x}]\n", none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("routes.patterns[0].pattern"), "{e}");
}

/// A CLOSE of the previous socket at a reused address that arrives after the
/// new connection's first bytes (two CPUs' events out of order) is ignored.
#[test]
fn late_close_of_a_reused_address_does_not_end_the_new_connection() {
    let mut t = Http1Tracker::new(&HttpConfig::default());
    let mut out = Vec::new();
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    t.on_data(
        &DataChunk {
            conn_id: 9,
            direction: Direction::Ingress,
            ts_ns: 2_000,
            len: req.len() as u32,
            payload: req,
        },
        &mut out,
    );
    t.on_close(9, 1_000, &mut out);
    assert!(out.is_empty(), "stale close ignored: {out:?}");
    assert_eq!(t.counters().stale_closes, 1);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    t.on_data(
        &DataChunk {
            conn_id: 9,
            direction: Direction::Egress,
            ts_ns: 3_000,
            len: resp.len() as u32,
            payload: resp,
        },
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].status, out[0].incomplete), (200, false));
}

/// 5,000 slow clients each send half a head and stop. Per-connection limits
/// alone would buffer all of it; the global budget holds the buffers to
/// `max_head_buffer_bytes`, parses the heads that do not fit as truncated
/// (still measured), counts them, and gives the bytes back on close.
#[test]
fn head_buffers_share_one_budget() {
    let half = b"GET /slow/path HTTP/1.1\r\nHost: example\r\nUser-Agent: slow";
    let budget = 100 * half.len();
    let mut h = Harness::with(HttpConfig {
        max_head_buffer_bytes: budget,
        ..Default::default()
    });
    for i in 0..5_000u64 {
        h.io(10_000 + i, Direction::Ingress, i, half);
        assert!(
            h.t.head_buffer_bytes() <= budget,
            "{}",
            h.t.head_buffer_bytes()
        );
    }
    assert_eq!(
        h.t.head_buffer_bytes(),
        budget,
        "the first 100 are buffered"
    );
    assert_eq!(h.c().head_budget_exhausted, 4_900);
    // The rest were parsed from what arrived: each still becomes an exchange.
    assert_eq!(h.c().truncated_heads, 4_900);
    for i in 0..5_000u64 {
        h.t.on_close(10_000 + i, 10_000 + i, &mut h.out);
    }
    let r = h.take();
    assert_eq!(r.len(), 5_000);
    assert!(
        r.iter()
            .all(|r| r.method == "GET" && r.target == "/slow/path")
    );
    assert_eq!(h.t.head_buffer_bytes(), 0, "closing returns every byte");
}
