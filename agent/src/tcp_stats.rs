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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label value for endpoints past the per-service cap.
pub const OTHER_ENDPOINT: &str = "other";

/// Connect-latency buckets (seconds): loopback connects land in the first
/// buckets, a connect whose first SYN was lost takes ~1 s (RTO) and lands in
/// (1, 1.5].
pub const CONNECT_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service_name: Arc<str>,
    pub remote_endpoint: Arc<str>,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FailureReason {
    refused,
    timed_out,
    other,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub service_name: Arc<str>,
    pub remote_endpoint: Arc<str>,
    pub reason: FailureReason,
}

fn connect_histogram() -> Histogram {
    Histogram::new(CONNECT_BUCKETS)
}

/// The TCP metric families and the per-service endpoint cap.
pub struct TcpStats {
    cap: usize,
    endpoints: HashMap<Arc<str>, HashSet<Arc<str>>>,
    other: Arc<str>,
    pub retransmits: Family<EndpointLabels, Counter>,
    pub connect_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub connect_failures: Family<FailureLabels, Counter>,
    pub endpoint_overflow: Counter,
}

impl TcpStats {
    pub fn new(cfg: &TcpConfig, registry: &mut Registry) -> Self {
        let s = Self {
            cap: cfg.max_remote_endpoints,
            endpoints: HashMap::new(),
            other: OTHER_ENDPOINT.into(),
            retransmits: Family::default(),
            connect_duration: Family::new_with_constructor(connect_histogram as fn() -> Histogram),
            connect_failures: Family::default(),
            endpoint_overflow: Counter::default(),
        };
        registry.register(
            "sloguard_tcp_retransmits",
            "TCP segments retransmitted, by owning service and remote endpoint",
            s.retransmits.clone(),
        );
        registry.register_with_unit(
            "sloguard_tcp_connect_duration",
            "TCP connect time (SYN_SENT to ESTABLISHED) of connections the service opened",
            prometheus_client::registry::Unit::Seconds,
            s.connect_duration.clone(),
        );
        registry.register(
            "sloguard_tcp_connect_failures",
            "TCP connects that failed (refused, timed out, other), by service and remote endpoint",
            s.connect_failures.clone(),
        );
        registry.register(
            "sloguard_tcp_remote_endpoints_overflow",
            "Observations whose remote endpoint was reported as \"other\" because of the per-service cap",
            s.endpoint_overflow.clone(),
        );
        s
    }

    /// The label value for `endpoint` under `service`, honouring the cap.
    pub fn endpoint_label(&mut self, service: &Arc<str>, endpoint: &str) -> Arc<str> {
        let set = self.endpoints.entry(service.clone()).or_default();
        if let Some(e) = set.get(endpoint) {
            return e.clone();
        }
        if set.len() >= self.cap {
            self.endpoint_overflow.inc();
            return self.other.clone();
        }
        let e: Arc<str> = endpoint.into();
        set.insert(e.clone());
        e
    }

    pub fn add_retransmits(&mut self, service: &Arc<str>, endpoint: &str, segs: u64) {
        self.retransmit_counter(service, endpoint).inc_by(segs);
    }

    /// The counter for (service, endpoint), for callers that cache it.
    pub fn retransmit_counter(&mut self, service: &Arc<str>, endpoint: &str) -> Counter {
        let remote_endpoint = self.endpoint_label(service, endpoint);
        self.retransmits
            .get_or_create(&EndpointLabels {
                service_name: service.clone(),
                remote_endpoint,
            })
            .clone()
    }

    pub fn observe_connect(&mut self, service: &Arc<str>, endpoint: &str, secs: f64) {
        let remote_endpoint = self.endpoint_label(service, endpoint);
        self.connect_duration
            .get_or_create(&EndpointLabels {
                service_name: service.clone(),
                remote_endpoint,
            })
            .observe(secs);
    }

    pub fn add_connect_failure(
        &mut self,
        service: &Arc<str>,
        endpoint: &str,
        reason: FailureReason,
    ) {
        let remote_endpoint = self.endpoint_label(service, endpoint);
        self.connect_failures
            .get_or_create(&FailureLabels {
                service_name: service.clone(),
                remote_endpoint,
                reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_cap_sends_the_rest_to_other() {
        let mut reg = Registry::default();
        let mut s = TcpStats::new(
            &TcpConfig {
                max_remote_endpoints: 2,
            },
            &mut reg,
        );
        let svc: Arc<str> = "api".into();
        s.add_retransmits(&svc, "10.0.0.1:5432", 1);
        s.add_retransmits(&svc, "10.0.0.2:5432", 1);
        s.add_retransmits(&svc, "10.0.0.3:5432", 4);
        s.add_retransmits(&svc, "10.0.0.1:5432", 1);
        let get = |ep: &str| {
            s.retransmits
                .get_or_create(&EndpointLabels {
                    service_name: svc.clone(),
                    remote_endpoint: ep.into(),
                })
                .get()
        };
        assert_eq!(get("10.0.0.1:5432"), 2);
        assert_eq!(get("other"), 4);
        assert_eq!(s.endpoint_overflow.get(), 1);
        // Another service has its own budget.
        let other_svc: Arc<str> = "web".into();
        assert_eq!(
            &*s.endpoint_label(&other_svc, "10.0.0.3:5432"),
            "10.0.0.3:5432"
        );
    }
}
