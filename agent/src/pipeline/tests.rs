use super::*;
use crate::kernel::events::encode::*;
use agent_common::{EventKind, SockOwnerEvent, TcpConnectEvent, TcpRetransmitEvent, TcpStateEvent};
use prometheus_client::encoding::text::encode;

fn pipeline() -> (Pipeline, Registry) {
    let mut reg = Registry::default();
    let cfg = Config::default();
    let sm = SelfMetrics::default();
    sm.register(&mut reg);
    (Pipeline::new(&cfg, &mut reg, sm), reg)
}

fn scrape(reg: &Registry) -> String {
    let mut s = String::new();
    encode(&mut s, reg).unwrap();
    s
}

fn connect(sk: u64, comm: &str, dport: u16, outcome: ConnectOutcome, dur: u64) -> Vec<u8> {
    bytes_of(&TcpConnectEvent {
        header: header(EventKind::TcpConnect, 100, 1, comm),
        sk,
        tuple: tuple_v4([127, 0, 0, 1], 40000, [127, 0, 0, 1], dport),
        duration_ns: dur,
        outcome: outcome as u32,
        error: 0,
    })
}

fn retransmit(sk: u64, segs: u32) -> Vec<u8> {
    let mut h = header(EventKind::TcpRetransmit, 0, 5, "swapper/0");
    h.tgid = 0;
    bytes_of(&TcpRetransmitEvent {
        header: h,
        sk,
        tuple: tuple_v4([127, 0, 0, 1], 40000, [127, 0, 0, 1], 5432),
        segs,
        state: 1,
        synack: 0,
        err: 0,
    })
}

#[test]
fn retransmits_are_attributed_to_the_owner_not_the_softirq_task() {
    let (mut p, reg) = pipeline();
    p.handle_record(&connect(
        1,
        "psql",
        5432,
        ConnectOutcome::Established,
        2_000_000,
    ));
    p.handle_record(&retransmit(1, 3));
    p.handle_record(&retransmit(1, 2));
    let out = scrape(&reg);
    assert!(
        out.contains(
            "sloguard_tcp_retransmits_total{service_name=\"psql\",remote_endpoint=\"127.0.0.1:5432\"} 5"
        ),
        "{out}"
    );
    assert!(!out.contains("swapper"), "{out}");
    assert!(
        out.contains("sloguard_events_total{kind=\"tcp_retransmit\"} 2"),
        "{out}"
    );
}

#[test]
fn server_sockets_get_owner_from_sock_owner_and_peer_ip_only() {
    let (mut p, reg) = pipeline();
    let est = TcpStateEvent {
        header: header(EventKind::TcpState, 0, 1, ""),
        sk: 9,
        tuple: tuple_v4([127, 0, 0, 1], 8080, [127, 0, 0, 2], 51000),
        oldstate: tcp_state::SYN_RECV,
        newstate: tcp_state::ESTABLISHED,
    };
    p.handle_record(&bytes_of(&est));
    p.handle_record(&bytes_of(&SockOwnerEvent {
        header: header(EventKind::SockOwner, 55, 2, "nginx"),
        sk: 9,
    }));
    p.handle_record(&retransmit(9, 1));
    let out = scrape(&reg);
    assert!(
        out.contains(
            "sloguard_tcp_retransmits_total{service_name=\"nginx\",remote_endpoint=\"127.0.0.2\"} 1"
        ),
        "{out}"
    );
    // CLOSE removes the socket from the table.
    let mut close = est;
    close.oldstate = tcp_state::ESTABLISHED;
    close.newstate = tcp_state::CLOSE;
    p.handle_record(&bytes_of(&close));
    assert!(p.connections().get(9).is_none());
}

#[test]
fn connect_outcomes_feed_histogram_and_failures() {
    let (mut p, reg) = pipeline();
    p.handle_record(&connect(
        1,
        "curl",
        80,
        ConnectOutcome::Established,
        1_020_000_000,
    ));
    p.handle_record(&connect(2, "curl", 81, ConnectOutcome::Refused, 50_000));
    p.handle_record(&connect(3, "curl", 81, ConnectOutcome::Refused, 50_000));
    p.handle_record(&connect(
        4,
        "curl",
        82,
        ConnectOutcome::TimedOut,
        3_000_000_000,
    ));
    let out = scrape(&reg);
    assert!(out.contains("sloguard_tcp_connect_duration_seconds_bucket{le=\"1.0\",service_name=\"curl\",remote_endpoint=\"127.0.0.1:80\"} 0"), "{out}");
    assert!(out.contains("sloguard_tcp_connect_duration_seconds_bucket{le=\"1.5\",service_name=\"curl\",remote_endpoint=\"127.0.0.1:80\"} 1"), "{out}");
    assert!(out.contains("sloguard_tcp_connect_failures_total{service_name=\"curl\",remote_endpoint=\"127.0.0.1:81\",reason=\"refused\"} 2"), "{out}");
    assert!(out.contains("reason=\"timed_out\"} 1"), "{out}");
    assert!(p.connections().get(2).is_none());
}

#[test]
fn garbage_records_are_counted_not_fatal() {
    let (mut p, reg) = pipeline();
    p.handle_record(&[1, 2, 3]);
    p.handle_record(&[0xff; 200]);
    assert!(scrape(&reg).contains("sloguard_events_lost_total{reason=\"decode_error\"} 2"));
}

#[test]
fn synack_retransmits_are_attributed_by_tuple_not_the_listener() {
    let mut reg = Registry::default();
    let mut cfg = Config::default();
    cfg.services.rules = vec![crate::request::service::ServiceRule {
        name: "api".into(),
        port: Some(8080),
        ..Default::default()
    }];
    let sm = SelfMetrics::default();
    sm.register(&mut reg);
    let mut p = Pipeline::new(&cfg, &mut reg, sm);
    for peer in [[10, 0, 0, 7], [10, 0, 0, 8]] {
        p.handle_record(&bytes_of(&TcpRetransmitEvent {
            header: header(EventKind::TcpRetransmit, 0, 5, ""),
            sk: 77,
            tuple: tuple_v4([10, 0, 0, 1], 8080, peer, 51000),
            segs: 1,
            state: tcp_state::SYN_RECV,
            synack: 1,
            err: 0,
        }));
    }
    let out = scrape(&reg);
    assert!(
        out.contains(
            "sloguard_tcp_retransmits_total{service_name=\"api\",remote_endpoint=\"10.0.0.7\"} 1"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "sloguard_tcp_retransmits_total{service_name=\"api\",remote_endpoint=\"10.0.0.8\"} 1"
        ),
        "{out}"
    );
    assert!(
        p.connections().get(77).is_none(),
        "the listener is not a connection"
    );
}

/// Plaintext read at the TLS library arrives flagged `DATA_FLAG_TLS`: the
/// connection is marked, so its requests say `url.scheme="https"`; plain
/// data on another socket does not.
#[test]
fn tls_plaintext_marks_its_connection_https() {
    let (mut p, _reg) = pipeline();
    let flags_at = std::mem::offset_of!(agent_common::DataEventHead, flags);
    let rec = |sk: u64, ts: u64, dir: u32, bytes: &[u8], tls: bool| {
        let mut r = data(
            header(EventKind::Data, 7, ts, "nginx"),
            sk,
            dir,
            bytes.len() as u32,
            bytes,
        );
        if tls {
            r[flags_at..flags_at + 4].copy_from_slice(&agent_common::DATA_FLAG_TLS.to_ne_bytes());
        }
        r
    };
    for (sk, tls) in [(1u64, true), (2, false)] {
        p.handle_record(&rec(sk, 10, 0, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", tls));
        p.handle_record(&rec(
            sk,
            20,
            1,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            tls,
        ));
    }
    assert!(p.connections().get(1).is_some_and(|c| c.tls));
    assert!(!p.connections().get(2).is_some_and(|c| c.tls));
    let mut req = crate::request::HttpRequest::synthetic(
        crate::request::Side::Server,
        "GET",
        "/x",
        200,
        0,
        1,
    );
    assert_eq!(requests::url_scheme(&req), "http");
    req.tls = true;
    assert_eq!(requests::url_scheme(&req), "https");
}
