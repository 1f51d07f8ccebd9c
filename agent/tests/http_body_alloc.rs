//! Body-only data events must not allocate: counted with a global allocator
//! that tallies allocations made by this thread.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sloguard::protocol::ProtocolTracker;
use sloguard::protocol::http1::{DataChunk, Direction, Http1Tracker, HttpConfig};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

fn feed(
    t: &mut Http1Tracker,
    out: &mut Vec<sloguard::request::HttpRequest>,
    dir: Direction,
    ts: u64,
    len: u32,
    payload: &[u8],
) {
    t.on_data(
        &DataChunk {
            conn_id: 42,
            direction: dir,
            ts_ns: ts,
            len,
            payload,
        },
        out,
    );
}

#[test]
fn body_only_events_do_not_allocate() {
    let mut t = Http1Tracker::new(&HttpConfig::default());
    let mut out = Vec::with_capacity(16);
    feed(
        &mut t,
        &mut out,
        Direction::Ingress,
        1,
        53,
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    );
    let body = [b'x'; 1024];
    let before = allocs();
    // Request body: captured prefixes and uncaptured tails.
    for i in 0..50 {
        feed(&mut t, &mut out, Direction::Ingress, 2 + i, 2000, &body);
    }
    assert_eq!(allocs() - before, 0, "request body chunks allocated");

    feed(&mut t, &mut out, Direction::Egress, 200, 0, b"");
    feed(
        &mut t,
        &mut out,
        Direction::Egress,
        201,
        45,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let mut piece = b"400\r\n".to_vec();
    piece.extend_from_slice(&[b'y'; 1024]);
    piece.extend_from_slice(b"\r\n");
    let before = allocs();
    for i in 0..50 {
        // Chunked data and sendfile-style uncaptured bytes.
        feed(
            &mut t,
            &mut out,
            Direction::Egress,
            300 + i,
            piece.len() as u32,
            &piece[..1024],
        );
        feed(&mut t, &mut out, Direction::Egress, 400 + i, 0, b"");
    }
    assert_eq!(allocs() - before, 0, "response body chunks allocated");
    assert!(out.is_empty());
    feed(&mut t, &mut out, Direction::Egress, 999, 5, b"0\r\n\r\n");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_ns, 999);
    // Positive control: a head does allocate (its strings), so the counter works.
    let before = allocs();
    feed(
        &mut t,
        &mut out,
        Direction::Ingress,
        1000,
        28,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(allocs() > before);
}
