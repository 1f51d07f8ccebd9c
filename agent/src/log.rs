//! The agent's own log: `log:` section of the config file and the subscriber
//! set up from it (text or JSON lines on stderr).
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

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

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.level.trim().is_empty() {
            return Err(ConfigError::key("log.level", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| ConfigError::key("log.level", e.to_string()))?;
        Ok(())
    }
}

/// Install the global subscriber. `validate` already checked the filter.
pub fn init(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
