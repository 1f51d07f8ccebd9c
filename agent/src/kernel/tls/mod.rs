//! HTTPS plaintext: which files get the TLS uprobes, and for how long.
//!
//! Every `libssl.so*` a process maps, every executable exporting
//! `SSL_read` (Node.js), and every Go executable whose symbol table names
//! `crypto/tls.(*Conn).Read`/`Write` (see `golang`), is attached once per
//! distinct file (device + inode) and detached when no live process maps it
//! any more. Processes are
//! found at start (a full look at `/proc`); on their exec and whenever they
//! map a file's code (`sched:sched_process_exec` and `sys_enter_mmap` with
//! `PROT_EXEC` send the pid through a small ring buffer: libraries such as
//! Python's `_ssl` are loaded with dlopen long after exec); and by a full
//! look every `tls.rescan_interval`. docs/probes.md has the kernel side.
mod attach;
mod config;
pub mod discover;
pub mod golang;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::export::metrics::{KindLabels, ReasonLabels};
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use attach::TlsAttachError;
pub use config::{PathFilter, TlsConfig};
use discover::{Candidate, FileKey, Kind, Unattachable};

/// How often [`TlsManager::poll`] should run: a process is attached
/// within about this long after it maps OpenSSL.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often the processes seen mapping attached files are checked for exit.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Distinct processes hinted per poll at most (an exec or dlopen storm must
/// not grow memory); beyond it the periodic rescan catches up.
const MAX_PENDING: usize = 16_384;
/// Files remembered as not attachable (not retried until they change).
const MAX_REFUSED: usize = 65_536;

/// `sloguard_tls_attached{kind}` and `sloguard_tls_attach_failures_total{reason}`.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    pub attached: Family<KindLabels, Gauge>,
    pub failures: Family<ReasonLabels, Counter>,
}

impl TlsMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "sloguard_tls_attached",
            "Files (distinct device and inode) whose TLS functions carry the agent's uprobes",
            self.attached.clone(),
        );
        r.register(
            "sloguard_tls_attach_failures",
            "TLS candidate files that could not be attached, once per file, by reason",
            self.failures.clone(),
        );
        // Every series from the start, so rates work from the first scrape.
        for kind in Kind::ALL {
            let _ = self
                .attached
                .get_or_create(&KindLabels { kind: kind.label() });
        }
        for reason in Unattachable::LABELS
            .into_iter()
            .chain(["not_permitted", "kernel"])
        {
            let _ = self.failures.get_or_create(&ReasonLabels { reason });
        }
    }

    fn fail(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabels { reason }).inc();
    }
}

struct Attached {
    path: String,
    kind: Kind,
    links: Vec<attach::Link>,
    /// Live processes mapping the file, as last seen.
    pids: HashSet<u32>,
}

/// Attachments and the scans that keep them.
pub struct TlsManager {
    filter: PathFilter,
    rescan: Duration,
    proc_root: PathBuf,
    self_pid: u32,
    files: HashMap<FileKey, Attached>,
    refused: HashSet<FileKey>,
    /// Processes hinted during the previous poll: looked at again now (the
    /// mmap hint fires on entry to mmap, before the mapping exists).
    hinted_before: HashSet<u32>,
    last_full: Option<Instant>,
    last_prune: Option<Instant>,
    execs: RingBuf<MapData>,
    metrics: TlsMetrics,
}

impl TlsManager {
    /// Load the TLS programs into `ebpf` and take its hint ring buffer.
    /// `None` when `tls.enabled` is off.
    pub fn start(
        cfg: &TlsConfig,
        ebpf: &mut Ebpf,
        metrics: TlsMetrics,
    ) -> Result<Option<Self>, TlsStartError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let filter = cfg.filter()?;
        attach::load(ebpf)?;
        let execs = ebpf
            .take_map("EXECS")
            .and_then(|m| RingBuf::try_from(m).ok())
            .ok_or(TlsStartError::Map("EXECS"))?;
        Ok(Some(Self {
            filter,
            rescan: cfg.rescan_interval,
            proc_root: PathBuf::from("/proc"),
            self_pid: std::process::id(),
            files: HashMap::new(),
            refused: HashSet::new(),
            hinted_before: HashSet::new(),
            last_full: None,
            last_prune: None,
            execs,
            metrics,
        }))
    }

    /// Files attached now.
    pub fn attached(&self) -> usize {
        self.files.len()
    }

    /// Run often (every 100 ms): new processes, due looks, the periodic
    /// full rescan.
    pub fn poll(&mut self, ebpf: &mut Ebpf) {
        let now = Instant::now();
        // Each hinted process is looked at in this poll and the next one,
        // once per poll however many hints it sent.
        let mut hinted = HashSet::new();
        while let Some(item) = self.execs.next() {
            if let Some(b) = item.get(..4)
                && hinted.len() < MAX_PENDING
            {
                hinted.insert(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
        }
        let before = std::mem::take(&mut self.hinted_before);
        for &pid in hinted.union(&before) {
            self.look_at(ebpf, pid);
        }
        self.hinted_before = hinted;
        if self
            .last_full
            .is_none_or(|t| now.duration_since(t) >= self.rescan)
        {
            self.full_scan(ebpf);
            self.last_full = Some(now);
        }
        // One stat per process seen mapping an attached file: once a second
        // is soon enough to release a file (idle links cost nothing).
        if self
            .last_prune
            .is_none_or(|t| now.duration_since(t) >= PRUNE_INTERVAL)
        {
            self.release_unmapped(ebpf);
            self.last_prune = Some(now);
        }
    }

    /// Look at every process.
    pub fn full_scan(&mut self, ebpf: &mut Ebpf) {
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        let mut live = HashSet::new();
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                live.insert(pid);
                self.look_at(ebpf, pid);
            }
        }
        for f in self.files.values_mut() {
            f.pids.retain(|p| live.contains(p));
        }
    }

    /// Attach what `pid` maps and was not attached yet; record which
    /// attached files it maps (and which it no longer does: after an exec).
    fn look_at(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if pid == self.self_pid {
            return;
        }
        let Some(found) = discover::process_files(&self.proc_root, pid) else {
            for f in self.files.values_mut() {
                f.pids.remove(&pid);
            }
            return;
        };
        let mut maps_now = HashSet::new();
        for c in &found.candidates {
            if !self.filter.allows(&found.exe, &c.path) {
                continue;
            }
            if self.files.contains_key(&c.key) || self.try_attach(ebpf, pid, c) {
                maps_now.insert(c.key);
            }
        }
        for (key, f) in &mut self.files {
            if maps_now.contains(key) {
                if f.kind == Kind::Go && f.pids.insert(pid) {
                    attach::mark_go_process(ebpf, pid);
                }
                f.pids.insert(pid);
            } else {
                f.pids.remove(&pid);
            }
        }
    }

    fn try_attach(&mut self, ebpf: &mut Ebpf, pid: u32, c: &Candidate) -> bool {
        if self.refused.contains(&c.key) {
            return false;
        }
        let refuse = |me: &mut Self, reason: &'static str| {
            me.remember_refused(c.key);
            me.metrics.fail(reason);
        };
        let Some(host) = discover::readable_path(&self.proc_root, pid, c) else {
            tracing::info!(
                pid,
                path = %c.path,
                "TLS library not attachable: /proc/<pid>/root not readable (CAP_SYS_PTRACE)"
            );
            refuse(self, "unreadable");
            return false;
        };
        let (kind, sites) = match discover::tls_sites(&host) {
            Ok(found) => found,
            // Most executables carry no TLS library: not a failure worth a count.
            Err(Unattachable::NoSymbols) if c.is_exe => {
                self.remember_refused(c.key);
                return false;
            }
            Err(e) => {
                tracing::info!(pid, path = %c.path, "TLS library not attachable: {e}");
                refuse(self, e.label());
                return false;
            }
        };
        match attach::attach_file(ebpf, &host, &sites) {
            Ok(links) => {
                let mut symbols: Vec<&str> = sites.iter().map(|s| s.symbol).collect();
                symbols.dedup();
                tracing::info!(
                    pid,
                    path = %c.path,
                    kind = kind.label(),
                    symbols = ?symbols,
                    probes = links.len(),
                    "TLS uprobes attached"
                );
                self.files.insert(
                    c.key,
                    Attached {
                        path: c.path.clone(),
                        kind,
                        links,
                        pids: HashSet::new(),
                    },
                );
                self.set_gauge();
                true
            }
            Err(e) if e.not_permitted() => {
                tracing::warn!(
                    pid,
                    path = %c.path,
                    "TLS uprobes not attached: not permitted ({e}); the uprobe PMU needs CAP_SYS_ADMIN (docs/requirements.md)"
                );
                refuse(self, "not_permitted");
                false
            }
            Err(e) => {
                tracing::warn!(pid, path = %c.path, "TLS uprobes not attached: {e}");
                refuse(self, "kernel");
                false
            }
        }
    }

    /// Not retried until the set is full (then all are, once).
    fn remember_refused(&mut self, key: FileKey) {
        if self.refused.len() >= MAX_REFUSED {
            self.refused.clear();
        }
        self.refused.insert(key);
    }

    /// Detach files no live process maps any more.
    fn release_unmapped(&mut self, ebpf: &mut Ebpf) {
        let root = &self.proc_root;
        for f in self.files.values_mut() {
            f.pids.retain(|p| root.join(p.to_string()).exists());
        }
        let gone: Vec<FileKey> = self
            .files
            .iter()
            .filter(|(_, f)| f.pids.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(f) = self.files.remove(&key) {
                tracing::info!(path = %f.path, "TLS uprobes detached: no process maps the file");
                attach::detach(ebpf, f.links);
            }
        }
        self.set_gauge();
    }

    fn set_gauge(&self) {
        for kind in Kind::ALL {
            let n = self.files.values().filter(|f| f.kind == kind).count();
            self.metrics
                .attached
                .get_or_create(&KindLabels { kind: kind.label() })
                .set(n as i64);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsStartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS probes: {0}")]
    Attach(#[from] TlsAttachError),
    #[error("eBPF map {0} is missing or has the wrong type")]
    Map(&'static str),
}
