//! Userspace pipeline throughput: keep-alive server traffic as data events →
//! Http1Tracker (reassembly, pairing) → RouteTable (template, cap, gray tag).
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sloguard::protocol::ProtocolTracker;
use sloguard::protocol::http1::{DataChunk, Direction, Http1Tracker, HttpConfig};
use sloguard::request::route::{RouteTable, RoutesConfig};

const CONNS: u64 = 100;
const REQUESTS: usize = 10_000;

struct Event {
    conn: u64,
    dir: Direction,
    len: u32,
    /// Index into the byte pool; `None` for an uncaptured (sendfile) body.
    bytes: Option<usize>,
}

fn traffic() -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut pool = Vec::new();
    let mut events = Vec::new();
    let paths = sloguard::kernel::events::encode::BENCH_PATHS;
    for i in 0..REQUESTS {
        let conn = 0xffff_8880_0000_0000 + (i as u64 % CONNS) * 0x800;
        let path = paths[i % paths.len()].replace("{}", &(i * 7919 % 100_000).to_string());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: api.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\
             traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692{:05}-01\r\n\r\n",
            i % 100_000
        );
        pool.push(req.into_bytes());
        events.push(Event {
            conn,
            dir: Direction::Ingress,
            len: pool.last().unwrap().len() as u32,
            bytes: Some(pool.len() - 1),
        });
        if i % 3 == 0 {
            // Head by writev, body by sendfile (not captured).
            let head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\nContent-Length: 65536\r\n\r\n";
            pool.push(head.as_bytes().to_vec());
            events.push(Event {
                conn,
                dir: Direction::Egress,
                len: head.len() as u32,
                bytes: Some(pool.len() - 1),
            });
            events.push(Event {
                conn,
                dir: Direction::Egress,
                len: 65536,
                bytes: None,
            });
        } else {
            let status = if i % 50 == 0 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{{\"ok\":true,\"id\":1234567890}}"
            );
            pool.push(resp.into_bytes());
            events.push(Event {
                conn,
                dir: Direction::Egress,
                len: pool.last().unwrap().len() as u32,
                bytes: Some(pool.len() - 1),
            });
        }
    }
    (pool, events)
}

fn bench(c: &mut Criterion) {
    let (pool, events) = traffic();
    let mut tracker = Http1Tracker::new(&HttpConfig::default());
    let mut routes = RouteTable::new(&RoutesConfig::default());
    let mut out = Vec::with_capacity(1024);
    let mut ts = 0u64;
    let mut group = c.benchmark_group("http_pipeline");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.bench_function("server_keep_alive", |b| {
        b.iter(|| {
            let mut done = 0usize;
            for e in &events {
                ts += 1_000;
                let payload: &[u8] = e.bytes.map_or(&[], |i| &pool[i][..pool[i].len().min(1024)]);
                tracker.on_data(
                    &DataChunk {
                        conn_id: e.conn,
                        direction: e.dir,
                        ts_ns: ts,
                        len: e.len,
                        payload,
                    },
                    &mut out,
                );
                for r in out.drain(..) {
                    // As the pipeline does: the event's wall time, no clock read.
                    let wall = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ts);
                    let key = routes.route_at("api", &r.method, &r.target, wall);
                    let gray = routes.gray_tag(&key, &r.headers, &r.target);
                    std::hint::black_box((key, gray, r.duration_ns(), r.status));
                    done += 1;
                }
            }
            assert_eq!(done, REQUESTS);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
