//! The Prometheus endpoint: `/metrics` (OpenMetrics with exemplars when the
//! scraper asks for it, Prometheus text 0.0.4 otherwise), `/healthz`,
//! `/readyz`, and the agent's own metrics.
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

pub mod label;
pub mod scrape;

pub use label::Escaped;
use scrape::{Format, ScrapeError, Scrapes};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Why an event was lost (label `reason` of `sloguard_events_lost_total`).
pub mod lost {
    /// The kernel could not reserve ring-buffer space (consumer too slow).
    pub const RINGBUF_FULL: &str = "ringbuf_full";
    /// The reader's channel to the pipeline was full.
    pub const CHANNEL_FULL: &str = "channel_full";
    /// A record that did not decode.
    pub const DECODE_ERROR: &str = "decode_error";
    /// The kernel skipped a probe run (another BPF program was running on
    /// that CPU): the event never existed.
    pub const RECURSION_MISS: &str = "recursion_miss";
}

/// `sloguard_probe_events_total{event}`: what the probes counted instead of
/// sending (by `agent_common::KernelCounter` index, 0 = ring buffer full is
/// reported as lost instead).
pub const PROBE_EVENT_NAMES: [&str; agent_common::KERNEL_COUNTERS as usize] = [
    "ringbuf_full",
    "retransmit_not_sent",
    "read_failed",
    "connect_unmatched",
    "connect_map_full",
    "non_http_syscalls",
    "non_http_bytes",
    "data_unclassified",
    "non_http_connections",
    "tls_connections",
    "tls_syscalls",
    "tls_bytes",
    "tls_not_http_connections",
    "tls_unattributed",
    "out_of_scope",
    "http2_connections",
    "http2_walk_lost",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeEventLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

/// The agent's own health metrics.
#[derive(Clone, Default)]
pub struct SelfMetrics {
    pub events: Family<KindLabels, Counter>,
    pub lost: Family<ReasonLabels, Counter>,
    pub connections: Gauge,
    pub connections_evicted: Counter,
    pub probes_attached: Gauge,
    pub probe_events: Family<ProbeEventLabels, Counter>,
    /// Only filled with `probes.run_time_stats` on.
    pub probe_run_seconds: Family<ProgramLabels, Counter<f64>>,
    pub probe_runs: Family<ProgramLabels, Counter>,
}

impl SelfMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sloguard_events",
            "Kernel events received, by kind",
            self.events.clone(),
        );
        registry.register(
            "sloguard_events_lost",
            "Kernel events lost before processing, by reason",
            self.lost.clone(),
        );
        registry.register(
            "sloguard_connections",
            "TCP connections in the agent's connection table",
            self.connections.clone(),
        );
        registry.register(
            "sloguard_connections_evicted",
            "Connection-table entries evicted because the table was full",
            self.connections_evicted.clone(),
        );
        registry.register(
            "sloguard_probes_attached",
            "eBPF programs attached to tracepoints",
            self.probes_attached.clone(),
        );
        registry.register(
            "sloguard_probe_events",
            "What the kernel probes counted instead of sending (non-HTTP I/O, failed reads, unmatched connects, retransmits not sent)",
            self.probe_events.clone(),
        );
        registry.register_with_unit(
            "sloguard_probe_run",
            "Time the kernel spent running each eBPF program (probes.run_time_stats)",
            Unit::Seconds,
            self.probe_run_seconds.clone(),
        );
        registry.register(
            "sloguard_probe_runs",
            "Runs of each eBPF program (probes.run_time_stats)",
            self.probe_runs.clone(),
        );
        // Pre-create the lost series so a scrape shows zeros, not absence.
        for r in [
            lost::RINGBUF_FULL,
            lost::CHANNEL_FULL,
            lost::DECODE_ERROR,
            lost::RECURSION_MISS,
        ] {
            let _ = self.lost.get_or_create(&ReasonLabels { reason: r });
        }
        for k in crate::kernel::events::ALL_KINDS {
            let _ = self.events.get_or_create(&KindLabels {
                kind: crate::kernel::events::kind_label(k),
            });
        }
        registry.register(
            "sloguard_build",
            "sloguard build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(ProcessCollector));
    }
}

/// `process_*` metrics of this process, read from /proc at scrape time.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = read_proc_self() else {
            return Ok(());
        };
        let c = ConstCounter::new(p.cpu_seconds);
        c.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent",
            Some(&Unit::Seconds),
            c.metric_type(),
        )?)?;
        let g = ConstGauge::new(p.rss_bytes as i64);
        g.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(p.start_time_secs);
        g.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

pub struct ProcSelf {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub start_time_secs: f64,
}

/// CPU time, RSS and start time of this process.
pub fn read_proc_self() -> Option<ProcSelf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)` that may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let start_ticks: f64 = f.get(19)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })?;
    Some(ProcSelf {
        cpu_seconds: (utime + stime) / tick,
        rss_bytes: rss_pages * page,
        start_time_secs: btime + start_ticks / tick,
    })
}

/// Shared state of the HTTP endpoint.
#[derive(Clone)]
pub struct MetricsState {
    pub registry: Arc<Registry>,
    pub ready: Arc<AtomicBool>,
    /// False once a hot-path thread has died: `/healthz` answers 503.
    pub healthy: Arc<AtomicBool>,
    /// `GET /api/v1/status` (404 when absent).
    pub status: Option<crate::export::status::StatusSource>,
}

/// Serve `/metrics`, `/healthz`, `/readyz` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    state: MetricsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_on(listener, state, shutdown).await
}

pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: MetricsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = Served {
        scrapes: Scrapes::new(state.registry),
        ready: state.ready,
        healthy: state.healthy,
        status: state.status,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .route("/readyz", get(ready_handler))
        .route(crate::export::status::STATUS_PATH, get(status_handler))
        .with_state(served);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    scrapes: Scrapes,
    ready: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    status: Option<crate::export::status::StatusSource>,
}

/// The status document. Built on the blocking pool: it takes the fuse lock,
/// which may be held across a state-file fsync, and a scrape must not wait
/// behind it on an async worker.
async fn status_handler(State(s): State<Served>) -> Response {
    let Some(source) = s.status else {
        return (StatusCode::NOT_FOUND, "no status on this endpoint\n").into_response();
    };
    match tokio::task::spawn_blocking(move || source()).await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("status: {e}\n")).into_response(),
    }
}

async fn health_handler(State(s): State<Served>) -> Response {
    if s.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "event pipeline died\n").into_response()
    }
}

async fn ready_handler(State(s): State<Served>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "probes not attached yet\n").into_response()
    }
}

async fn metrics_handler(State(s): State<Served>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match s.scrapes.scrape(format).await {
        Ok(turn) => (
            [(header::CONTENT_TYPE, format.content_type())],
            axum::body::Body::from_stream(turn.into_stream()),
        )
            .into_response(),
        Err(e @ ScrapeError::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("{e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Rewrite OpenMetrics text as Prometheus text format 0.0.4 (see
/// [`scrape::TextWriter`]).
pub fn openmetrics_to_prometheus(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut w = scrape::TextWriter::new(&mut out);
    let _ = w.write_str(om);
    let _ = w.finish();
    out
}

/// `promtool check metrics` on what a registry exposes: the reference
/// linter for metric names, used by every component's tests.
pub mod lint {
    use std::io::Write;

    /// Encode `registry` and check it as `/metrics` serves it (Prometheus
    /// text). Without promtool: skipped, except in CI (`CI` set), where it
    /// fails. Panics with promtool's complaint and the exposition.
    pub fn assert_promtool_accepts(registry: &prometheus_client::registry::Registry) {
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, registry).expect("encode");
        assert_promtool_accepts_openmetrics(&om);
    }

    /// As [`assert_promtool_accepts`], for OpenMetrics text already encoded.
    pub fn assert_promtool_accepts_openmetrics(om: &str) {
        let text = super::openmetrics_to_prometheus(om);
        match check(&text) {
            None => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "promtool is required in CI (cargo xtask setup)"
                );
                eprintln!("skipped: promtool not installed");
            }
            Some(Ok(())) => {}
            Some(Err(msg)) => panic!("promtool check metrics: {msg}\n---\n{text}"),
        }
    }

    /// Parse OpenMetrics text with a real parser (Python prometheus_client's
    /// `openmetrics.parser`, installed by `cargo xtask setup`): every sample
    /// as (name, labels), or the parser's complaint. Without python3 or the
    /// package: skipped (`None`), except in CI, where it fails.
    pub fn parse_openmetrics(om: &str) -> Option<Result<Vec<Sample>, String>> {
        const SCRIPT: &str = "import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
out = []
for f in parse(sys.stdin.buffer.read().decode('utf-8')):
    out.extend([s.name, s.labels] for s in f.samples)
json.dump(out, sys.stdout)";
        let ran = std::process::Command::new("python3")
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ran {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 with prometheus_client is required in CI (cargo xtask setup)"
            );
            eprintln!("skipped: python3 prometheus_client not installed");
            return None;
        }
        let out = pipe(
            std::process::Command::new("python3").args(["-c", SCRIPT]),
            om,
        )?;
        if !out.status.success() {
            return Some(Err(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        let samples: Vec<(String, std::collections::BTreeMap<String, String>)> =
            match serde_json::from_slice(&out.stdout) {
                Ok(v) => v,
                Err(e) => return Some(Err(format!("parser output: {e}"))),
            };
        Some(Ok(samples
            .into_iter()
            .map(|(name, labels)| Sample { name, labels })
            .collect()))
    }

    /// One sample as a parser read it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Sample {
        pub name: String,
        pub labels: std::collections::BTreeMap<String, String>,
    }

    /// [`parse_openmetrics`] that must succeed; panics with the complaint
    /// and the text. `None` when skipped.
    pub fn assert_openmetrics_parses(om: &str) -> Option<Vec<Sample>> {
        match parse_openmetrics(om)? {
            Ok(s) => Some(s),
            Err(msg) => panic!("OpenMetrics parser: {msg}\n---\n{om}"),
        }
    }

    /// Run `cmd` with `input` on its stdin; its output (`None` if it could
    /// not run).
    fn pipe(cmd: &mut std::process::Command, input: &str) -> Option<std::process::Output> {
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let input = input.as_bytes().to_vec();
        // A writer thread: a large input must not deadlock against the
        // child's full stdout pipe.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().ok()?;
        let _ = writer.join();
        Some(out)
    }

    /// `None` without promtool; else its verdict (warnings count as failure).
    pub fn check(prometheus_text: &str) -> Option<Result<(), String>> {
        let out = pipe(
            std::process::Command::new("promtool").args(["check", "metrics"]),
            prometheus_text,
        )?;
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(if out.status.success() && msg.trim().is_empty() {
            Ok(())
        } else {
            Err(msg)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    pub(crate) fn sample_registry() -> Registry {
        let mut r = Registry::default();
        let m = SelfMetrics::default();
        m.register(&mut r);
        m.events
            .get_or_create(&KindLabels { kind: "data" })
            .inc_by(3);
        let h = Histogram::new([0.1, 1.0]);
        h.observe(0.5);
        r.register_with_unit("demo_duration", "demo", Unit::Seconds, h);
        r
    }

    #[test]
    fn prometheus_text_has_typed_totals_and_no_openmetrics_markers() {
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &sample_registry()).unwrap();
        assert!(om.contains("# EOF"));
        let text = openmetrics_to_prometheus(&om);
        assert!(
            text.contains("# TYPE sloguard_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("sloguard_events_total{kind=\"data\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE sloguard_build_info gauge"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn exemplars_are_stripped_for_prometheus_text() {
        let om = "# TYPE x histogram\nx_bucket{le=\"1.0\"} 1 # {trace_id=\"ab\"} 0.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# TYPE x histogram\nx_bucket{le=\"1.0\"} 1\n"
        );
    }

    /// promtool is the reference parser; the test needs it in CI.
    #[test]
    fn promtool_accepts_the_exposition() {
        lint::assert_promtool_accepts(&sample_registry());
    }
}

#[cfg(test)]
mod hostile_tests;

/// `metrics:` section of the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".parse().expect("valid default"),
        }
    }
}
