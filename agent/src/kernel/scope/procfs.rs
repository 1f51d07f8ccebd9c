//! One pass over `/proc`: every process, with what the selectors ask about
//! it read lazily. A process that exits mid-scan simply has no facts (it is
//! left out); nothing read here can fail the scan.
use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::select::{Facts, Matcher};
use crate::request::k8s::cgroup::read_pod_cgroup;
use crate::request::k8s::identity::PodMeta;
use crate::request::k8s::pods::PodCache;

/// Longest `/proc/PID/exe` target kept (paths are bounded by PATH_MAX anyway).
const MAX_EXE: usize = 4096;
/// File descriptors looked at per process when a selector asks for a port: a
/// server's listening sockets are among its first descriptors.
const MAX_FDS: usize = 65_536;

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Task group ids in scope.
    pub tgids: HashSet<u32>,
    /// Processes looked at.
    pub seen: usize,
}

/// Scan `proc_root` (normally `/proc`), skipping `self_tgid`.
pub fn scan(
    proc_root: &Path,
    matcher: &Matcher,
    pods: Option<&PodCache>,
    self_tgid: u32,
) -> std::io::Result<ScanResult> {
    let ports = matcher.ports();
    let ctx = Ctx {
        root: proc_root,
        ports: &ports,
        netns: Default::default(),
        pods,
    };
    let mut out = ScanResult::default();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == self_tgid {
            continue;
        }
        let Some(proc) = Proc::read(&ctx, pid) else {
            continue;
        };
        out.seen += 1;
        if matcher.admits(&proc) {
            out.tgids.insert(pid);
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    root: &'a Path,
    ports: &'a BTreeSet<u16>,
    /// Per network namespace: listening socket inode -> port, for the ports
    /// the selectors name (read once per namespace per scan).
    netns: std::cell::RefCell<HashMap<String, Arc<HashMap<u64, u16>>>>,
    pods: Option<&'a PodCache>,
}

struct Proc<'a> {
    ctx: &'a Ctx<'a>,
    dir: PathBuf,
    comm: String,
    exe: OnceCell<Option<String>>,
    listening: OnceCell<BTreeSet<u16>>,
    pod: OnceCell<Option<Arc<PodMeta>>>,
}

impl<'a> Proc<'a> {
    fn read(ctx: &'a Ctx<'a>, pid: u32) -> Option<Self> {
        let dir = ctx.root.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        // The kernel bounds comm at 15 bytes; trust nothing and cut anyway.
        let comm: String = comm.trim_end_matches('\n').chars().take(16).collect();
        Some(Self {
            ctx,
            dir,
            comm,
            exe: OnceCell::new(),
            listening: OnceCell::new(),
            pod: OnceCell::new(),
        })
    }

    fn listening_ports(&self) -> BTreeSet<u16> {
        let Ok(ns) = std::fs::read_link(self.dir.join("ns/net")) else {
            return BTreeSet::new();
        };
        let ns = ns.to_string_lossy().into_owned();
        let table = {
            let mut cache = self.ctx.netns.borrow_mut();
            cache
                .entry(ns)
                .or_insert_with(|| Arc::new(listeners(&self.dir, self.ctx.ports)))
                .clone()
        };
        if table.is_empty() {
            return BTreeSet::new();
        }
        let mut found = BTreeSet::new();
        let Ok(fds) = std::fs::read_dir(self.dir.join("fd")) else {
            return found;
        };
        for fd in fds.take(MAX_FDS).flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(port) = socket_inode(&target.to_string_lossy()).and_then(|i| table.get(&i))
            {
                found.insert(*port);
            }
        }
        found
    }
}

impl Facts for Proc<'_> {
    fn comm(&self) -> &str {
        &self.comm
    }

    fn exe(&self) -> Option<&str> {
        self.exe
            .get_or_init(|| {
                let p = std::fs::read_link(self.dir.join("exe")).ok()?;
                let s = p.to_string_lossy();
                (s.len() <= MAX_EXE).then(|| s.into_owned())
            })
            .as_deref()
    }

    fn listens_on(&self, port: u16) -> bool {
        self.listening
            .get_or_init(|| self.listening_ports())
            .contains(&port)
    }

    fn pod_namespace(&self) -> Option<&str> {
        self.pod().map(|p| p.namespace.as_str())
    }

    fn pod_label(&self, name: &str) -> Option<&str> {
        self.pod()?.labels.get(name).map(String::as_str)
    }
}

impl Proc<'_> {
    /// The process's pod, from its cgroup and this node's pod cache (the same
    /// mapping `service_name` uses).
    fn pod(&self) -> Option<&PodMeta> {
        self.pod
            .get_or_init(|| {
                let cache = self.ctx.pods?;
                let pid: u32 = self.dir.file_name()?.to_str()?.parse().ok()?;
                let cg = read_pod_cgroup(self.ctx.root, pid).ok()??;
                cache.by_pod_uid(&cg.pod_uid)
            })
            .as_deref()
    }
}

/// Listening TCP sockets (v4 and v6) on `ports` in the network namespace of
/// the process at `dir`: inode -> port.
fn listeners(dir: &Path, ports: &BTreeSet<u16>) -> HashMap<u64, u16> {
    let mut out = HashMap::new();
    if ports.is_empty() {
        return out;
    }
    for file in ["net/tcp", "net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            parse_listeners(&text, ports, &mut out);
        }
    }
    out
}

/// Lines of `/proc/net/tcp[6]` in state LISTEN (0A) on one of `ports`.
pub fn parse_listeners(text: &str, ports: &BTreeSet<u16>, out: &mut HashMap<u64, u16>) {
    for line in text.lines().skip(1) {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
            continue;
        };
        if *state != "0A" {
            continue;
        }
        let Some(port) = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let (true, Ok(inode)) = (ports.contains(&port), inode.parse::<u64>()) {
            out.insert(inode, port);
        }
    }
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listeners_are_listen_state_on_wanted_ports() {
        let mut out = HashMap::new();
        parse_listeners(TCP, &BTreeSet::from([8080]), &mut out);
        assert_eq!(
            out,
            HashMap::from([(4242, 8080)]),
            "established and port 22 left out"
        );
        parse_listeners("garbage\n  0: x y 0A\n", &BTreeSet::from([8080]), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    /// The real /proc: this test process is found by name and by the port it
    /// listens on, and left out when excluded.
    #[test]
    fn scans_the_real_proc() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let cfg: super::super::config::ScopeConfig =
            serde_yaml_ng::from_str(&format!("include:\n  - port: {port}\n")).unwrap();
        let r = scan(Path::new("/proc"), &Matcher::new(&cfg), None, 0).unwrap();
        assert!(r.tgids.contains(&me), "{r:?}");
        assert!(r.seen > 1);
        assert_eq!(
            r.tgids.len(),
            1,
            "only this process listens on {port}: {r:?}"
        );
        let cfg: super::super::config::ScopeConfig = serde_yaml_ng::from_str(&format!(
            "include:\n  - process: \"{}\"\nexclude:\n  - port: {port}\n",
            comm.trim()
        ))
        .unwrap();
        let r = scan(Path::new("/proc"), &Matcher::new(&cfg), None, 0).unwrap();
        assert!(!r.tgids.contains(&me), "{r:?}");
        // Skipping the caller's own tgid (the agent never traces itself).
        let cfg: super::super::config::ScopeConfig =
            serde_yaml_ng::from_str(&format!("include:\n  - port: {port}\n")).unwrap();
        let r = scan(Path::new("/proc"), &Matcher::new(&cfg), None, me).unwrap();
        assert!(r.tgids.is_empty(), "{r:?}");
    }
}
