//! The tracing scope: which processes the socket probes trace, chosen by the
//! user (`scope:` in the config) and enforced in the kernel.
//!
//! The probes check the current task group against the `SCOPE` map before
//! any other lookup (agent-ebpf/src/scope.rs). This module keeps that map
//! current: a scan of `/proc` at start, before the check is switched on, and
//! again every `scope.rescan_interval`, adding processes that started or now
//! match and removing those that exited or no longer match. A periodic scan
//! rather than an exec/fork tracepoint: it costs nothing on the traced
//! hosts' hot paths (an exec probe runs in every process start, in scope or
//! not), sees changes a tracepoint would not (a port opened after exec, a pod
//! labelled later), and its cost is bounded and measured
//! (`sloguard_scope_rescan_seconds_total`). The price: a process that starts
//! matching is traced up to one interval late.
//!
//! With no selectors (the default) nothing is scanned and the probes skip
//! the check: every process is traced, at no extra cost.
pub mod config;
pub mod procfs;
pub mod select;

pub use config::{ScopeConfig, Selector};

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::kernel::probes::{ProbeError, Probes, ScopeMap};
use crate::request::k8s::pods::PodCache;
use select::Matcher;

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("scope: cannot list processes in {path}: {source}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
}

/// Why a rescan fell short: `/proc` could not be listed, or the kernel map
/// refused a process (full: more than its 16,384 entries in scope).
pub const FAILURE_PROC: &str = "proc";
pub const FAILURE_MAP: &str = "map";

/// The scope's self metrics.
#[derive(Clone, Default)]
pub struct ScopeMetrics {
    pub active: Gauge,
    pub processes: Gauge,
    pub rescans: Counter,
    pub rescan_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub failures: Family<FailureLabels, Counter>,
}

impl ScopeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sloguard_scope_active",
            "1 when scope selectors narrow which processes are traced, 0 when every process is",
            self.active.clone(),
        );
        registry.register(
            "sloguard_scope_processes",
            "Processes (task groups) in the kernel's scope set; 0 when the scope is everything",
            self.processes.clone(),
        );
        registry.register(
            "sloguard_scope_rescans",
            "Scans of /proc that refreshed the scope",
            self.rescans.clone(),
        );
        registry.register(
            "sloguard_scope_rescan_seconds",
            "Time spent scanning /proc and updating the scope set",
            self.rescan_seconds.clone(),
        );
        registry.register(
            "sloguard_scope_rescan_failures",
            "Scope rescans that fell short, by reason (proc, map)",
            self.failures.clone(),
        );
    }

    fn fail(&self, reason: &'static str) {
        self.failures.get_or_create(&FailureLabels { reason }).inc();
    }
}

/// Keeps the kernel's `SCOPE` map equal to the processes in scope.
pub struct ScopeKeeper {
    matcher: Matcher,
    map: ScopeMap,
    /// What the kernel map holds, as far as this keeper put it there.
    current: HashSet<u32>,
    pods: Option<PodCache>,
    proc_root: PathBuf,
    self_tgid: u32,
    metrics: ScopeMetrics,
}

impl ScopeKeeper {
    /// `cfg` must have passed `validate()`.
    pub fn new(
        cfg: &ScopeConfig,
        map: ScopeMap,
        pods: Option<PodCache>,
        metrics: ScopeMetrics,
    ) -> Self {
        Self {
            matcher: Matcher::new(cfg),
            map,
            current: HashSet::new(),
            pods,
            proc_root: PathBuf::from("/proc"),
            self_tgid: std::process::id(),
            metrics,
        }
    }

    /// Scan `/proc` and bring the kernel map in step; returns the number of
    /// processes in scope.
    pub fn rescan(&mut self) -> Result<usize, ScopeError> {
        let t0 = Instant::now();
        let found = procfs::scan(
            &self.proc_root,
            &self.matcher,
            self.pods.as_ref(),
            self.self_tgid,
        )
        .map_err(|source| {
            self.metrics.fail(FAILURE_PROC);
            ScopeError::Proc {
                path: self.proc_root.display().to_string(),
                source,
            }
        })?;
        let gone: Vec<u32> = self.current.difference(&found.tgids).copied().collect();
        for tgid in gone {
            // Absent already is fine: the goal is "not in the map".
            let _ = self.map.remove(&tgid);
            self.current.remove(&tgid);
        }
        let mut refused = 0usize;
        for &tgid in found.tgids.difference(&self.current.clone()) {
            match self.map.insert(tgid, 1, 0) {
                Ok(()) => {
                    self.current.insert(tgid);
                }
                Err(_) => refused += 1,
            }
        }
        if refused > 0 {
            self.metrics.fail(FAILURE_MAP);
            tracing::warn!(
                refused,
                in_scope = self.current.len(),
                "scope: the kernel's scope set refused processes (full?): they are not traced"
            );
        }
        self.metrics.processes.set(self.current.len() as i64);
        self.metrics.rescans.inc();
        self.metrics
            .rescan_seconds
            .inc_by(t0.elapsed().as_secs_f64());
        Ok(self.current.len())
    }
}

/// Fill the scope set, switch the kernel check on and keep the set current on
/// a thread of its own until `stop`. Nothing at all when the scope is
/// everything (the default).
pub fn start(
    cfg: &ScopeConfig,
    probes: &mut Probes,
    pods: Option<PodCache>,
    metrics: ScopeMetrics,
    stop: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>, ScopeError> {
    if !cfg.is_active() {
        metrics.active.set(0);
        return Ok(None);
    }
    let mut keeper = ScopeKeeper::new(cfg, probes.take_scope_map()?, pods, metrics.clone());
    // Filled before the check goes on, so in-scope processes that were
    // running at start are never dropped.
    let n = keeper.rescan()?;
    probes.set_scope_active(true)?;
    metrics.active.set(1);
    tracing::info!(
        processes = n,
        interval = %humantime::format_duration(cfg.rescan_interval),
        "scope: tracing only the processes the scope selects"
    );
    let interval = cfg.rescan_interval;
    let handle = std::thread::Builder::new()
        .name("sloguard-scope".into())
        .spawn(move || {
            while sleep_unless_stopped(interval, &stop) {
                if let Err(e) = keeper.rescan() {
                    tracing::warn!("{e}");
                }
            }
        })
        .map_err(|source| ScopeError::Proc {
            path: "(spawning the scope thread)".into(),
            source,
        })?;
    Ok(Some(handle))
}

/// Sleep `d` in short steps; false once `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    false
}
