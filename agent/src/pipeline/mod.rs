//! One pass over each kernel event: decode, update the connection table,
//! then the component that cares (TCP stats, HTTP, ...). Synchronous and
//! single-threaded by design: it runs on its own thread, fed by the reader.
use crate::protocol::ProtocolTracker;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

mod requests;

pub use requests::{ConnFacts, EventLabels, HttpSelfMetrics, RequestStage};

use crate::clock::{Clock, MonoToWall, SystemClock};
use crate::config::Config;
use crate::conn::table::{ConnTable, Owner, Role};
use crate::conn::tcp_stats::{FailureReason, TcpStats};
use crate::export::metrics::{KindLabels, ReasonLabels, SelfMetrics, lost};
use crate::kernel::events::{self, ALL_KINDS, Event, kind_label};
use crate::protocol::http1::{DataChunk, Direction, Http1Tracker};
use crate::protocol::http2::Http2Tracker;
use crate::request::service::{ServiceIdentity, ServiceResolver};
use crate::request::{Endpoint, HttpRequest, TaskIdentity};
use crate::respond::alert::delivery::DispatcherHandle;
use crate::respond::fuse::SharedFuse;
use agent_common::{ConnectOutcome, EventHeader, SockTuple, tcp_state};

/// Connections tracked at most.
const CONN_TABLE_CAP: usize = 262_144;

/// Where the pipeline's outputs go besides metrics: spans, alerts, fuses.
#[derive(Default)]
pub struct Outputs {
    pub spans: Option<crate::export::otlp::SpanSink>,
    pub span_counters: crate::export::otlp::SpanCounters,
    pub alerts: Option<DispatcherHandle>,
    pub fuse: Option<SharedFuse>,
    pub clock: Option<Arc<dyn Clock>>,
    /// This node's pods (service names from Kubernetes identity).
    pub k8s: Option<crate::request::k8s::pods::PodCache>,
}

pub struct Pipeline {
    conns: ConnTable,
    http: Http1Tracker,
    /// Connections that began with the HTTP/2 client preface.
    http2: Http2Tracker,
    stage: RequestStage,
    http_metrics: HttpSelfMetrics,
    alerts: Option<DispatcherHandle>,
    fuse: Option<SharedFuse>,
    mono: MonoToWall,
    done: Vec<HttpRequest>,
    services: ServiceResolver,
    tcp: TcpStats,
    self_metrics: SelfMetrics,
    /// `sloguard_events_total{kind}` handles by kind index, fetched once.
    kind_counters: Vec<Counter>,
    decode_errors: Counter,
    unknown: ServiceIdentity,
    evicted_reported: u64,
    /// This node's pods: series of deleted pods are removed.
    k8s: Option<crate::request::k8s::pods::PodCache>,
    /// Pod cache generation the last sweep of gone pods saw.
    pods_swept: u64,
}

impl Pipeline {
    /// `sloguard_http_events_total` by event: the runtime adds the
    /// connections the probes classified as not HTTP (they never reach here).
    pub fn http_events(&self) -> Family<EventLabels, Counter> {
        self.http_metrics.http.clone()
    }

    /// A pipeline with no span, alert or fuse outputs (tests, benches).
    pub fn new(cfg: &Config, registry: &mut Registry, self_metrics: SelfMetrics) -> Self {
        Self::with_outputs(cfg, registry, self_metrics, Outputs::default())
    }

    pub fn with_outputs(
        cfg: &Config,
        registry: &mut Registry,
        self_metrics: SelfMetrics,
        out: Outputs,
    ) -> Self {
        let clock: Arc<dyn Clock> = out.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let red = crate::measure::red::RedMetrics::default();
        red.register(registry);
        let rpc = crate::measure::rpc::RpcMetrics::default();
        rpc.register(registry);
        let slo = crate::measure::slo::SloEngine::new(cfg.slo.clone(), clock);
        slo.register_metrics(registry);
        let http_metrics = HttpSelfMetrics::default();
        http_metrics.register(registry);
        let reqlog = crate::export::reqlog::RequestLogger::new(cfg.request_logs.clone());
        reqlog.register(registry);
        let stage = RequestStage {
            routes: crate::request::route::RouteTable::new(&cfg.routes),
            red,
            rpc,
            spans: out.spans,
            otlp: cfg.otlp.clone(),
            not_sampled: out.span_counters.counter("not_sampled"),
            reqlog,
            ids: requests::id_generator(),
            slo,
            invalid: Default::default(),
            snapshots: crate::respond::snapshot::SnapshotStore::new(cfg.snapshots.clone()),
        };
        stage.snapshots.counters.register(registry);
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
            http: Http1Tracker::new(&cfg.http),
            http2: Http2Tracker::new(&cfg.http),
            stage,
            http_metrics,
            alerts: out.alerts,
            fuse: out.fuse,
            mono: MonoToWall::measure(),
            done: Vec::new(),
            services: ServiceResolver::new(&cfg.services).with_k8s(out.k8s.clone()),
            tcp: TcpStats::new(&cfg.tcp, registry),
            self_metrics,
            kind_counters,
            decode_errors,
            unknown: ServiceIdentity::named("unknown"),
            evicted_reported: 0,
            k8s: out.k8s,
            pods_swept: 0,
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

    /// `sloguard_route_overflow_requests_total`, for the status endpoint.
    pub fn route_overflow(&self) -> Counter {
        self.http_metrics.route_overflow.clone()
    }

    /// The SLO figures the admin API shows.
    pub fn slo_metrics(&self) -> crate::measure::slo::SloMetrics {
        self.stage.slo.metrics()
    }

    /// The frozen request snapshot sets, for the admin API.
    pub fn snapshots(&self) -> crate::respond::snapshot::SharedFrozen {
        self.stage.snapshots.frozen()
    }

    /// The live snapshot store (tests, benches).
    pub fn snapshot_store(&self) -> &crate::respond::snapshot::SnapshotStore {
        &self.stage.snapshots
    }

    /// True when an SLO period has ended: ticking now delivers its alerts
    /// without waiting for the next once-a-second housekeeping.
    pub fn slo_period_due(&self) -> bool {
        self.stage.slo.period_due()
    }

    /// Periodic housekeeping (called about once a second): idle HTTP
    /// connections, closed SLO periods (alerts, verdicts), self metrics.
    pub fn tick(&mut self) {
        let mut done = std::mem::take(&mut self.done);
        let now = crate::clock::monotonic_ns();
        self.http.expire(now, &mut done);
        self.http2.expire(now, &mut done);
        self.finish_all(&mut done);
        self.done = done;
        let mut out = self.stage.slo.tick();
        // Freeze before fusing and delivery: both carry the snapshot id.
        self.stage
            .snapshots
            .on_alerts(&mut out.alerts, std::time::SystemTime::now());
        for ev in &out.alerts {
            tracing::warn!(
                alertname = ev.kind.alertname(),
                status = ?ev.status,
                route = %ev.route,
                gray_tag = %ev.gray_tag,
                diagnosis = %ev.diagnosis,
                "alert"
            );
        }
        if let Some(fuse) = &self.fuse {
            let mut f = fuse.lock().unwrap_or_else(|p| p.into_inner());
            for ev in &out.alerts {
                f.on_alert(ev);
            }
            if !out.verdicts.is_empty() {
                f.on_verdicts(&out.verdicts);
            }
        }
        if let Some(a) = &self.alerts {
            for ev in out.alerts {
                a.send(ev);
            }
        }
        self.http_metrics.sync(
            self.http.counters(),
            self.http2.counters(),
            &self.stage.invalid,
            self.stage.routes.counters(),
            self.stage.routes.gray_counters(),
        );
        self.forget_gone_pods();
        self.self_metrics.connections.set(self.conns.len() as i64);
        let ev = self.conns.evicted();
        self.self_metrics
            .connections_evicted
            .inc_by(ev - self.evicted_reported);
        self.evicted_reported = ev;
    }

    /// Remove the RED and TCP series of pods that were deleted. Runs when
    /// the pod cache changed, and when series appeared for a pod since the
    /// last sweep (a late request on a deleted pod's connection would bring
    /// its series back). Returns the series removed.
    pub fn forget_gone_pods(&mut self) -> usize {
        let Some(cache) = &self.k8s else { return 0 };
        let generation = cache.generation();
        let red = &mut self.stage.red;
        if !cache.is_synced()
            || (generation == self.pods_swept
                && !red.pod_series().has_new_pods()
                && !self.tcp.pod_series().has_new_pods())
        {
            return 0;
        }
        self.pods_swept = generation;
        let live = crate::request::k8s::pod_series::LivePods::of(&cache.snapshot());
        red.forget_gone_pods(&live) + self.tcp.forget_gone_pods(&live)
    }

    /// Pods in the RED and the TCP index of pod series (summed): what the
    /// sweep of gone pods holds on to.
    pub fn pod_index_entries(&self) -> usize {
        self.stage.red.pod_series().pods() + self.tcp.pod_series().pods()
    }

    pub fn connections(&self) -> &ConnTable {
        &self.conns
    }

    /// Read process facts (`exe`, `cgroup`) under `root` instead of `/proc`:
    /// tests put a process in a pod this way.
    pub fn set_proc_root(&mut self, root: impl Into<std::path::PathBuf>) {
        self.services.set_proc_root(root);
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
                        let peer = self
                            .conns
                            .get(e.sk)
                            .and_then(|c| c.remote)
                            .map(|a| Endpoint {
                                ip: a.ip(),
                                port: a.port(),
                            });
                        self.stage.slo.record_connect_failure(&service.name, peer);
                        self.conns.remove(e.sk);
                    }
                }
            }
            Event::TcpState(e) => {
                if e.newstate == tcp_state::CLOSE {
                    let mut done = std::mem::take(&mut self.done);
                    self.http.on_close(e.sk, e.header.ts_ns, &mut done);
                    self.http2.on_close(e.sk, e.header.ts_ns, &mut done);
                    self.finish_all(&mut done);
                    self.done = done;
                    self.conns.remove_if_older(e.sk, e.header.ts_ns);
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
                if let Some(o) = owner_of(&e.header)
                    && c.owner.as_ref().is_none_or(|old| old.tgid != o.tgid)
                {
                    c.owner = Some(o);
                    c.service = None;
                    c.retrans_counter = None;
                }
            }
            Event::TcpRetransmit(e) if e.synack != 0 => {
                // `sk` is the listener, which serves many peers: attribute by
                // the tuple (local port rules name the service, the peer ip is
                // the endpoint) and leave the connection table alone.
                let (local, remote) = events::tuple_addrs(&e.tuple);
                let service = ServiceIdentity::named(self.services.match_facts(
                    &crate::request::service::ProcessFacts {
                        comm: "",
                        local_port: Some(local.port()),
                        ..Default::default()
                    },
                ));
                self.tcp.add_retransmits(
                    &service,
                    &remote.ip().to_string(),
                    u64::from(e.segs.max(1)),
                );
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
                if let Some(c) = self.conns.entry_if_present(e.sk)
                    && c.owner.is_some()
                {
                    c.retrans_counter = Some(ctr);
                }
            }
            Event::Data(d) => {
                let mut done = std::mem::take(&mut self.done);
                if d.head.flags & agent_common::DATA_FLAG_CLASSIFIED_HERE != 0 {
                    // A reused socket address starts a new connection.
                    self.http
                        .on_close(d.head.sk, d.head.header.ts_ns, &mut done);
                    self.http2
                        .on_close(d.head.sk, d.head.header.ts_ns, &mut done);
                }
                if d.head.flags & agent_common::DATA_FLAG_TLS != 0 {
                    self.conns.entry(d.head.sk, d.head.header.ts_ns).tls = true;
                }
                let direction = if d.head.direction == Direction::Egress as u32 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let chunk = DataChunk {
                    conn_id: d.head.sk,
                    direction,
                    ts_ns: d.head.header.ts_ns,
                    len: d.head.len,
                    payload: d.payload,
                };
                if d.head.flags & agent_common::DATA_FLAG_SEGMENT != 0 {
                    // More of an HTTP/2 syscall's bytes (frame headers, header
                    // blocks past the first event's prefix).
                    self.http2.on_segment(
                        chunk.conn_id,
                        direction,
                        d.head.offset,
                        d.payload,
                        &mut done,
                    );
                } else if !self.http2.claim(&chunk, &mut done) {
                    self.http.on_data(&chunk, &mut done);
                }
                self.finish_all(&mut done);
                self.done = done;
            }
        }
    }

    fn finish_all(&mut self, done: &mut Vec<HttpRequest>) {
        for req in done.drain(..) {
            let facts = self.conn_facts(req.conn_id());
            if req.incomplete {
                self.http_metrics.requests_incomplete.inc();
            }
            let wall = self.mono.wall(req.start_ns);
            self.stage.finish(req, facts, wall);
        }
    }

    /// Owner, endpoints and TCP evidence of a connection for a request that
    /// just completed on it. Retransmits are those since the previous request
    /// on the connection ended (requests on one connection are sequential).
    fn conn_facts(&mut self, sk: u64) -> ConnFacts {
        // Common case first: one lookup when the service is already resolved.
        if let Some(c) = self.conns.entry_if_present(sk)
            && let Some(service) = c.service.clone()
        {
            return facts_of(c, service);
        }
        let service = self.service_of(sk);
        match self.conns.entry_if_present(sk) {
            Some(c) => facts_of(c, service),
            None => ConnFacts {
                service,
                task: TaskIdentity::default(),
                local: None,
                peer: None,
                retransmits: 0,
                connect_duration_ns: None,
                tls: false,
            },
        }
    }

    /// `service_name` and pod labels of a connection's owner, resolved once
    /// per connection (the resolver keeps them per process).
    fn service_of(&mut self, sk: u64) -> ServiceIdentity {
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
        let id = self.services.resolve(owner.tgid, &owner.comm, port);
        if let Some(c) = self.conns.entry_if_present(sk) {
            c.service = Some(id.clone());
        }
        id
    }
}

/// What a completed request takes from its connection (and marks there).
fn facts_of(c: &mut crate::conn::table::ConnInfo, service: ServiceIdentity) -> ConnFacts {
    let retransmits = (c.retrans_segs - c.retrans_reported).min(u64::from(u32::MAX)) as u32;
    c.retrans_reported = c.retrans_segs;
    let connect_duration_ns = if c.requests == 0 { c.connect_ns } else { None };
    c.requests += 1;
    let ep = |a: Option<std::net::SocketAddr>| {
        a.map(|a| Endpoint {
            ip: a.ip(),
            port: a.port(),
        })
    };
    ConnFacts {
        service,
        task: c
            .owner
            .as_ref()
            .map(|o| TaskIdentity {
                tgid: o.tgid,
                comm: o.comm.clone(),
                cgroup_id: o.cgroup_id,
            })
            .unwrap_or_default(),
        local: ep(c.local),
        peer: ep(c.remote),
        retransmits,
        connect_duration_ns,
        tls: c.tls,
    }
}

fn set_tuple(c: &mut crate::conn::table::ConnInfo, t: &SockTuple) {
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
fn remote_label(c: Option<&crate::conn::table::ConnInfo>) -> String {
    let Some(c) = c else { return "unknown".into() };
    match (c.role_or_guess(), c.remote) {
        (Role::Client, Some(r)) => r.to_string(),
        (Role::Server, Some(r)) => r.ip().to_string(),
        (_, None) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests;
