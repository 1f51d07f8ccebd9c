//! `probes:` section of the config file: what the kernel side captures and
//! how the ring buffer between it and the agent is sized.
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

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

impl ProbesConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.channel_capacity == 0 {
            return Err(ConfigError::key(
                "probes.channel_capacity",
                "must be at least 1",
            ));
        }
        let rb = self.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(ConfigError::key(
                "probes.ring_buffer_bytes",
                format!("{rb} is not a power of two of at least 4096"),
            ));
        }
        Ok(())
    }
}
