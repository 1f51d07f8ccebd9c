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
mod tests;
