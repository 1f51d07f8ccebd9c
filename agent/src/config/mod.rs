//! The one YAML configuration file. Every key has a default (so an empty file
//! is a valid config); unknown keys and bad values are errors that name the key
//! by its full path; `SLOGUARD_*` environment variables override keys.
//!
//! Each component owns its section's struct (beside its code); this module only
//! assembles them. The commented reference file `config/sloguard.yaml` holds the
//! same defaults, and a test keeps the two in step.
use std::path::Path;

use serde::{Deserialize, Serialize};

mod env;
pub mod error;

pub use error::ConfigError;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Node name used in alert labels; empty means the host name.
    pub node_name: String,
    pub alerts: crate::respond::alert::AlertsConfig,
    pub log: crate::log::LogConfig,
    pub metrics: crate::export::metrics::MetricsConfig,
    pub probes: crate::kernel::probes::ProbesConfig,
    pub scope: crate::kernel::scope::ScopeConfig,
    pub services: crate::request::service::ServicesConfig,
    pub tcp: crate::conn::tcp_stats::TcpConfig,
    pub otlp: crate::export::otlp::OtlpConfig,
    pub request_logs: crate::export::reqlog::RequestLogConfig,
    pub fuse: crate::respond::fuse::FuseConfig,
    pub admin: crate::export::admin::AdminConfig,
    pub http: crate::protocol::http1::HttpConfig,
    pub routes: crate::request::route::RoutesConfig,
    pub slo: crate::measure::slo::SloConfig,
    pub k8s: crate::request::k8s::config::K8sConfig,
    pub snapshots: crate::respond::snapshot::SnapshotConfig,
    pub tls: crate::kernel::tls::TlsConfig,
}

impl Config {
    /// Load a config file, apply `SLOGUARD_*` overrides from the process
    /// environment, and validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml_with_env(&text, std::env::vars())
    }

    /// Defaults plus `SLOGUARD_*` overrides (no file).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_yaml_with_env("", std::env::vars())
    }

    /// Parse YAML text (empty means all defaults) with overrides from `env`.
    pub fn from_yaml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut doc: serde_yaml_ng::Value = if text.trim().is_empty() {
            serde_yaml_ng::Value::Mapping(Default::default())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?
        };
        if doc.is_null() {
            doc = serde_yaml_ng::Value::Mapping(Default::default());
        }
        for (var, value) in env {
            if let Some(path) = env::env_key_path(&var) {
                env::apply_override(&mut doc, &path, &value).map_err(|message| {
                    ConfigError::Env {
                        var: var.clone(),
                        message,
                    }
                })?;
            }
        }
        let cfg: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let message = env::strip_location(&e.inner().to_string());
            ConfigError::key(
                if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that serde cannot express (ranges, cross-field rules).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.alerts.validate()?;
        self.log.validate()?;
        self.probes.validate()?;
        self.scope.validate()?;
        self.services.validate()?;
        self.tcp.validate()?;
        self.otlp.validate()?;
        self.request_logs.validate()?;
        self.fuse.validate()?;
        self.admin.validate()?;
        self.http.validate()?;
        self.routes.validate()?;
        self.slo.validate()?;
        self.k8s.validate()?;
        self.snapshots.validate()?;
        self.tls.filter()?;
        Ok(())
    }

    /// The effective node name.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, Vec::<(String, String)>::new())
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = parse("metrics:\n  listne: 0.0.0.0:1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics"), "{e}");
        assert!(e.contains("listne"), "{e}");
    }

    #[test]
    fn bad_value_names_its_key() {
        let e = parse("metrics:\n  listen: not-an-address\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen"), "{e}");
    }

    #[test]
    fn bad_yaml_is_a_yaml_error() {
        let e = parse("metrics: [unclosed\n").unwrap_err();
        assert!(matches!(e, ConfigError::Yaml(_)), "{e}");
    }

    #[test]
    fn env_overrides_nested_keys() {
        let env = vec![
            (
                "SLOGUARD_METRICS__LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            ("SLOGUARD_LOG__FORMAT".to_string(), "json".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::from_yaml_with_env("log:\n  level: debug\n", env).unwrap();
        assert_eq!(c.metrics.listen.port(), 9999);
        assert_eq!(c.log.format, crate::log::LogFormat::Json);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn admin_token_env_is_not_a_config_override() {
        let env = vec![("SLOGUARD_ADMIN_TOKEN".to_string(), "t0ken".to_string())];
        assert_eq!(
            Config::from_yaml_with_env("", env).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn config_path_and_token_variables_are_not_overrides() {
        let env = vec![
            (
                "SLOGUARD_CONFIG".to_string(),
                "/etc/sloguard.yaml".to_string(),
            ),
            ("SLOGUARD_ADMIN_TOKEN".to_string(), "secret".to_string()),
        ];
        assert_eq!(
            Config::from_yaml_with_env("", env).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn env_override_with_unknown_key_is_an_error() {
        let env = vec![("SLOGUARD_METRICS__NOPE".to_string(), "1".to_string())];
        let e = Config::from_yaml_with_env("", env).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn ring_buffer_must_be_a_power_of_two() {
        let e = parse("probes:\n  ring_buffer_bytes: 5000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("probes.ring_buffer_bytes"), "{e}");
    }

    #[test]
    fn bad_log_level_names_key() {
        let e = parse("log:\n  level: \"=[\"\n").unwrap_err().to_string();
        assert!(e.contains("log.level"), "{e}");
    }
}

#[cfg(test)]
mod reference_file {
    use super::*;

    /// The commented reference file and the compiled-in defaults are one
    /// source of truth: same keys, same values.
    #[test]
    fn reference_file_equals_compiled_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sloguard.yaml");
        let text = std::fs::read_to_string(path).expect("config/sloguard.yaml");
        let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let defaults = serde_yaml_ng::to_value(Config::default()).unwrap();
        assert_eq!(
            file,
            defaults,
            "config/sloguard.yaml differs from Config::default(); defaults serialise as:\n{}",
            serde_yaml_ng::to_string(&Config::default()).unwrap()
        );
        let parsed = Config::from_yaml_with_env(&text, Vec::<(String, String)>::new()).unwrap();
        assert_eq!(parsed, Config::default());
    }
}
