//! `scope:` section of the config file: which processes the socket probes
//! trace. Empty `include` means every process (the default); `exclude` then
//! removes some. A selector matches a process when every condition it gives
//! matches, like the discovery settings of other eBPF agents (Beyla's
//! `discovery.services`, Coroot's and Pixie's process filters).
use std::collections::BTreeMap;
use std::time::Duration;

use globset::Glob;
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeConfig {
    /// Processes to trace: those matching any selector. Empty: every process.
    pub include: Vec<Selector>,
    /// Processes never traced, even when an `include` selector matches them.
    pub exclude: Vec<Selector>,
    /// How often `/proc` is scanned for processes that started, exited or
    /// changed: a process that starts matching is traced at most this long
    /// after (its first requests before that are not seen).
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            rescan_interval: Duration::from_secs(1),
        }
    }
}

/// One set of conditions; a process matches when every given one matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    /// Glob on the process name (`comm`, 15 characters at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// Glob on the executable path (`/proc/PID/exe`; needs CAP_SYS_PTRACE
    /// for other users' processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// A TCP port the process listens on (in its own network namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Glob on the namespace of the process's pod (`k8s.enabled` must find
    /// the API server; processes outside pods never match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_namespace: Option<String>,
    /// Pod labels, each value a glob; every one must be present and match.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub k8s_pod_labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether matching needs the pod of the process.
    pub fn needs_pod(&self) -> bool {
        self.k8s_namespace.is_some() || !self.k8s_pod_labels.is_empty()
    }
}

/// Most selectors per list: each is tried on every process at every rescan.
pub const MAX_SELECTORS: usize = 64;

impl ScopeConfig {
    /// Whether the user narrowed the scope (else every process is traced and
    /// nothing is scanned).
    pub fn is_active(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let interval = self.rescan_interval;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return Err(ConfigError::key(
                "scope.rescan_interval",
                format!(
                    "{} is outside 100ms..1h",
                    humantime::format_duration(interval)
                ),
            ));
        }
        for (list, selectors) in [("include", &self.include), ("exclude", &self.exclude)] {
            if selectors.len() > MAX_SELECTORS {
                return Err(ConfigError::key(
                    format!("scope.{list}"),
                    format!("{} selectors, at most {MAX_SELECTORS}", selectors.len()),
                ));
            }
            for (i, s) in selectors.iter().enumerate() {
                s.validate(&format!("scope.{list}[{i}]"))?;
            }
        }
        Ok(())
    }
}

impl Selector {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |f: &str| format!("{at}.{f}");
        if self.process.is_none() && self.exe.is_none() && self.port.is_none() && !self.needs_pod()
        {
            return Err(ConfigError::key(
                at,
                "selector has no condition (process, exe, port, k8s_namespace or k8s_pod_labels)",
            ));
        }
        if self.port == Some(0) {
            return Err(ConfigError::key(key("port"), "must be 1..65535"));
        }
        for (f, g) in [
            ("process", &self.process),
            ("exe", &self.exe),
            ("k8s_namespace", &self.k8s_namespace),
        ] {
            if let Some(g) = g {
                Glob::new(g).map_err(|e| ConfigError::key(key(f), e.to_string()))?;
            }
        }
        for (label, g) in &self.k8s_pod_labels {
            if label.is_empty() {
                return Err(ConfigError::key(
                    key("k8s_pod_labels"),
                    "a label name must not be empty",
                ));
            }
            Glob::new(g).map_err(|e| {
                ConfigError::key(format!("{at}.k8s_pod_labels.{label}"), e.to_string())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_yaml_with_env(text, Vec::<(String, String)>::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn default_scope_is_everything() {
        let c = parse("").unwrap();
        assert!(!c.scope.is_active());
    }

    #[test]
    fn selectors_parse() {
        let c = parse(
            "scope:\n  include:\n    - process: nginx\n    - port: 8080\n    - k8s_namespace: shop\n      k8s_pod_labels:\n        app: \"cart*\"\n  exclude:\n    - exe: /usr/bin/python3*\n  rescan_interval: 500ms\n",
        )
        .unwrap();
        assert!(c.scope.is_active());
        assert_eq!(c.scope.include.len(), 3);
        assert_eq!(c.scope.include[2].k8s_pod_labels["app"], "cart*");
        assert_eq!(c.scope.rescan_interval.as_millis(), 500);
    }

    #[test]
    fn unknown_selector_key_names_it() {
        let e = parse("scope:\n  include:\n    - proces: nginx\n").unwrap_err();
        assert!(
            e.contains("scope.include[0]") && e.contains("proces"),
            "{e}"
        );
    }

    #[test]
    fn empty_selector_is_an_error_naming_it() {
        let e = parse("scope:\n  exclude:\n    - {}\n").unwrap_err();
        assert!(e.contains("scope.exclude[0]"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            (
                "scope:\n  include:\n    - process: \"[\"\n",
                "scope.include[0].process",
            ),
            (
                "scope:\n  include:\n    - port: 0\n",
                "scope.include[0].port",
            ),
            (
                "scope:\n  include:\n    - port: 70000\n",
                "scope.include[0].port",
            ),
            (
                "scope:\n  include:\n    - k8s_pod_labels:\n        app: \"{\"\n",
                "scope.include[0].k8s_pod_labels.app",
            ),
            ("scope:\n  rescan_interval: 1ms\n", "scope.rescan_interval"),
            ("scope:\n  rescan_interval: soon\n", "scope.rescan_interval"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}
