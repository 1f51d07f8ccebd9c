//! The one YAML configuration file. Every key has a default (so an empty file
//! is a valid config); unknown keys and bad values are errors that name the key
//! by its full path; `SLOGUARD_*` environment variables override keys.
//!
//! Each component owns its section's struct (beside its code); this module only
//! assembles them. The commented reference file `config/sloguard.yaml` holds the
//! same defaults, and a test keeps the two in step.
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors from loading or checking a config. Each names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config is not valid YAML: {0}")]
    Yaml(String),
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl ConfigError {
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Node name used in alert labels; empty means the host name.
    pub node_name: String,
    pub alerts: crate::respond::alert::delivery::AlertsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub probes: ProbesConfig,
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
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json` (JSON lines).
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `sloguard=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".parse().expect("valid default"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    /// Capture plain-HTTP/1.x payload prefixes (off: TCP signals only).
    pub capture_http: bool,
    /// Where tracefs is, mounted there at start when missing.
    pub tracefs: String,
    /// Capacity of the channel between the ring-buffer reader and the
    /// pipeline; when full the reader drops and counts (never blocks).
    pub channel_capacity: usize,
    /// Size of the kernel ring buffer in bytes: a power of two, at least one
    /// page. When it is full the kernel drops events and counts them.
    pub ring_buffer_bytes: u32,
    /// Have the kernel time every probe run (BPF_ENABLE_STATS while the agent
    /// runs) and export `sloguard_probe_run_seconds_total` and
    /// `sloguard_probe_runs_total` per program: the agent's in-kernel cost.
    /// Timing adds two clock reads to every run of every eBPF program on
    /// the host (tens of ns), so it is off unless you are measuring.
    pub run_time_stats: bool,
    /// Measurement only: where the HTTP probes stop (`attach`, `classify`,
    /// `transfer`), so `cargo xtask bench --only stages` can price each stage
    /// on a live load. Anything but `full` captures no HTTP requests.
    pub cost_stage: CostStage,
}

/// How far the HTTP probes go; see `agent_common::cost_stage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostStage {
    #[default]
    Full,
    Attach,
    Classify,
    Transfer,
}

impl CostStage {
    /// The value the probes read from `ProbeConfig::cost_stage`.
    pub fn code(self) -> u32 {
        use agent_common::cost_stage as c;
        match self {
            Self::Full => c::FULL,
            Self::Attach => c::ATTACH,
            Self::Classify => c::CLASSIFY,
            Self::Transfer => c::TRANSFER,
        }
    }
}

impl Default for ProbesConfig {
    fn default() -> Self {
        Self {
            capture_http: true,
            tracefs: "/sys/kernel/tracing".into(),
            channel_capacity: 65_536,
            ring_buffer_bytes: 8 * 1024 * 1024,
            run_time_stats: false,
            cost_stage: CostStage::Full,
        }
    }
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
            if let Some(path) = env_key_path(&var) {
                apply_override(&mut doc, &path, &value).map_err(|message| ConfigError::Env {
                    var: var.clone(),
                    message,
                })?;
            }
        }
        let cfg: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let message = strip_location(&e.inner().to_string());
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
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::key("log.level", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::key("log.level", e.to_string()))?;
        if self.probes.channel_capacity == 0 {
            return Err(ConfigError::key(
                "probes.channel_capacity",
                "must be at least 1",
            ));
        }
        let rb = self.probes.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(ConfigError::key(
                "probes.ring_buffer_bytes",
                format!("{rb} is not a power of two of at least 4096"),
            ));
        }
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

/// `SLOGUARD_METRICS__LISTEN` → `["metrics", "listen"]`. Double underscore
/// separates levels because keys themselves contain single underscores.
fn env_key_path(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix("SLOGUARD_")?;
    // Variables that are not config keys: the config path (`--config`) and
    // the admin token, read by name.
    if rest.is_empty() || var == "SLOGUARD_CONFIG" || var == crate::export::admin::DEFAULT_TOKEN_ENV
    {
        return None;
    }
    Some(rest.split("__").map(|p| p.to_ascii_lowercase()).collect())
}

fn apply_override(
    doc: &mut serde_yaml_ng::Value,
    path: &[String],
    raw: &str,
) -> Result<(), String> {
    // The value is read as a YAML scalar or flow collection, so `true`, `10s`,
    // `[a, b]` mean what they would in the file.
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(raw).map_err(|e| format!("value is not valid YAML: {e}"))?;
    let mut node = doc;
    for (i, key) in path.iter().enumerate() {
        let map = match node {
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => return Err(format!("`{}` is not a section", path[..i].join("."))),
        };
        let k = serde_yaml_ng::Value::String(key.clone());
        if i + 1 == path.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    }
    Ok(())
}

/// serde_yaml_ng appends "at line L column C" of the re-serialised document,
/// which means nothing to the user once env overrides were merged.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
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
        assert_eq!(c.log.format, LogFormat::Json);
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
