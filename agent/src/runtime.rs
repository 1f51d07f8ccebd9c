//! Running the agent: probes, the ring-buffer reader thread, the pipeline
//! thread, the metrics endpoint, and a clean shutdown on SIGTERM/SIGINT.
//!
//! Threads, not tasks, for the hot path: the reader only copies records into
//! batches and never blocks on the pipeline (a full channel drops the batch
//! and counts it); the pipeline is CPU-bound synchronous work.
//!
//! If either thread ends while the agent is not stopping (a panic), every
//! event from then on would be dropped while the endpoints kept answering
//! 200. Instead `/healthz` and `/readyz` answer 503 at once and the agent
//! shuts down and exits non-zero, so the kubelet (or systemd) restarts it.
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use agent_common::KernelCounter;
use aya::maps::{MapData, RingBuf};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::export::metrics::{MetricsState, ProgramLabels, ReasonLabels, SelfMetrics, lost};
use crate::kernel::probes::{ProbeError, Probes};
use crate::pipeline::Pipeline;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Otlp(#[from] crate::export::otlp::OtlpError),
    #[error("alerts: {0}")]
    Alerts(#[from] crate::respond::alert::delivery::DeliveryError),
    #[error("fuse: {0}")]
    Fuse(#[from] crate::respond::fuse::FuseError),
    #[error("kubernetes: {0}")]
    K8s(#[from] crate::request::k8s::pods::K8sError),
    #[error(transparent)]
    Admin(#[from] crate::export::admin::AdminError),
    #[error(transparent)]
    Scope(#[from] crate::kernel::scope::ScopeError),
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} (set tls.enabled: false to run without HTTPS plaintext)")]
    Tls(#[from] crate::kernel::tls::TlsStartError),
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("the {0} thread died (see the panic above); exiting so the agent is restarted")]
    ThreadDied(&'static str),
}

/// The agent's health, shared by the endpoints and the hot-path threads.
#[derive(Clone)]
struct Health {
    healthy: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    /// First thread that died; wakes the main loop.
    died: Arc<std::sync::OnceLock<&'static str>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Health {
    fn new() -> Self {
        Self {
            healthy: Arc::new(AtomicBool::new(true)),
            ready: Arc::new(AtomicBool::new(false)),
            died: Arc::default(),
            wake: Arc::default(),
        }
    }

    fn thread_died(&self, thread: &'static str) {
        self.healthy.store(false, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.died.set(thread);
        // Stores a permit when the main loop is not waiting yet.
        self.wake.notify_one();
    }
}

/// Lives on a hot-path thread's stack: dropped when the thread ends, also
/// while unwinding from a panic; unless the agent is stopping, that is a death.
struct ThreadGuard {
    thread: &'static str,
    health: Health,
    stop: Arc<AtomicBool>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        if !self.stop.load(Ordering::SeqCst) {
            tracing::error!(
                thread = self.thread,
                panicked = std::thread::panicking(),
                "hot-path thread ended while the agent runs: marking the agent unhealthy"
            );
            self.health.thread_died(self.thread);
        }
    }
}

/// Records per batch handed from the reader to the pipeline.
const BATCH_RECORDS: usize = 256;
/// Emptied batches kept for reuse. A burst fills the channel with up to
/// `channel_capacity` records (~70 MiB of 1 KiB data events at the default);
/// keeping every batch of it for reuse kept that memory for good.
const RECYCLED_BATCHES: usize = 4;

/// Raw records copied out of the ring buffer, back to back.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl Batch {
    /// Room for a full batch of average records, so filling it does not
    /// regrow (and copy) the buffer a dozen times.
    fn sized() -> Self {
        Self {
            data: Vec::with_capacity(BATCH_RECORDS * 512),
            ends: Vec::with_capacity(BATCH_RECORDS),
        }
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0usize;
        self.ends.iter().map(move |&e| {
            let r = &self.data[start..e as usize];
            start = e as usize;
            r
        })
    }
}

/// Run until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sloguard-rt")
        .build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> Result<(), RunError> {
    crate::request::route::gray::set_header_names(&cfg.routes.gray_headers);
    let mut registry = Registry::default();
    let self_metrics = SelfMetrics::default();
    self_metrics.register(&mut registry);
    let tls_metrics = crate::kernel::tls::TlsMetrics::default();
    tls_metrics.register(&mut registry);
    let scope_metrics = crate::kernel::scope::ScopeMetrics::default();
    scope_metrics.register(&mut registry);
    let node = cfg.node();
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);

    let span_counters = crate::export::otlp::SpanCounters::default();
    span_counters.register(&mut registry);
    let otlp = crate::export::otlp::start(&cfg.otlp, &node, &span_counters)?;
    let (alerts, alerts_task) =
        crate::respond::alert::delivery::Dispatcher::start(&cfg.alerts, node.clone())?;
    alerts.register_metrics(&mut registry);
    let mut fuse_ctl = crate::respond::fuse::FuseController::new(cfg.fuse.clone(), clock.clone())?;
    if let Some(ev) = fuse_ctl.take_reset_alert() {
        alerts.send(ev);
    }
    fuse_ctl.register_metrics(&mut registry);
    let fuse: crate::respond::fuse::SharedFuse = Arc::new(std::sync::Mutex::new(fuse_ctl));
    let fuse_ticker = crate::respond::fuse::spawn_ticker(fuse.clone(), Duration::from_secs(1));
    let k8s = crate::request::k8s::pods::start(&cfg.k8s).await?;
    if let Some(w) = &k8s {
        w.cache.register(&mut registry);
    }
    let (spans, otlp_task) = match otlp {
        Some((sink, task)) => (Some(sink), Some(task)),
        None => (None, None),
    };
    let outputs = crate::pipeline::Outputs {
        spans,
        span_counters,
        alerts: Some(alerts.clone()),
        fuse: Some(fuse.clone()),
        clock: Some(clock.clone()),
        k8s: k8s.as_ref().map(|w| w.cache.clone()),
    };
    let pipeline = Pipeline::with_outputs(&cfg, &mut registry, self_metrics.clone(), outputs);
    let frozen_snapshots = pipeline.snapshots();
    let slo_metrics = pipeline.slo_metrics();
    let non_http_conns = pipeline
        .http_events()
        .get_or_create(&crate::pipeline::EventLabels {
            event: "non_http_connections",
        })
        .clone();

    // Bind before loading probes so a port clash fails fast and cheaply.
    let listener = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .map_err(|source| RunError::MetricsBind {
            addr: cfg.metrics.listen,
            source,
        })?;
    let health = Health::new();
    let ready = health.ready.clone();
    let counters = crate::export::status::AgentCounters {
        self_metrics: self_metrics.clone(),
        route_overflow: pipeline.route_overflow(),
        healthy: health.healthy.clone(),
        ready: ready.clone(),
        started: std::time::Instant::now(),
        rate: Arc::default(),
    };
    let status = crate::export::status::StatusSources {
        node: node.clone(),
        period: cfg.slo.period,
        slo: slo_metrics.clone(),
        fuse: Some(fuse.clone()),
        agent: counters.clone(),
    };
    let state = MetricsState {
        registry: Arc::new(registry),
        ready: ready.clone(),
        healthy: health.healthy.clone(),
        status: Some(status.into_source()),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::export::metrics::serve_on(
        listener,
        state,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(listen = %cfg.metrics.listen, "metrics endpoint up");

    let mut admin_stop = stop_rx.clone();
    let figures: crate::export::admin::RouteFigures =
        Arc::new(move || slo_figures_json(&slo_metrics.snapshot()));
    // Bound here so a short token, a taken port or an unapproved
    // non-loopback address stops the agent at start, naming the key.
    let admin_server = crate::export::admin::AdminServer::bind(&cfg.admin)
        .await?
        .map(|s| s.with_snapshots(frozen_snapshots));
    let admin_fuse = fuse.clone();
    let admin = tokio::spawn(async move {
        let stop = async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        };
        if let Some(server) = admin_server
            && let Err(e) = server.run(admin_fuse, Some(figures), stop).await
        {
            tracing::error!("admin API: {e}");
        }
    });

    if cfg.probes.cost_stage != crate::kernel::probes::CostStage::Full {
        tracing::warn!(
            stage = ?cfg.probes.cost_stage,
            "probes.cost_stage is a measurement setting: no HTTP requests are captured"
        );
    }
    let mut probes = Probes::load(&cfg.probes)?;
    // Parsing the kernel's BTF for the probe offsets allocates tens of MiB
    // that are freed by now; hand them back to the OS instead of keeping
    // them in the allocator's arenas (idle RSS).
    crate::malloc::trim();
    let ring = probes.take_ring_buffer()?;
    self_metrics.probes_attached.set(probes.attached() as i64);
    tracing::info!(programs = probes.attached(), "probes attached");
    // HTTPS: the first look at every process happens before readiness, so
    // TLS traffic after /readyz is seen.
    let mut tls = crate::kernel::tls::TlsManager::start(&cfg.tls, probes.ebpf_mut(), tls_metrics)?;
    if let Some(t) = &mut tls {
        t.poll(probes.ebpf_mut());
        tracing::info!(files = t.attached(), "TLS libraries attached");
    }

    let stop = Arc::new(AtomicBool::new(false));
    // Before readiness: once ready, only the processes in scope are traced.
    let _scope = crate::kernel::scope::start(
        &cfg.scope,
        &mut probes,
        k8s.as_ref().map(|w| w.cache.clone()),
        scope_metrics,
        stop.clone(),
    )?;
    let cap = (cfg.probes.channel_capacity / BATCH_RECORDS).max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(cap);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel::<Batch>(RECYCLED_BATCHES);
    let channel_lost = self_metrics
        .lost
        .get_or_create(&ReasonLabels {
            reason: lost::CHANNEL_FULL,
        })
        .clone();
    let guard = |thread| ThreadGuard {
        thread,
        health: health.clone(),
        stop: stop.clone(),
    };
    let reader = {
        let stop = stop.clone();
        let guard = guard("reader");
        std::thread::Builder::new()
            .name("sloguard-reader".into())
            .spawn(move || {
                let _guard = guard;
                read_loop(ring, tx, recycle_rx, channel_lost, stop)
            })?
    };
    let worker = {
        let guard = guard("pipeline");
        std::thread::Builder::new()
            .name("sloguard-pipeline".into())
            .spawn(move || {
                let _guard = guard;
                pipeline_loop(pipeline, rx, recycle_tx)
            })?
    };
    if health.healthy.load(Ordering::SeqCst) {
        ready.store(true, Ordering::Relaxed);
    }

    // Kernel-side counts are read from the probes' counter map each second.
    let mut kernel = KernelCounterMirror::new(&self_metrics, cfg.probes.run_time_stats);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut tls_ticker = tokio::time::interval(crate::kernel::tls::POLL_INTERVAL);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                kernel.sync(&probes, &non_http_conns);
                counters.sample_rate();
            }
            _ = tls_ticker.tick(), if tls.is_some() => {
                if let Some(t) = &mut tls {
                    t.poll(probes.ebpf_mut());
                }
            }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = health.wake.notified() => {
                let thread = health.died.get().copied().unwrap_or("hot-path");
                outcome = Err(RunError::ThreadDied(thread));
                break;
            }
        }
    }

    ready.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    // Detach every program before anything else: no probe outlives the agent.
    drop(probes);
    let _ = reader.join();
    // The pipeline owns the span sink and an alert handle: joining it closes them.
    let _ = worker.join();
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = admin.await;
    fuse_ticker.abort();
    drop(alerts);
    let _ = tokio::time::timeout(Duration::from_secs(5), alerts_task).await;
    if let Some(t) = otlp_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop(k8s);
    tracing::info!("stopped");
    outcome
}

/// Mirrors the probes' cumulative counters into Prometheus counters.
struct KernelCounterMirror {
    ringbuf_lost: Counter,
    recursion_lost: Counter,
    events: Vec<Counter>,
    last: [u64; agent_common::KERNEL_COUNTERS as usize],
    last_recursion: u64,
    /// With `probes.run_time_stats`: per program, the counters and the last
    /// cumulative (run time, runs) the kernel reported.
    runs: Option<RunMirror>,
}

struct RunMirror {
    seconds: Family<ProgramLabels, Counter<f64>>,
    runs: Family<ProgramLabels, Counter>,
    last: std::collections::HashMap<String, (Duration, u64)>,
}

impl KernelCounterMirror {
    fn new(m: &SelfMetrics, run_time_stats: bool) -> Self {
        let lost = |r| m.lost.get_or_create(&ReasonLabels { reason: r }).clone();
        Self {
            ringbuf_lost: lost(lost::RINGBUF_FULL),
            recursion_lost: lost(lost::RECURSION_MISS),
            events: crate::export::metrics::PROBE_EVENT_NAMES
                .iter()
                .map(|e| {
                    m.probe_events
                        .get_or_create(&crate::export::metrics::ProbeEventLabels { event: e })
                        .clone()
                })
                .collect(),
            last: [0; agent_common::KERNEL_COUNTERS as usize],
            last_recursion: 0,
            runs: run_time_stats.then(|| RunMirror {
                seconds: m.probe_run_seconds.clone(),
                runs: m.probe_runs.clone(),
                last: std::collections::HashMap::new(),
            }),
        }
    }

    /// `non_http_conns`: the HTTP tracker's `non_http_connections` series;
    /// connections the probe judged not HTTP never reach userspace.
    fn sync(&mut self, probes: &Probes, non_http_conns: &Counter) {
        if let Ok(now) = probes.kernel_counters() {
            for (i, v) in now.iter().enumerate() {
                let d = v.saturating_sub(self.last[i]);
                if i == KernelCounter::RingbufFull as usize {
                    self.ringbuf_lost.inc_by(d);
                } else if i == KernelCounter::NonHttpConnections as usize {
                    non_http_conns.inc_by(d);
                } else {
                    self.events[i].inc_by(d);
                }
                self.last[i] = *v;
            }
        }
        let r = probes.recursion_misses();
        self.recursion_lost
            .inc_by(r.saturating_sub(self.last_recursion));
        self.last_recursion = r;
        if let Some(m) = &mut self.runs {
            for p in probes.program_runs() {
                let labels = ProgramLabels {
                    program: p.program.clone(),
                };
                let (t0, n0) = m.last.get(&p.program).copied().unwrap_or_default();
                m.seconds
                    .get_or_create(&labels)
                    .inc_by(p.run_time.saturating_sub(t0).as_secs_f64());
                m.runs
                    .get_or_create(&labels)
                    .inc_by(p.runs.saturating_sub(n0));
                m.last.insert(p.program, (p.run_time, p.runs));
            }
        }
    }
}

/// The SLO figures per route for the admin API.
fn slo_figures_json(s: &crate::measure::slo::metrics::MetricsSnapshot) -> serde_json::Value {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    serde_json::Value::Array(
        s.rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "service": &*r.route.service,
                    "method": &*r.route.method,
                    "route": &*r.route.route,
                    "gray_tag": &*r.gray_tag,
                    "requests": r.requests,
                    "p99_seconds": secs(r.p99),
                    "error_ratio": r.error_ratio,
                    "baseline_p99_seconds": secs(r.baseline_p99),
                    "alerting": r.alerting.iter().filter(|(_, on)| *on).map(|(k, _)| k.alertname()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn read_loop(
    mut ring: RingBuf<MapData>,
    tx: SyncSender<Batch>,
    recycle: Receiver<Batch>,
    lost_counter: Counter,
    stop: Arc<AtomicBool>,
) {
    let fd = ring.as_raw_fd();
    let mut batch = Batch::sized();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Below the probes' wakeup threshold nothing wakes us: the timeout
        // bounds how long events wait, and lets us notice `stop`.
        // SAFETY: one valid pollfd.
        unsafe {
            libc::poll(
                &mut pfd,
                1,
                crate::kernel::probes::RING_BUFFER_POLL_MS as i32,
            )
        };
        while let Some(item) = ring.next() {
            batch.data.extend_from_slice(&item);
            batch.ends.push(batch.data.len() as u32);
            drop(item);
            if batch.ends.len() >= BATCH_RECORDS {
                batch = send_batch(&tx, &recycle, batch, &lost_counter);
            }
        }
        if !batch.ends.is_empty() {
            batch = send_batch(&tx, &recycle, batch, &lost_counter);
        }
    }
}

/// Hand a batch to the pipeline without blocking; returns an empty batch
/// to fill next (recycled when possible).
fn send_batch(
    tx: &SyncSender<Batch>,
    recycle: &Receiver<Batch>,
    batch: Batch,
    lost_counter: &Counter,
) -> Batch {
    match tx.try_send(batch) {
        Ok(()) => recycle.try_recv().unwrap_or_else(|_| Batch::sized()),
        Err(TrySendError::Full(mut b)) | Err(TrySendError::Disconnected(mut b)) => {
            lost_counter.inc_by(b.ends.len() as u64);
            b.clear();
            b
        }
    }
}

fn pipeline_loop(mut pipeline: Pipeline, rx: Receiver<Batch>, recycle: SyncSender<Batch>) {
    let mut last_tick = std::time::Instant::now();
    loop {
        if crate::fault::triggered(crate::fault::PIPELINE_PANIC_ENV) {
            panic!(
                "fault injection: {} triggered",
                crate::fault::PIPELINE_PANIC_ENV
            );
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(mut batch) => {
                for r in batch.records() {
                    pipeline.handle_record(r);
                }
                batch.clear();
                // Full: dropped, its memory goes back (see RECYCLED_BATCHES).
                let _ = recycle.try_send(batch);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Also tick as soon as an SLO period ends: a 1 s housekeeping beat out
        // of phase with the period would delay alerts by up to a second.
        let period_due = pipeline.slo_period_due();
        if last_tick.elapsed() >= Duration::from_secs(1) || period_due {
            pipeline.tick();
            last_tick = std::time::Instant::now();
            if period_due {
                // Once per period: bursts (a full event channel, the SLO
                // snapshot swap) leave free holes in the heap that glibc
                // keeps resident unless asked.
                crate::malloc::trim();
            }
        }
    }
    pipeline.tick();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_records_round_trip() {
        let mut b = Batch::default();
        for r in [&b"abc"[..], b"", b"defgh"] {
            b.data.extend_from_slice(r);
            b.ends.push(b.data.len() as u32);
        }
        let got: Vec<&[u8]> = b.records().collect();
        assert_eq!(got, vec![&b"abc"[..], b"", b"defgh"]);
    }
}
