//! The whole userspace path per request: raw ring-buffer records (as the
//! kernel sends them) of keep-alive server traffic through
//! `Pipeline::handle_record`: decode → connection table → HTTP reassembly and
//! pairing → route → RED histograms → SLO engine.
use agent_common::{Direction, EventKind, SockOwnerEvent, TcpStateEvent, tcp_state};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use sloguard::config::Config;
use sloguard::export::metrics::SelfMetrics;
use sloguard::kernel::events::encode::{bytes_of, data, header, tuple_v4};
use sloguard::pipeline::Pipeline;

const CONNS: u64 = 100;
const REQUESTS: usize = 10_000;
const TGID: u32 = 4242;

fn sk(conn: u64) -> u64 {
    0xffff_8880_0000_0000 + conn * 0x800
}

/// Connection set-up records (established + owner), then the traffic.
fn records() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut setup = Vec::new();
    for c in 0..CONNS {
        setup.push(bytes_of(&TcpStateEvent {
            header: header(EventKind::TcpState, 0, 1, ""),
            sk: sk(c),
            tuple: tuple_v4([127, 0, 0, 1], 8080, [127, 0, 0, 2], 40_000 + c as u16),
            oldstate: tcp_state::SYN_RECV,
            newstate: tcp_state::ESTABLISHED,
        }));
        setup.push(bytes_of(&SockOwnerEvent {
            header: header(EventKind::SockOwner, TGID, 2, "nginx"),
            sk: sk(c),
        }));
    }
    let paths = sloguard::kernel::events::encode::BENCH_PATHS;
    let mut traffic = Vec::with_capacity(REQUESTS * 2);
    let mut ts = 10u64;
    for i in 0..REQUESTS {
        let conn = sk(i as u64 % CONNS);
        let path = paths[i % paths.len()].replace("{}", &(i * 7919 % 100_000).to_string());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: api.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\
             traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692{:05}-01\r\n\r\n",
            i % 100_000
        );
        ts += 1_000;
        let h = header(EventKind::Data, TGID, ts, "nginx");
        traffic.push(data(
            h,
            conn,
            Direction::Ingress as u32,
            req.len() as u32,
            req.as_bytes(),
        ));
        let status = if i % 50 == 0 {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nServer: nginx\r\nContent-Type: application/json\r\n\
             Content-Length: 27\r\n\r\n{{\"ok\":true,\"id\":1234567890}}"
        );
        ts += 250_000;
        let h = header(EventKind::Data, TGID, ts, "nginx");
        traffic.push(data(
            h,
            conn,
            Direction::Egress as u32,
            resp.len() as u32,
            resp.as_bytes(),
        ));
    }
    (setup, traffic)
}

fn server_requests_counted(reg: &Registry) -> f64 {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s.lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn bench(c: &mut Criterion) {
    let (setup, traffic) = records();
    let mut reg = Registry::default();
    let sm = SelfMetrics::default();
    sm.register(&mut reg);
    let mut p = Pipeline::new(&Config::default(), &mut reg, sm);
    for r in &setup {
        p.handle_record(r);
    }
    // One checked pass: every request reaches the RED histogram.
    for r in &traffic {
        p.handle_record(r);
    }
    assert_eq!(server_requests_counted(&reg), REQUESTS as f64);
    let mut group = c.benchmark_group("request_pipeline");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.bench_function("server_keep_alive", |b| {
        b.iter(|| {
            for r in &traffic {
                p.handle_record(std::hint::black_box(r));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
