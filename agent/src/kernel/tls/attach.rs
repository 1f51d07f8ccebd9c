//! Loading the TLS programs and attaching them to one file (kernel side:
//! agent-ebpf/src/tls.rs). A uprobe sits on the file's inode, so one set of
//! links serves every process mapping it, started before or after.
use std::path::Path;

use aya::Ebpf;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{TracePoint, UProbe};

use crate::kernel::probes::KernelError;

/// Entry and return program for each OpenSSL function. The entry programs
/// are shared: the four functions take `(SSL *, buf, num[, size_t *done])`.
pub const OPENSSL_PROBES: [(&str, &str, &str); 4] = [
    ("SSL_read", "ssl_enter", "ssl_read_exit"),
    ("SSL_read_ex", "ssl_ex_enter", "ssl_read_exit"),
    ("SSL_write", "ssl_enter", "ssl_write_exit"),
    ("SSL_write_ex", "ssl_ex_enter", "ssl_write_exit"),
];

/// Tracepoints that name processes to look at: new programs, and code
/// mappings of files (libraries loaded at start or with dlopen).
const HINTS: [(&str, &str, &str); 2] = [
    ("tls_exec", "sched", "sched_process_exec"),
    ("tls_mmap", "syscalls", "sys_enter_mmap"),
];

const UPROBE_PROGRAMS: [&str; 4] = [
    "ssl_enter",
    "ssl_ex_enter",
    "ssl_read_exit",
    "ssl_write_exit",
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

/// Attach entry and return probes at each function's file offset in
/// `path`. All or nothing: on an error the links made so far are detached.
pub fn attach_file(
    ebpf: &mut Ebpf,
    path: &Path,
    offsets: &[(&'static str, u64)],
) -> Result<Vec<Link>, TlsAttachError> {
    let mut links = Vec::with_capacity(offsets.len() * 2);
    for &(symbol, offset) in offsets {
        let Some(&(_, enter, exit)) = OPENSSL_PROBES.iter().find(|(s, _, _)| *s == symbol) else {
            continue;
        };
        for program in [enter, exit] {
            match attach_one(ebpf, program, path, offset) {
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
