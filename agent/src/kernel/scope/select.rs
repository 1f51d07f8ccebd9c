//! Matching processes against the scope's selectors. Pure: what a process
//! is comes through [`Facts`], which the `/proc` scan answers lazily (an
//! executable path, the sockets a process listens on and its pod are read
//! only when a selector asks for them).
use std::collections::BTreeSet;

use globset::{Glob, GlobMatcher};

use super::config::{ScopeConfig, Selector};

/// What a selector can ask about a process.
pub trait Facts {
    fn comm(&self) -> &str;
    fn exe(&self) -> Option<&str>;
    fn listens_on(&self, port: u16) -> bool;
    /// Namespace of the process's pod; `None` outside a known pod.
    fn pod_namespace(&self) -> Option<&str>;
    /// One label of the process's pod.
    fn pod_label(&self, name: &str) -> Option<&str>;
}

struct Compiled {
    process: Option<GlobMatcher>,
    exe: Option<GlobMatcher>,
    port: Option<u16>,
    namespace: Option<GlobMatcher>,
    labels: Vec<(String, GlobMatcher)>,
}

/// The scope's selectors, compiled.
pub struct Matcher {
    include: Vec<Compiled>,
    exclude: Vec<Compiled>,
}

fn glob(g: &Option<String>) -> Option<GlobMatcher> {
    // Validated at load: a glob that does not compile matches nothing.
    g.as_ref().map(|g| {
        Glob::new(g)
            .map(|g| g.compile_matcher())
            .unwrap_or_else(|_| Glob::new("").expect("empty glob").compile_matcher())
    })
}

fn compile(s: &Selector) -> Compiled {
    Compiled {
        process: glob(&s.process),
        exe: glob(&s.exe),
        port: s.port,
        namespace: glob(&s.k8s_namespace),
        labels: s
            .k8s_pod_labels
            .iter()
            .filter_map(|(k, v)| glob(&Some(v.clone())).map(|g| (k.clone(), g)))
            .collect(),
    }
}

impl Compiled {
    /// Cheap conditions first: the name is at hand, the rest costs reads.
    fn matches(&self, f: &impl Facts) -> bool {
        self.process.as_ref().is_none_or(|g| g.is_match(f.comm()))
            && self
                .exe
                .as_ref()
                .is_none_or(|g| f.exe().is_some_and(|e| g.is_match(e)))
            && self
                .namespace
                .as_ref()
                .is_none_or(|g| f.pod_namespace().is_some_and(|n| g.is_match(n)))
            && self
                .labels
                .iter()
                .all(|(k, g)| f.pod_label(k).is_some_and(|v| g.is_match(v)))
            && self.port.is_none_or(|p| f.listens_on(p))
    }
}

impl Matcher {
    /// `cfg` must have passed `validate()`.
    pub fn new(cfg: &ScopeConfig) -> Self {
        Self {
            include: cfg.include.iter().map(compile).collect(),
            exclude: cfg.exclude.iter().map(compile).collect(),
        }
    }

    /// In scope: matched by some `include` selector (or there are none) and
    /// by no `exclude` selector.
    pub fn admits(&self, f: &impl Facts) -> bool {
        (self.include.is_empty() || self.include.iter().any(|s| s.matches(f)))
            && !self.exclude.iter().any(|s| s.matches(f))
    }

    /// The ports any selector asks about: only listening sockets on these
    /// are looked up.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.include
            .iter()
            .chain(&self.exclude)
            .filter_map(|s| s.port)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    struct P {
        comm: &'static str,
        exe: Option<&'static str>,
        ports: Vec<u16>,
        ns: Option<&'static str>,
        labels: BTreeMap<&'static str, &'static str>,
    }

    impl Facts for P {
        fn comm(&self) -> &str {
            self.comm
        }
        fn exe(&self) -> Option<&str> {
            self.exe
        }
        fn listens_on(&self, port: u16) -> bool {
            self.ports.contains(&port)
        }
        fn pod_namespace(&self) -> Option<&str> {
            self.ns
        }
        fn pod_label(&self, name: &str) -> Option<&str> {
            self.labels.get(name).copied()
        }
    }

    fn matcher(yaml: &str) -> Matcher {
        let cfg: ScopeConfig = serde_yaml_ng::from_str(yaml).unwrap();
        cfg.validate().unwrap();
        Matcher::new(&cfg)
    }

    #[test]
    fn no_selectors_admit_everything() {
        let m = matcher("{}");
        assert!(m.admits(&P {
            comm: "anything",
            ..P::default()
        }));
    }

    #[test]
    fn include_by_name_exe_and_port() {
        let m = matcher("include:\n  - process: nginx\n  - exe: /opt/app/*\n  - port: 8080\n");
        let nginx = P {
            comm: "nginx",
            ..P::default()
        };
        let app = P {
            comm: "java",
            exe: Some("/opt/app/bin/java"),
            ..P::default()
        };
        let listener = P {
            comm: "python3",
            ports: vec![8080],
            ..P::default()
        };
        let other = P {
            comm: "python3",
            exe: Some("/usr/bin/python3.11"),
            ports: vec![8081],
            ..P::default()
        };
        assert!(m.admits(&nginx));
        assert!(m.admits(&app));
        assert!(m.admits(&listener));
        assert!(!m.admits(&other));
        assert_eq!(m.ports().into_iter().collect::<Vec<_>>(), vec![8080]);
    }

    #[test]
    fn every_condition_of_a_selector_must_match() {
        let m = matcher("include:\n  - process: nginx\n    port: 80\n");
        let wrong_port = P {
            comm: "nginx",
            ports: vec![81],
            ..P::default()
        };
        let right = P {
            comm: "nginx",
            ports: vec![81, 80],
            ..P::default()
        };
        assert!(!m.admits(&wrong_port));
        assert!(m.admits(&right));
    }

    #[test]
    fn exclude_wins_over_include_and_alone_keeps_the_rest() {
        let m = matcher("include:\n  - process: \"py*\"\nexclude:\n  - port: 9000\n");
        let p = |ports: Vec<u16>| P {
            comm: "python3",
            ports,
            ..P::default()
        };
        assert!(m.admits(&p(vec![8000])));
        assert!(!m.admits(&p(vec![9000])));
        let only_exclude = matcher("exclude:\n  - process: sshd\n");
        assert!(only_exclude.admits(&P {
            comm: "nginx",
            ..P::default()
        }));
        assert!(!only_exclude.admits(&P {
            comm: "sshd",
            ..P::default()
        }));
    }

    #[test]
    fn pods_by_namespace_and_labels() {
        let m = matcher(
            "include:\n  - k8s_namespace: \"shop-*\"\n    k8s_pod_labels:\n      app: cart\n      tier: \"*\"\n",
        );
        let pod = |ns, labels: &[(&'static str, &'static str)]| P {
            comm: "server",
            ns: Some(ns),
            labels: labels.iter().copied().collect(),
            ..P::default()
        };
        assert!(m.admits(&pod("shop-eu", &[("app", "cart"), ("tier", "web")])));
        assert!(
            !m.admits(&pod("shop-eu", &[("app", "cart")])),
            "tier missing"
        );
        assert!(!m.admits(&pod("shop-eu", &[("app", "carts"), ("tier", "web")])));
        assert!(!m.admits(&pod("kube-system", &[("app", "cart"), ("tier", "web")])));
        // A process outside any pod never matches a pod selector.
        assert!(!m.admits(&P {
            comm: "server",
            ..P::default()
        }));
    }
}
