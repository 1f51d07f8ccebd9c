//! TCP statistics per (service, remote endpoint): retransmitted segments,
//! connect latency, failed connects.
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Distinct remote endpoints (ip:port) kept as label values per service;
    /// the rest are reported as `remote_endpoint="other"`.
    pub max_remote_endpoints: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_remote_endpoints: 200,
        }
    }
}

impl TcpConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_remote_endpoints == 0 {
            return Err(ConfigError::key(
                "tcp.max_remote_endpoints",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
