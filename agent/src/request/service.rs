//! `service_name` of a process: the first config rule that matches (process
//! name, executable, local port, cgroup path), else its pod's Kubernetes
//! identity, else the process name. A process in a pod on this node also
//! carries its pod's labels, whatever named it.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::request::k8s::identity::K8sLabels;
use crate::request::k8s::pods::PodCache;

/// Who owns a socket, as metrics and spans name it: `service_name` and, for
/// a process in a pod on this node, the pod's labels. Two `Arc`s: cloned per
/// connection and per request, resolved once per process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceIdentity {
    pub name: Arc<str>,
    /// `None` outside Kubernetes (or for a process in no known pod).
    pub k8s: Option<Arc<K8sLabels>>,
}

impl ServiceIdentity {
    /// An identity with a name only (no pod).
    pub fn named(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            k8s: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// Rules tried in order; the first whose every given condition matches
    /// names the service. No match: the process name (`comm`).
    pub rules: Vec<ServiceRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceRule {
    /// The service name to use.
    pub name: String,
    /// Glob on the process name (`comm`, 15 characters at most).
    pub process: Option<String>,
    /// Glob on the executable path (`/proc/PID/exe`).
    pub exe: Option<String>,
    /// Local TCP port of the connection (the listening port for servers).
    pub port: Option<u16>,
    /// Glob on the cgroup v2 path (`/proc/PID/cgroup`), e.g. `*/kubepods*/pod1234*`.
    pub cgroup: Option<String>,
}

impl ServicesConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, r) in self.rules.iter().enumerate() {
            let key = |f: &str| format!("services.rules[{i}].{f}");
            if r.name.trim().is_empty() {
                return Err(ConfigError::key(key("name"), "must not be empty"));
            }
            if r.process.is_none() && r.exe.is_none() && r.port.is_none() && r.cgroup.is_none() {
                return Err(ConfigError::key(
                    key("name"),
                    "rule has no condition (process, exe, port or cgroup)",
                ));
            }
            for (f, g) in [
                ("process", &r.process),
                ("exe", &r.exe),
                ("cgroup", &r.cgroup),
            ] {
                if let Some(g) = g {
                    Glob::new(g).map_err(|e| ConfigError::key(key(f), e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

/// What a rule is matched against.
#[derive(Clone, Debug, Default)]
pub struct ProcessFacts<'a> {
    pub comm: &'a str,
    pub exe: Option<&'a str>,
    pub cgroup: Option<&'a str>,
    pub local_port: Option<u16>,
}

struct CompiledRule {
    name: String,
    process: Option<GlobMatcher>,
    exe: Option<GlobMatcher>,
    cgroup: Option<GlobMatcher>,
    port: Option<u16>,
}

/// Compiled rules plus a per-process cache of what `/proc` says.
pub struct ServiceResolver {
    rules: Vec<CompiledRule>,
    needs_proc: bool,
    proc_cache: HashMap<u32, ProcInfo>,
    /// This node's pods: a process in a pod is named after its workload.
    k8s: Option<PodCache>,
    /// Where `/proc` is (tests point it at a directory they wrote).
    proc_root: PathBuf,
}

#[derive(Clone, Debug, Default)]
struct ProcInfo {
    exe: Option<String>,
    /// The cgroup v2 path, for `cgroup` rules.
    cgroup: Option<String>,
    /// The pod and container the cgroup file names, if any.
    pod: Option<crate::request::k8s::cgroup::PodCgroup>,
    /// The pod identity, looked up once per pod cache generation.
    k8s: Option<PodIdentity>,
    /// Generation of the pod cache `k8s` was looked up at (`None`: never).
    k8s_generation: Option<u64>,
}

/// A process's pod identity, shared by its connections.
#[derive(Clone, Debug)]
struct PodIdentity {
    service_name: Arc<str>,
    labels: Arc<K8sLabels>,
}

/// Processes remembered at most; cleared wholesale beyond (pids are reused).
const PROC_CACHE_CAP: usize = 4096;

impl ServiceResolver {
    /// `cfg` must have passed `validate()`.
    pub fn new(cfg: &ServicesConfig) -> Self {
        let m = |g: &Option<String>| {
            g.as_ref()
                .and_then(|g| Glob::new(g).ok())
                .map(|g| g.compile_matcher())
        };
        let rules: Vec<CompiledRule> = cfg
            .rules
            .iter()
            .map(|r| CompiledRule {
                name: r.name.clone(),
                process: m(&r.process),
                exe: m(&r.exe),
                cgroup: m(&r.cgroup),
                port: r.port,
            })
            .collect();
        let needs_proc = rules.iter().any(|r| r.exe.is_some() || r.cgroup.is_some());
        Self {
            rules,
            needs_proc,
            proc_cache: HashMap::new(),
            k8s: None,
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Read process facts under `root` instead of `/proc`.
    pub fn with_proc_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.set_proc_root(root);
        self
    }

    pub fn set_proc_root(&mut self, root: impl Into<PathBuf>) {
        self.proc_root = root.into();
        self.proc_cache.clear();
    }

    /// Name processes that run in this node's pods after their Kubernetes
    /// identity (`app.kubernetes.io/name`, workload, container) when no
    /// config rule names them, and label them with their pod either way.
    pub fn with_k8s(mut self, cache: Option<PodCache>) -> Self {
        self.needs_proc |= cache.is_some();
        self.k8s = cache;
        self
    }

    /// Pure matching, no `/proc` access.
    pub fn match_facts(&self, f: &ProcessFacts<'_>) -> String {
        self.match_rules(f).unwrap_or_else(|| fallback(f.comm))
    }

    fn match_rules(&self, f: &ProcessFacts<'_>) -> Option<String> {
        for r in &self.rules {
            let ok = r.process.as_ref().is_none_or(|g| g.is_match(f.comm))
                && r.exe
                    .as_ref()
                    .is_none_or(|g| f.exe.is_some_and(|e| g.is_match(e)))
                && r.cgroup
                    .as_ref()
                    .is_none_or(|g| f.cgroup.is_some_and(|c| g.is_match(c)))
                && r.port.is_none_or(|p| f.local_port == Some(p));
            if ok {
                return Some(r.name.clone());
            }
        }
        None
    }

    /// Resolve for a live process, reading `/proc/PID/{exe,cgroup}` once per
    /// pid and only when some rule or the pod cache needs them. The pod
    /// identity is looked up again only when the pod cache has changed since
    /// (a process seen before its pod reached the cache gets it later).
    pub fn resolve(&mut self, tgid: u32, comm: &str, local_port: Option<u16>) -> ServiceIdentity {
        let read = self.needs_proc && tgid != 0;
        if read {
            if self.proc_cache.len() >= PROC_CACHE_CAP {
                self.proc_cache.clear();
            }
            let root = &self.proc_root;
            let info = self
                .proc_cache
                .entry(tgid)
                .or_insert_with(|| read_proc(root, tgid));
            if let (Some(cache), Some(pod)) = (&self.k8s, &info.pod) {
                let generation = cache.generation();
                if info.k8s_generation != Some(generation) {
                    info.k8s_generation = Some(generation);
                    info.k8s = lookup_pod(cache, pod, info.k8s.take());
                }
            }
        }
        let info = if read {
            self.proc_cache.get(&tgid)
        } else {
            None
        };
        let facts = ProcessFacts {
            comm,
            exe: info.and_then(|i| i.exe.as_deref()),
            cgroup: info.and_then(|i| i.cgroup.as_deref()),
            local_port,
        };
        let pod = info.and_then(|i| i.k8s.as_ref());
        let name: Arc<str> = match (self.match_rules(&facts), pod) {
            (Some(rule), _) => rule.into(),
            (None, Some(p)) => p.service_name.clone(),
            (None, None) => fallback(comm).into(),
        };
        ServiceIdentity {
            name,
            k8s: pod.map(|p| p.labels.clone()),
        }
    }

    /// Forget a process (it exited).
    pub fn forget(&mut self, tgid: u32) {
        self.proc_cache.remove(&tgid);
    }
}

fn fallback(comm: &str) -> String {
    if comm.is_empty() {
        "unknown".into()
    } else {
        comm.to_string()
    }
}

/// The pod identity for a process's pod cgroup; the previous one is kept
/// (same `Arc`s, so metric label sets stay equal) when nothing changed.
fn lookup_pod(
    cache: &PodCache,
    pod: &crate::request::k8s::cgroup::PodCgroup,
    previous: Option<PodIdentity>,
) -> Option<PodIdentity> {
    let id = cache
        .snapshot()
        .identity(&pod.pod_uid, pod.container_id.as_deref())?;
    if let Some(p) = previous
        && *p.service_name == *id.service_name
        && *p.labels == id.labels
    {
        return Some(p);
    }
    Some(PodIdentity {
        service_name: id.service_name.into(),
        labels: Arc::new(id.labels),
    })
}

fn read_proc(root: &std::path::Path, tgid: u32) -> ProcInfo {
    let dir = root.join(tgid.to_string());
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.display().to_string());
    let content = std::fs::read_to_string(dir.join("cgroup")).ok();
    // cgroup v2: a single line "0::/path".
    let cgroup = content.as_deref().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
    });
    // The pod from the v2 line, else from a v1 controller line (hybrid hosts).
    let pod = content
        .as_deref()
        .and_then(crate::request::k8s::cgroup::parse_proc_cgroup);
    ProcInfo {
        exe,
        cgroup,
        pod,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> ServiceRule {
        ServiceRule {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn first_matching_rule_wins_and_comm_is_the_fallback() {
        let cfg = ServicesConfig {
            rules: vec![
                ServiceRule {
                    port: Some(8080),
                    ..rule("api")
                },
                ServiceRule {
                    process: Some("ngin*".into()),
                    ..rule("gateway")
                },
                ServiceRule {
                    process: Some("nginx".into()),
                    ..rule("never")
                },
            ],
        };
        cfg.validate().unwrap();
        let r = ServiceResolver::new(&cfg);
        let f = |comm, port| ProcessFacts {
            comm,
            local_port: port,
            ..Default::default()
        };
        assert_eq!(r.match_facts(&f("nginx", None)), "gateway");
        assert_eq!(r.match_facts(&f("nginx", Some(8080))), "api");
        assert_eq!(r.match_facts(&f("python3", None)), "python3");
        assert_eq!(r.match_facts(&f("", None)), "unknown");
    }

    #[test]
    fn all_conditions_of_a_rule_must_match() {
        let cfg = ServicesConfig {
            rules: vec![ServiceRule {
                process: Some("java".into()),
                cgroup: Some("*/payments/*".into()),
                ..rule("payments")
            }],
        };
        let r = ServiceResolver::new(&cfg);
        let mut f = ProcessFacts {
            comm: "java",
            ..Default::default()
        };
        assert_eq!(r.match_facts(&f), "java");
        f.cgroup = Some("/system.slice/payments/x.scope");
        assert_eq!(r.match_facts(&f), "payments");
    }

    #[test]
    fn invalid_rules_name_the_key() {
        let bad = ServicesConfig {
            rules: vec![rule("x")],
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("services.rules[0].name")
        );
        let bad = ServicesConfig {
            rules: vec![ServiceRule {
                process: Some("[".into()),
                ..rule("x")
            }],
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("services.rules[0].process")
        );
    }

    #[test]
    fn live_facts_come_from_the_proc_root_and_outside_pods_there_are_no_labels() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("77");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup"), "0::/system.slice/payments.service\n").unwrap();
        std::os::unix::fs::symlink("/usr/bin/java", dir.join("exe")).unwrap();
        let cfg = ServicesConfig {
            rules: vec![ServiceRule {
                cgroup: Some("*/payments.service".into()),
                exe: Some("/usr/bin/java".into()),
                ..rule("payments")
            }],
        };
        // A pod cache is present (Kubernetes on) but the process is in none.
        let mut r = ServiceResolver::new(&cfg)
            .with_k8s(Some(PodCache::new()))
            .with_proc_root(root.path());
        assert_eq!(
            r.resolve(77, "java", None),
            ServiceIdentity::named("payments")
        );
        // No such process: the name it had, no error.
        assert_eq!(r.resolve(78, "gone", None), ServiceIdentity::named("gone"));
    }
}
