//! One pass over each kernel event: decode, update the connection table,
//! then the component that cares (TCP stats, HTTP, ...). Synchronous and
//! single-threaded by design: it runs on its own thread, fed by the reader.
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::conn::{ConnTable, Owner, Role};
use crate::events::{self, ALL_KINDS, Event, kind_label};
use crate::metrics::{KindLabels, ReasonLabels, SelfMetrics, lost};
use crate::service::ServiceResolver;
use crate::tcp_stats::{FailureReason, TcpStats};
use agent_common::{ConnectOutcome, EventHeader, SockTuple};

/// Linux TCP states as the tracepoints report them.
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const CLOSE: u32 = 7;
}

/// Connections tracked at most.
const CONN_TABLE_CAP: usize = 262_144;

pub struct Pipeline {
    conns: ConnTable,
    services: ServiceResolver,
    tcp: TcpStats,
    self_metrics: SelfMetrics,
    /// `sloguard_events_total{kind}` handles by kind index, fetched once.
    kind_counters: Vec<Counter>,
    decode_errors: Counter,
    unknown: Arc<str>,
    evicted_reported: u64,
}

impl Pipeline {
    pub fn new(cfg: &Config, registry: &mut Registry, self_metrics: SelfMetrics) -> Self {
        let kind_counters = ALL_KINDS
            .iter()
            .map(|k| {
                self_metrics
                    .events
                    .get_or_create(&KindLabels {
                        kind: kind_label(*k),
                    })
                    .clone()
            })
            .collect();
        let decode_errors = self_metrics
            .lost
            .get_or_create(&ReasonLabels {
                reason: lost::DECODE_ERROR,
            })
            .clone();
        Self {
            conns: ConnTable::new(CONN_TABLE_CAP),
            services: ServiceResolver::new(&cfg.services),
            tcp: TcpStats::new(&cfg.tcp, registry),
            self_metrics,
            kind_counters,
            decode_errors,
            unknown: "unknown".into(),
            evicted_reported: 0,
        }
    }

    /// Handle one raw ring-buffer record.
    pub fn handle_record(&mut self, bytes: &[u8]) {
        match events::decode(bytes) {
            Ok(ev) => {
                self.kind_counters[ev.kind() as usize - 1].inc();
                self.on_event(ev);
            }
            Err(_) => {
                self.decode_errors.inc();
            }
        }
    }

    /// Periodic housekeeping (called about once a second).
    pub fn tick(&mut self) {
        self.self_metrics.connections.set(self.conns.len() as i64);
        let ev = self.conns.evicted();
        self.self_metrics
            .connections_evicted
            .inc_by(ev - self.evicted_reported);
        self.evicted_reported = ev;
    }

    pub fn connections(&self) -> &ConnTable {
        &self.conns
    }

    fn on_event(&mut self, ev: Event<'_>) {
        match ev {
            Event::TcpConnect(e) => {
                let now = e.header.ts_ns;
                {
                    let c = self.conns.entry(e.sk, now);
                    set_tuple(c, &e.tuple);
                    c.role = Some(Role::Client);
                    if let Some(o) = owner_of(&e.header) {
                        c.owner = Some(o);
                        c.service = None;
                        c.retrans_counter = None;
                    }
                }
                let service = self.service_of(e.sk);
                let endpoint = remote_label(self.conns.get(e.sk));
                match ConnectOutcome::from_u32(e.outcome) {
                    ConnectOutcome::Established => {
                        self.tcp
                            .observe_connect(&service, &endpoint, e.duration_ns as f64 / 1e9);
                        self.conns.entry(e.sk, now).connect_ns = Some(e.duration_ns);
                    }
                    outcome => {
                        let reason = match outcome {
                            ConnectOutcome::Refused => FailureReason::refused,
                            ConnectOutcome::TimedOut => FailureReason::timed_out,
                            _ => FailureReason::other,
                        };
                        self.tcp.add_connect_failure(&service, &endpoint, reason);
                        self.conns.remove(e.sk);
                    }
                }
            }
            Event::TcpState(e) => {
                if e.newstate == tcp_state::CLOSE {
                    self.conns.remove(e.sk);
                } else if e.newstate == tcp_state::ESTABLISHED {
                    let c = self.conns.entry(e.sk, e.header.ts_ns);
                    set_tuple(c, &e.tuple);
                    if e.oldstate == tcp_state::SYN_RECV {
                        c.role = Some(Role::Server);
                    }
                }
            }
            Event::SockOwner(e) => {
                let c = self.conns.entry(e.sk, e.header.ts_ns);
                if let Some(o) = owner_of(&e.header) {
                    if c.owner.as_ref().is_none_or(|old| old.tgid != o.tgid) {
                        c.owner = Some(o);
                        c.service = None;
                        c.retrans_counter = None;
                    }
                }
            }
            Event::TcpRetransmit(e) => {
                let segs = u64::from(e.segs.max(1));
                {
                    let c = self.conns.entry(e.sk, e.header.ts_ns);
                    if c.local.is_none() {
                        set_tuple(c, &e.tuple);
                    }
                    c.retrans_segs += segs;
                    if let Some(ctr) = &c.retrans_counter {
                        ctr.inc_by(segs);
                        return;
                    }
                }
                let service = self.service_of(e.sk);
                let endpoint = remote_label(self.conns.get(e.sk));
                let ctr = self.tcp.retransmit_counter(&service, &endpoint);
                ctr.inc_by(segs);
                // Cache only once the owner is known: "unknown" may still resolve.
                if let Some(c) = self.conns.entry_if_present(e.sk) {
                    if c.owner.is_some() {
                        c.retrans_counter = Some(ctr);
                    }
                }
            }
            Event::Data(_) => {}
        }
    }

    /// `service_name` of a connection's owner, resolved once per connection.
    fn service_of(&mut self, sk: u64) -> Arc<str> {
        let Some(c) = self.conns.get(sk) else {
            return self.unknown.clone();
        };
        if let Some(s) = &c.service {
            return s.clone();
        }
        let Some(owner) = c.owner.clone() else {
            return self.unknown.clone();
        };
        let port = c.local.map(|l| l.port());
        let name: Arc<str> = self.services.resolve(owner.tgid, &owner.comm, port).into();
        if let Some(c) = self.conns.entry_if_present(sk) {
            c.service = Some(name.clone());
        }
        name
    }
}

fn set_tuple(c: &mut crate::conn::ConnInfo, t: &SockTuple) {
    let (l, r) = events::tuple_addrs(t);
    c.local = Some(l);
    c.remote = Some(r);
}

fn owner_of(h: &EventHeader) -> Option<Owner> {
    (h.tgid != 0).then(|| Owner {
        tgid: h.tgid,
        comm: events::comm_str(&h.comm).into(),
        cgroup_id: h.cgroup_id,
    })
}

/// `remote_endpoint` label: `ip:port` of what a client connects to; only
/// the peer's ip for server sockets (its port is ephemeral: unbounded).
fn remote_label(c: Option<&crate::conn::ConnInfo>) -> String {
    let Some(c) = c else { return "unknown".into() };
    match (c.role_or_guess(), c.remote) {
        (Role::Client, Some(r)) => r.to_string(),
        (Role::Server, Some(r)) => r.ip().to_string(),
        (_, None) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::encode::*;
    use agent_common::{
        EventKind, SockOwnerEvent, TcpConnectEvent, TcpRetransmitEvent, TcpStateEvent,
    };
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
            _pad: 0,
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
            out.contains("sloguard_tcp_retransmits_total{service_name=\"nginx\",remote_endpoint=\"127.0.0.2\"} 1"),
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
}
