//! Issue 3 hot path: decode + connection table + TCP statistics, in events
//! per second on one core. The stream mixes what a busy node sends: socket
//! owners, connects (some refused), retransmits on live connections, closes.
use agent_common::tcp_state;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use sloguard::config::Config;
use sloguard::export::metrics::SelfMetrics;
use sloguard::kernel::events::encode::*;
use sloguard::pipeline::Pipeline;

use agent_common::{
    ConnectOutcome, EventKind, SockOwnerEvent, TcpConnectEvent, TcpRetransmitEvent, TcpStateEvent,
};

fn stream(n_conns: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n_conns {
        let sk = 0xffff_8880_0000_0000 + i * 0x100;
        let tuple = tuple_v4(
            [10, 0, 0, 1],
            40000 + (i % 20000) as u16,
            [10, 0, (i % 50) as u8, 7],
            5432,
        );
        let outcome = if i % 10 == 0 {
            ConnectOutcome::Refused
        } else {
            ConnectOutcome::Established
        };
        out.push(bytes_of(&TcpConnectEvent {
            header: header(EventKind::TcpConnect, 1000 + (i % 8) as u32, i, "svc"),
            sk,
            tuple,
            duration_ns: 150_000,
            outcome: outcome as u32,
            error: 0,
        }));
        out.push(bytes_of(&SockOwnerEvent {
            header: header(EventKind::SockOwner, 1000 + (i % 8) as u32, i, "svc"),
            sk,
        }));
        for _ in 0..6 {
            out.push(bytes_of(&TcpRetransmitEvent {
                header: header(EventKind::TcpRetransmit, 0, i, ""),
                sk,
                tuple,
                segs: 2,
                state: 1,
                synack: 0,
                err: 0,
            }));
        }
        out.push(bytes_of(&TcpStateEvent {
            header: header(EventKind::TcpState, 0, i, ""),
            sk,
            tuple,
            oldstate: 1,
            newstate: tcp_state::CLOSE,
        }));
    }
    out
}

fn bench(c: &mut Criterion) {
    let events = stream(2000);
    let mut reg = Registry::default();
    let sm = SelfMetrics::default();
    sm.register(&mut reg);
    let mut p = Pipeline::new(&Config::default(), &mut reg, sm);
    let mut g = c.benchmark_group("tcp_pipeline");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("decode_conn_table_tcp_stats", |b| {
        b.iter(|| {
            for e in &events {
                p.handle_record(e);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
