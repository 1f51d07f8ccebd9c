//! Finding OpenSSL in processes: the `libssl.so*` files a process maps, and
//! its executable when that exports `SSL_read` itself (Node.js links
//! OpenSSL statically and exports its symbols). Read from
//! `/proc/<pid>/maps`; files are opened through `/proc/<pid>/root` so a
//! container's own filesystem is what gets read and attached.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

/// A mapped file as the kernel names it: `(device, inode)` from the maps
/// line. Uprobes attach to the inode, so one attachment serves every
/// process (and container) that maps the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

/// A TLS candidate in one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: FileKey,
    /// The path inside the process's mount namespace.
    pub path: String,
    /// The process's executable itself (a static OpenSSL), not a library.
    pub is_exe: bool,
}

/// What one process maps that may carry OpenSSL.
#[derive(Debug, Default)]
pub struct ProcessFiles {
    /// The executable's path (from the maps line of `/proc/<pid>/exe`'s
    /// inode, else the link), for the include/exclude filter.
    pub exe: String,
    pub candidates: Vec<Candidate>,
}

/// Read `/proc/<pid>/maps` under `proc_root` and list the `libssl.so*`
/// files and the executable (whether it exports OpenSSL is decided later,
/// once per file). `None` when the process is gone or unreadable.
pub fn process_files(proc_root: &Path, pid: u32) -> Option<ProcessFiles> {
    let dir = proc_root.join(pid.to_string());
    let maps = std::fs::read_to_string(dir.join("maps")).ok()?;
    let exe_link = std::fs::read_link(dir.join("exe")).ok();
    let exe_link = exe_link.as_deref().and_then(Path::to_str).unwrap_or("");
    Some(parse_maps(&maps, exe_link))
}

/// The parsing half of [`process_files`], for tests. Lines look like
/// `7f..-7f.. r-xp 00001000 fd:01 1835043  /usr/lib/x86_64-linux-gnu/libssl.so.3`.
pub fn parse_maps(maps: &str, exe_link: &str) -> ProcessFiles {
    let mut seen = BTreeMap::new();
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ');
        let (Some(_), Some(_), Some(_), Some(dev), Some(inode), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = path.trim_start();
        // Anonymous and special mappings, and files deleted since mapping
        // (the path no longer names them).
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let Some(key) = parse_key(dev, inode) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or("");
        let is_exe = path == exe_link;
        if is_exe || name.starts_with("libssl.so") {
            seen.entry(key).or_insert(Candidate {
                key,
                path: path.to_string(),
                is_exe,
            });
        }
    }
    ProcessFiles {
        exe: exe_link.to_string(),
        candidates: seen.into_values().collect(),
    }
}

fn parse_key(dev: &str, inode: &str) -> Option<FileKey> {
    let (major, minor) = dev.split_once(':')?;
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    let inode: u64 = inode.parse().ok()?;
    (inode != 0).then_some(FileKey {
        dev: (major << 32) | minor,
        inode,
    })
}

/// Where a candidate is readable from the agent: through the process's root
/// (its container's filesystem). `/proc/<pid>/root` needs `CAP_SYS_PTRACE`
/// for processes the agent may not ptrace; without it, the same path in the
/// agent's own mount namespace serves when it is the very file (same device
/// and inode: a host process), else `None`.
pub fn readable_path(proc_root: &Path, pid: u32, c: &Candidate) -> Option<PathBuf> {
    let via_root = host_path(proc_root, pid, &c.path);
    if std::fs::File::open(&via_root).is_ok() {
        return Some(via_root);
    }
    let own = PathBuf::from(&c.path);
    (file_key(&own) == Some(c.key)).then_some(own)
}

/// The path under `/proc/<pid>/root`.
pub fn host_path(proc_root: &Path, pid: u32, path: &str) -> PathBuf {
    proc_root
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'))
}

/// `(device, inode)` of a file as the maps lines write them.
fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    let dev = m.dev();
    Some(FileKey {
        dev: (u64::from(libc::major(dev)) << 32) | u64::from(libc::minor(dev)),
        inode: m.ino(),
    })
}

/// The OpenSSL functions the probes go on.
pub const SSL_SYMBOLS: [&str; 4] = ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"];

/// Why a file cannot be attached (bounded: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unattachable {
    #[error("cannot open or map the file")]
    Unreadable,
    #[error("not an ELF file this agent can parse")]
    NotElf,
    #[error("no SSL_read/SSL_write or crypto/tls.(*Conn).Read/Write symbols")]
    NoSymbols,
    #[error("Go binary without a symbol table (stripped): crypto/tls cannot be found")]
    Stripped,
    #[error("the machine code of a TLS function could not be decoded")]
    Undecodable,
    #[error("Go binary for another architecture or a Go before 1.18 (no register ABI build info)")]
    UnsupportedGo,
}

impl Unattachable {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::NotElf => "not_elf",
            Self::NoSymbols => "no_symbols",
            Self::Stripped => "stripped",
            Self::Undecodable => "undecodable",
            Self::UnsupportedGo => "unsupported_go",
        }
    }

    /// Every label, for series that exist from the first scrape.
    pub const LABELS: [&'static str; 6] = [
        "unreadable",
        "not_elf",
        "no_symbols",
        "stripped",
        "undecodable",
        "unsupported_go",
    ];
}

/// Which TLS implementation a file carries (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    OpenSsl,
    Go,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::OpenSsl, Kind::Go];

    pub fn label(self) -> &'static str {
        match self {
            Self::OpenSsl => "openssl",
            Self::Go => "go",
        }
    }
}

/// Where in a function a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The first instruction (OpenSSL's return is caught by a uretprobe
    /// placed there too).
    Entry,
    /// A RET instruction (Go).
    Return,
}

/// One probe site: a function and a file offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub symbol: &'static str,
    pub at: At,
    pub offset: u64,
}

/// The probe sites of a file: OpenSSL's exported functions, else Go's
/// `crypto/tls` found in its symbol table.
pub fn tls_sites(path: &Path) -> Result<(Kind, Vec<Site>), Unattachable> {
    let map = Mmap::open(path).ok_or(Unattachable::Unreadable)?;
    let obj = object::File::parse(map.bytes()).map_err(|_| Unattachable::NotElf)?;
    match openssl_offsets(&obj) {
        Ok(offs) => Ok((
            Kind::OpenSsl,
            offs.into_iter()
                .map(|(symbol, offset)| Site {
                    symbol,
                    at: At::Entry,
                    offset,
                })
                .collect(),
        )),
        Err(e) if !super::golang::is_go(&obj) => Err(e),
        Err(_) => Ok((Kind::Go, super::golang::go_sites(&obj)?)),
    }
}

/// File offsets of the OpenSSL functions a file defines in its dynamic
/// symbol table (what the dynamic linker resolves, so also what any caller
/// reaches). `SSL_read` and `SSL_write` are required; the `_ex` calls
/// (OpenSSL ≥ 1.1.1) are optional.
fn openssl_offsets(obj: &object::File<'_>) -> Result<Vec<(&'static str, u64)>, Unattachable> {
    let mut out = Vec::new();
    for sym in obj.dynamic_symbols() {
        if !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let Some(&want) = SSL_SYMBOLS.iter().find(|s| **s == name) else {
            continue;
        };
        if out.iter().any(|(n, _)| *n == want) {
            continue;
        }
        let Some(section) = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
        else {
            continue;
        };
        let Some((file_off, _)) = section.file_range() else {
            continue;
        };
        let Some(rel) = sym.address().checked_sub(section.address()) else {
            continue;
        };
        out.push((want, file_off + rel));
    }
    let has = |n: &str| out.iter().any(|(s, _)| *s == n);
    if has("SSL_read") && has("SSL_write") {
        Ok(out)
    } else {
        Err(Unattachable::NoSymbols)
    }
}

/// A read-only private mapping of a whole file: executables such as `node`
/// are ~100 MB, of which only the symbol tables are touched.
struct Mmap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mmap {
    fn open(path: &Path) -> Option<Self> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh private read-only mapping of an open file; the
        // fd may close afterwards. A file truncated while mapped would
        // SIGBUS: shared libraries and executables in use are not truncated
        // (the loader maps them the same way).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Self { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fd:01 1048600                    /usr/bin/python3.11
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
7f1c2b400000-7f1c2b45e000 r--p 00000000 fd:01 1835043                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2b45e000-7f1c2b4d1000 r-xp 0005e000 fd:01 1835043                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2b500000-7f1c2b600000 r-xp 00000000 00:2a 77                         /tmp/x/libssl.so.1.1 (deleted)
7f1c2b700000-7f1c2b800000 r-xp 00000000 fd:01 1835044                    /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7ffd1c9e0000-7ffd1ca01000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn maps_yield_libssl_once_and_the_executable() {
        let p = parse_maps(MAPS, "/usr/bin/python3.11");
        assert_eq!(p.exe, "/usr/bin/python3.11");
        let paths: Vec<_> = p
            .candidates
            .iter()
            .map(|c| (c.path.as_str(), c.is_exe))
            .collect();
        assert_eq!(
            paths,
            [
                ("/usr/bin/python3.11", true),
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3", false)
            ]
        );
        assert_eq!(
            p.candidates[1].key,
            FileKey {
                dev: (0xfd << 32) | 1,
                inode: 1835043
            }
        );
    }

    #[test]
    fn hostile_maps_lines_are_skipped() {
        let p = parse_maps(
            "x\n\n1-2 r 0 zz:01 5 /libssl.so\n1-2 r 0 1:1 0 /libssl.so\n",
            "",
        );
        assert!(p.candidates.is_empty());
    }

    #[test]
    fn own_path_serves_only_when_it_is_the_mapped_file() {
        let lib = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
        let Some(key) = file_key(Path::new(lib)) else {
            return;
        };
        let c = |key| Candidate {
            key,
            path: lib.into(),
            is_exe: false,
        };
        // A process root that cannot be read (no such pid under this root).
        let nowhere = Path::new("/nonexistent-proc");
        assert_eq!(readable_path(nowhere, 1, &c(key)), Some(PathBuf::from(lib)));
        let other = FileKey {
            inode: key.inode + 1,
            ..key
        };
        assert_eq!(
            readable_path(nowhere, 1, &c(other)),
            None,
            "another file at that path"
        );
        let me = std::process::id();
        assert_eq!(
            readable_path(Path::new("/proc"), me, &c(key)),
            Some(PathBuf::from(format!("/proc/{me}/root{lib}")))
        );
    }

    #[test]
    fn host_path_goes_through_the_process_root() {
        assert_eq!(
            host_path(Path::new("/proc"), 42, "/usr/lib/libssl.so.3"),
            Path::new("/proc/42/root/usr/lib/libssl.so.3")
        );
    }

    #[test]
    fn system_libssl_and_node_export_ssl_read() {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        if lib.exists() {
            let (kind, sites) = tls_sites(lib).unwrap();
            assert_eq!(kind, Kind::OpenSsl);
            assert_eq!(sites.len(), 4, "{sites:?}");
            assert!(sites.iter().all(|s| s.at == At::Entry));
        }
        let node = Path::new("/usr/bin/node");
        if node.exists() {
            assert_eq!(tls_sites(node).unwrap().0, Kind::OpenSsl);
        }
        assert_eq!(
            tls_sites(Path::new("/bin/true")),
            Err(Unattachable::NoSymbols)
        );
        assert_eq!(
            tls_sites(Path::new("/etc/hostname")),
            Err(Unattachable::NotElf)
        );
        assert_eq!(
            tls_sites(Path::new("/nonexistent")),
            Err(Unattachable::Unreadable)
        );
    }
}
