//! The `k8s:` config section: whether the agent asks the API server for the
//! pods on its node, which node that is, and how often it re-lists them.
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::error::ConfigError;

/// `auto` (on when a Kubernetes config is present), `true` or `false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum K8sEnabled {
    #[default]
    Auto,
    On,
    Off,
}

impl Serialize for K8sEnabled {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::On => s.serialize_bool(true),
            Self::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for K8sEnabled {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML gives `true`/`false` as booleans and `auto` as a string; quoted
        // "true"/"false" are accepted too (environment overrides, Helm values).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(t) => match t.as_str() {
                "auto" => Ok(Self::Auto),
                "true" => Ok(Self::On),
                "false" => Ok(Self::Off),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not one of auto, true, false"
                ))),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sConfig {
    /// `auto`: on when KUBERNETES_SERVICE_HOST or KUBECONFIG is set.
    pub enabled: K8sEnabled,
    /// This node's name as the API server knows it; empty: env NODE_NAME.
    pub node_name: String,
    /// Full re-list of this node's pods at this interval, on top of the watch.
    #[serde(with = "humantime_serde")]
    pub resync: Duration,
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self {
            enabled: K8sEnabled::Auto,
            node_name: String::new(),
            resync: Duration::from_secs(600),
        }
    }
}

/// Least and most time between full re-lists.
const MIN_RESYNC: Duration = Duration::from_secs(10);
const MAX_RESYNC: Duration = Duration::from_secs(24 * 3600);

impl K8sConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.resync < MIN_RESYNC || self.resync > MAX_RESYNC {
            return Err(ConfigError::key(
                "k8s.resync",
                format!(
                    "{} is outside 10s..24h",
                    humantime::format_duration(self.resync)
                ),
            ));
        }
        if self
            .node_name
            .chars()
            .any(|c| c.is_whitespace() || c == ',')
        {
            return Err(ConfigError::key(
                "k8s.node_name",
                "must be a node name (no spaces or commas)",
            ));
        }
        Ok(())
    }

    /// Decide from the config and the environment (`env` looks a variable
    /// up) whether to watch pods, and for which node.
    pub fn decide(&self, env: &dyn Fn(&str) -> Option<String>) -> K8sDecision {
        let present = |v: &str| env(v).is_some_and(|s| !s.trim().is_empty());
        let have_config = present("KUBERNETES_SERVICE_HOST") || present("KUBECONFIG");
        let node = if self.node_name.is_empty() {
            env("NODE_NAME")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        } else {
            Some(self.node_name.clone())
        };
        match (self.enabled, have_config, node) {
            (K8sEnabled::Off, ..) => K8sDecision::Disabled("k8s.enabled is false"),
            (K8sEnabled::Auto, false, _) => K8sDecision::Disabled(
                "not in Kubernetes (no KUBERNETES_SERVICE_HOST or KUBECONFIG)",
            ),
            (K8sEnabled::Auto, true, None) => K8sDecision::Disabled(
                "no node name (set NODE_NAME from spec.nodeName or k8s.node_name)",
            ),
            (K8sEnabled::On, _, None) => K8sDecision::MissingNodeName,
            (_, _, Some(node)) => K8sDecision::Watch { node },
        }
    }
}

/// What [`K8sConfig::decide`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum K8sDecision {
    /// Watch the pods of this node.
    Watch { node: String },
    /// Off, with the reason to log once.
    Disabled(&'static str),
    /// `enabled: true` but no node name: a deployment error.
    MissingNodeName,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn auto_outside_kubernetes_is_disabled() {
        let d = K8sConfig::default().decide(&env_of(&[("NODE_NAME", "n1")]));
        assert!(matches!(d, K8sDecision::Disabled(r) if r.contains("not in Kubernetes")));
    }

    #[test]
    fn auto_in_cluster_watches_env_node() {
        let env = env_of(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("NODE_NAME", "n1")]);
        assert_eq!(
            K8sConfig::default().decide(&env),
            K8sDecision::Watch { node: "n1".into() }
        );
        let cfg = K8sConfig {
            node_name: "from-config".into(),
            ..Default::default()
        };
        assert_eq!(
            cfg.decide(&env),
            K8sDecision::Watch {
                node: "from-config".into()
            }
        );
    }

    #[test]
    fn kubeconfig_counts_as_present_and_missing_node_is_reported() {
        let env = env_of(&[("KUBECONFIG", "/tmp/kc")]);
        assert!(
            matches!(K8sConfig::default().decide(&env), K8sDecision::Disabled(r) if r.contains("node name"))
        );
        let on = K8sConfig {
            enabled: K8sEnabled::On,
            ..Default::default()
        };
        assert_eq!(on.decide(&env), K8sDecision::MissingNodeName);
        let off = K8sConfig {
            enabled: K8sEnabled::Off,
            ..Default::default()
        };
        let env = env_of(&[("KUBERNETES_SERVICE_HOST", "h"), ("NODE_NAME", "n")]);
        assert!(matches!(off.decide(&env), K8sDecision::Disabled(_)));
    }

    #[test]
    fn enabled_parses_auto_and_booleans() {
        for (text, want) in [
            ("enabled: auto", K8sEnabled::Auto),
            ("enabled: true", K8sEnabled::On),
            ("enabled: false", K8sEnabled::Off),
            ("enabled: \"false\"", K8sEnabled::Off),
        ] {
            let c: K8sConfig = serde_yaml_ng::from_str(text).unwrap();
            assert_eq!(c.enabled, want, "{text}");
            let back = serde_yaml_ng::to_string(&c).unwrap();
            let again: K8sConfig = serde_yaml_ng::from_str(&back).unwrap();
            assert_eq!(again, c);
        }
        assert!(serde_yaml_ng::from_str::<K8sConfig>("enabled: maybe").is_err());
        assert!(serde_yaml_ng::from_str::<K8sConfig>("enabled: 1").is_err());
    }

    #[test]
    fn resync_range_is_checked() {
        let c = K8sConfig {
            resync: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("k8s.resync"));
        assert!(K8sConfig::default().validate().is_ok());
    }
}
