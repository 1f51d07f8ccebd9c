//! Loading the TLS programs and attaching them to one file (kernel side:
//! agent-ebpf/src/tls.rs). A uprobe sits on the file's inode, so one set of
//! links serves every process mapping it, started before or after.
use std::path::Path;

use aya::Ebpf;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{TracePoint, UProbe};

use super::discover::{At, Site};
use super::golang::GO_SYMBOLS;
use crate::kernel::probes::KernelError;

/// The programs attached at each kind of site. OpenSSL: the entry programs
/// are shared (the four functions take `(SSL *, buf, num[, size_t *done])`)
/// and the uretprobe sits at the entry too. Go: an entry program and a RET
/// program per function.
pub const PROBES: [(&str, At, &str); 12] = [
    ("SSL_read", At::Entry, "ssl_enter"),
    ("SSL_read", At::Entry, "ssl_read_exit"),
    ("SSL_read_ex", At::Entry, "ssl_ex_enter"),
    ("SSL_read_ex", At::Entry, "ssl_read_exit"),
    ("SSL_write", At::Entry, "ssl_enter"),
    ("SSL_write", At::Entry, "ssl_write_exit"),
    ("SSL_write_ex", At::Entry, "ssl_ex_enter"),
    ("SSL_write_ex", At::Entry, "ssl_write_exit"),
    (GO_SYMBOLS[0], At::Entry, "go_tls_read_enter"),
    (GO_SYMBOLS[0], At::Return, "go_tls_read_ret"),
    (GO_SYMBOLS[1], At::Entry, "go_tls_write_enter"),
    (GO_SYMBOLS[1], At::Return, "go_tls_write_ret"),
];

/// Tracepoints that name processes to look at: new programs, and code
/// mappings of files (libraries loaded at start or with dlopen).
const HINTS: [(&str, &str, &str); 2] = [
    ("tls_exec", "sched", "sched_process_exec"),
    ("tls_mmap", "syscalls", "sys_enter_mmap"),
];

const UPROBE_PROGRAMS: [&str; 8] = [
    "ssl_enter",
    "ssl_ex_enter",
    "ssl_read_exit",
    "ssl_write_exit",
    "go_tls_read_enter",
    "go_tls_write_enter",
    "go_tls_read_ret",
    "go_tls_write_ret",
];

#[derive(Debug, thiserror::Error)]
pub enum TlsAttachError {
    #[error("eBPF program {0} is missing from the object")]
    Missing(&'static str),
    #[error("loading {program}: {source}")]
    Load {
        program: &'static str,
        #[source]
        source: KernelError,
    },
    #[error("attaching {program} at {symbol} of {path}: {source}")]
    Attach {
        program: &'static str,
        symbol: &'static str,
        path: String,
        #[source]
        source: KernelError,
    },
}

impl TlsAttachError {
    /// The kernel said EACCES/EPERM: a missing capability, not a bad file.
    pub fn not_permitted(&self) -> bool {
        match self {
            Self::Attach { source, .. } | Self::Load { source, .. } => {
                crate::kernel::probes::has_errno(source.as_ref(), libc::EACCES)
                    || crate::kernel::probes::has_errno(source.as_ref(), libc::EPERM)
            }
            Self::Missing(_) => false,
        }
    }
}

/// One attached program instance, to detach later.
pub struct Link {
    program: &'static str,
    id: UProbeLinkId,
}

/// Load the uprobe programs and attach the tracepoints that tell userspace
/// which processes to look at.
pub fn load(ebpf: &mut Ebpf) -> Result<(), TlsAttachError> {
    for name in UPROBE_PROGRAMS {
        let p: &mut UProbe = ebpf
            .program_mut(name)
            .ok_or(TlsAttachError::Missing(name))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| TlsAttachError::Load {
                program: name,
                source: e.into(),
            })?;
        p.load().map_err(|e| TlsAttachError::Load {
            program: name,
            source: e.into(),
        })?;
    }
    for (program, category, name) in HINTS {
        let load_err = |e: aya::programs::ProgramError| TlsAttachError::Load {
            program,
            source: e.into(),
        };
        let tp: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(TlsAttachError::Missing(program))?
            .try_into()
            .map_err(load_err)?;
        tp.load().map_err(load_err)?;
        tp.attach(category, name).map_err(load_err)?;
    }
    Ok(())
}

/// Attach the programs of each site (see [`PROBES`]) at its file offset in
/// `path`. All or nothing: on an error the links made so far are detached.
pub fn attach_file(
    ebpf: &mut Ebpf,
    path: &Path,
    sites: &[Site],
) -> Result<Vec<Link>, TlsAttachError> {
    let mut links = Vec::with_capacity(sites.len() * 2);
    for site in sites {
        let programs = PROBES
            .iter()
            .filter(|(s, at, _)| *s == site.symbol && *at == site.at);
        for &(symbol, _, program) in programs {
            match attach_one(ebpf, program, path, site.offset) {
                Ok(id) => links.push(Link { program, id }),
                Err(e) => {
                    detach(ebpf, links);
                    return Err(TlsAttachError::Attach {
                        program,
                        symbol,
                        path: path.display().to_string(),
                        source: e.into(),
                    });
                }
            }
        }
    }
    Ok(links)
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &'static str,
    path: &Path,
    offset: u64,
) -> Result<UProbeLinkId, aya::programs::ProgramError> {
    let p: &mut UProbe = ebpf
        .program_mut(program)
        .expect("loaded in load()")
        .try_into()?;
    p.attach(
        UProbeAttachLocation::AbsoluteOffset(offset),
        path,
        UProbeScope::AllProcesses,
    )
}

/// Detach links; a link already gone (the program was unloaded) is fine.
pub fn detach(ebpf: &mut Ebpf, links: Vec<Link>) {
    for l in links {
        if let Some(p) = ebpf.program_mut(l.program)
            && let Ok(p) = <&mut UProbe>::try_from(p)
            && let Err(e) = p.detach(l.id)
        {
            tracing::debug!(program = l.program, "detaching a TLS uprobe: {e}");
        }
    }
}

/// Tell the socket probes that `pid` runs attached Go code, so its socket
/// syscalls look for a goroutine's call from its first connection on (the
/// first call into crypto/tls sets it too; this covers a handshake before).
pub fn mark_go_process(ebpf: &mut Ebpf, pid: u32) {
    let Some(map) = ebpf.map_mut("GO_PROCS") else {
        return;
    };
    match aya::maps::HashMap::<_, u32, u32>::try_from(map) {
        Ok(mut m) => {
            if let Err(e) = m.insert(pid, 1, 0) {
                tracing::debug!(pid, "marking a Go process: {e}");
            }
        }
        Err(e) => tracing::debug!("GO_PROCS: {e}"),
    }
}
