//! Loading and attaching the eBPF object, and reading what it reports.
//!
//! Everything that can go wrong here is an environment problem an operator
//! must fix, so each error says in one line what to do.
mod btf;
mod config;
pub mod programs;
mod scope_map;

pub use config::{CostStage, ProbesConfig};
pub use scope_map::ScopeMap;

use std::path::Path;

use agent_common::{KERNEL_COUNTERS, KernelCounter, ProbeConfig};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::{RawTracePoint, TracePoint};

pub use btf::kernel_offsets;

/// The eBPF object built by `agent/build.rs`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sloguard-probes"));

/// What a failed kernel call returned, kept whole (aya's error with its
/// `io::Error` inside) so the errno can be matched and the chain printed.
pub type KernelError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "no kernel BTF at /sys/kernel/btf/vmlinux: sloguard needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux >= 6.3)"
    )]
    NoBtf,
    #[error("cannot read kernel BTF: {0}")]
    Btf(String),
    #[error(
        "not permitted to load eBPF programs ({what}: {source}): run as uid 0 with CAP_BPF and CAP_PERFMON (see docs/requirements.md)"
    )]
    NotPermitted {
        what: &'static str,
        #[source]
        source: KernelError,
    },
    #[error(
        "tracefs is not available at {path} and could not be mounted ({reason}): run `mount -t tracefs nodev {path}`"
    )]
    Tracefs { path: String, reason: String },
    #[error("{what} failed: {source}")]
    Load {
        what: &'static str,
        #[source]
        source: KernelError,
    },
    #[error(
        "this binary was built without its eBPF programs (a fuzz build or SLOGUARD_NO_EBPF=1): build it with `cargo xtask build`"
    )]
    NoObject,
    #[error("attaching {program} to tracepoint {category}:{name} failed ({step}): {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        step: &'static str,
        #[source]
        source: KernelError,
    },
    #[error("eBPF map {0} is missing or has the wrong type")]
    Map(&'static str),
    #[error(
        "probes.run_time_stats: the kernel refused to time eBPF programs ({0}); it needs CAP_SYS_ADMIN, or turn the option off"
    )]
    RunTimeStats(#[source] KernelError),
}

/// The probes wake the ring-buffer reader only when this much is pending (a
/// wakeup per event costs the traced task microseconds): readers must also
/// drain on a timer, at least every [`RING_BUFFER_POLL_MS`].
pub const RING_BUFFER_WAKEUP_BYTES: u32 = 256 * 1024;
/// Longest a reader may sleep without draining the ring buffer.
pub const RING_BUFFER_POLL_MS: u64 = 50;

/// Loaded and attached probes. Dropping this detaches every program.
pub struct Probes {
    ebpf: aya::Ebpf,
    attached: usize,
    /// Held while run-time stats are on: the kernel times runs while any
    /// such descriptor is open.
    _run_time_stats: Option<std::os::fd::OwnedFd>,
}

/// One program's run figures as the kernel counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    pub program: String,
    pub run_time: std::time::Duration,
    pub runs: u64,
}

impl Probes {
    /// Check the environment, load the object, hand it its config and attach
    /// every tracepoint program.
    pub fn load(cfg: &ProbesConfig) -> Result<Self, ProbeError> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(ProbeError::NoBtf);
        }
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        ensure_tracefs(&cfg.tracefs)?;
        let offsets = kernel_offsets()?;
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries("EVENTS", cfg.ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| classify_load("loading the eBPF object", e))?;

        let probe_cfg = ProbeConfig {
            offsets,
            self_tgid: std::process::id(),
            capture_http: cfg.capture_http as u32,
            wakeup_bytes: RING_BUFFER_WAKEUP_BYTES,
            cost_stage: cfg.cost_stage.code(),
            // Everything until the scope keeper has filled the SCOPE map.
            scope_active: 0,
        };
        {
            let map = ebpf.map_mut("CONFIG").ok_or(ProbeError::Map("CONFIG"))?;
            let mut arr: Array<_, ProbeConfig> =
                Array::try_from(map).map_err(|_| ProbeError::Map("CONFIG"))?;
            arr.set(0, probe_cfg, 0)
                .map_err(|e| classify_load("writing the probes' CONFIG map", e))?;
        }

        let mut attached = 0;
        for p in programs::TRACEPOINTS {
            let attach_err = |step: &'static str| {
                move |e: aya::programs::ProgramError| ProbeError::Attach {
                    program: p.program,
                    category: p.category,
                    name: p.name,
                    step,
                    source: e.into(),
                }
            };
            let program = ebpf
                .program_mut(p.program)
                .ok_or_else(|| ProbeError::Attach {
                    program: p.program,
                    category: p.category,
                    name: p.name,
                    step: "lookup",
                    source: "program not in the eBPF object".into(),
                })?;
            // Without privilege the load is the first call to fail, with EPERM.
            let load_err = |e: aya::programs::ProgramError| {
                if has_errno(&e, libc::EPERM) {
                    ProbeError::NotPermitted {
                        what: p.program,
                        source: e.into(),
                    }
                } else {
                    attach_err("verifier/load")(e)
                }
            };
            if p.raw {
                // Raw tracepoints skip building the perf record: cheaper on hot paths.
                let prog: &mut RawTracePoint = program.try_into().map_err(attach_err("type"))?;
                prog.load().map_err(load_err)?;
                prog.attach(p.name).map_err(attach_err("attach"))?;
            } else {
                let prog: &mut TracePoint = program.try_into().map_err(attach_err("type"))?;
                prog.load().map_err(load_err)?;
                prog.attach(p.category, p.name)
                    .map_err(attach_err("attach"))?;
            }
            attached += 1;
        }
        let run_time_stats = if cfg.run_time_stats {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .map_err(|e| ProbeError::RunTimeStats(e.into()))?,
            )
        } else {
            None
        };
        Ok(Self {
            ebpf,
            attached,
            _run_time_stats: run_time_stats,
        })
    }

    /// Cumulative run time and run count of every program (zero unless
    /// run-time stats are on, here or in another process).
    pub fn program_runs(&self) -> Vec<ProgramRuns> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some(ProgramRuns {
                    program: name.to_string(),
                    run_time: info.run_time(),
                    runs: info.run_count(),
                })
            })
            .collect()
    }

    /// The loaded object, for programs attached later (TLS uprobes).
    pub fn ebpf_mut(&mut self) -> &mut aya::Ebpf {
        &mut self.ebpf
    }

    /// Number of attached programs (readiness).
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// The event ring buffer; can be taken once.
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::Map("EVENTS"))?;
        RingBuf::try_from(map).map_err(|_| ProbeError::Map("EVENTS"))
    }

    /// Kernel-side counters summed over CPUs, indexed by [`KernelCounter`].
    pub fn kernel_counters(&self) -> Result<[u64; KERNEL_COUNTERS as usize], ProbeError> {
        let map = self
            .ebpf
            .map("COUNTERS")
            .ok_or(ProbeError::Map("COUNTERS"))?;
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|_| ProbeError::Map("COUNTERS"))?;
        let mut out = [0u64; KERNEL_COUNTERS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = arr.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        Ok(out)
    }

    /// Per-program `(name, runs, total run time)`; the kernel counts these only
    /// while BPF run-time stats are enabled (`aya::sys::enable_stats`).
    pub fn program_stats(&self) -> Vec<(String, u64, std::time::Duration)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_string(), info.run_count(), info.run_time()))
            })
            .collect()
    }

    pub fn kernel_counter(&self, c: KernelCounter) -> u64 {
        self.kernel_counters().map(|a| a[c as usize]).unwrap_or(0)
    }

    /// Runs the kernel skipped because another tracing eBPF program (ours or
    /// anyone's) was already running on that CPU, e.g. a softirq retransmit
    /// arriving while a syscall probe ran: events lost before any probe code.
    pub fn recursion_misses(&self) -> u64 {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| {
                let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
                let info = std::fs::read_to_string(path).ok()?;
                info.lines()
                    .find_map(|l| l.strip_prefix("recursion_misses:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }
}

/// A failed load: "not permitted" when the kernel said EPERM (a process
/// without CAP_BPF), else the load error with its cause.
fn classify_load<E>(what: &'static str, e: E) -> ProbeError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if has_errno(&e, libc::EPERM) {
        ProbeError::NotPermitted {
            what,
            source: e.into(),
        }
    } else {
        ProbeError::Load {
            what,
            source: e.into(),
        }
    }
}

/// Whether an `io::Error` with this errno is anywhere in the error's chain
/// (aya wraps the syscall's error one or two levels down). EACCES is not
/// privilege: the verifier answers it for programs it rejects.
pub(crate) fn has_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// aya finds tracepoint ids through tracefs, which this kernel does not mount
/// at boot.
fn ensure_tracefs(path: &str) -> Result<(), ProbeError> {
    let marker = Path::new(path).join("events");
    if marker.exists() {
        return Ok(());
    }
    // Older layouts expose tracefs under debugfs; aya checks that too.
    if Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let err = |reason: String| ProbeError::Tracefs {
        path: path.to_string(),
        reason,
    };
    let c_path = std::ffi::CString::new(path).map_err(|e| err(e.to_string()))?;
    // SAFETY: valid NUL-terminated strings; null data is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_path.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Without privileges the mount point is unreadable too: that is a
        // privilege problem, not a missing tracefs.
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(ProbeError::NotPermitted {
                what: "mounting tracefs",
                source: e.into(),
            });
        }
        return Err(err(e.to_string()));
    }
    if !marker.exists() {
        return Err(err("mounted, but it has no events/ directory".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads the real object into this kernel: needs root (or CAP_BPF+PERFMON).
    #[test]
    fn loads_and_attaches_every_tracepoint() {
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: not root");
            return;
        }
        let cfg = ProbesConfig::default();
        let mut p = Probes::load(&cfg).expect("load");
        // Every program attaches; HTTP capture is switched in the kernel by
        // the CONFIG map, not by leaving programs out.
        assert_eq!(p.attached(), programs::TRACEPOINTS.len());
        p.take_ring_buffer().expect("ring buffer");
        assert!(p.take_ring_buffer().is_err(), "taken twice");
        assert_eq!(p.kernel_counters().unwrap().len(), KERNEL_COUNTERS as usize);
    }
}
