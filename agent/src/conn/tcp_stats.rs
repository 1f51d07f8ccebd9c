//! TCP statistics per (service, remote endpoint): retransmitted segments,
//! connect latency, failed connects.
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

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

use crate::export::metrics::Escaped;
use crate::request::k8s::identity::K8sLabelSet;
use crate::request::k8s::pod_series::{LivePods, PodSeries};
use crate::request::service::ServiceIdentity;

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
    pub service_name: Escaped<Arc<str>>,
    pub remote_endpoint: Escaped<Arc<str>>,
    /// The owner's pod labels; none outside Kubernetes.
    #[prometheus(flatten)]
    pub k8s: K8sLabelSet,
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
    pub service_name: Escaped<Arc<str>>,
    pub remote_endpoint: Escaped<Arc<str>>,
    pub reason: FailureReason,
    #[prometheus(flatten)]
    pub k8s: K8sLabelSet,
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
    /// The series of each pod, removed when the pod is gone.
    pods: PodSeries<TcpSeries>,
}

/// A pod's series in one of the TCP families.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum TcpSeries {
    /// In `retransmits` and/or `connect_duration`.
    Endpoint(EndpointLabels),
    Failure(FailureLabels),
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
            pods: PodSeries::default(),
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

    /// The label value for `endpoint` under `service`, honouring the cap
    /// (per service name: the pods of one service share its budget).
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

    pub fn add_retransmits(&mut self, service: &ServiceIdentity, endpoint: &str, segs: u64) {
        self.retransmit_counter(service, endpoint).inc_by(segs);
    }

    /// The counter for (service, endpoint), for callers that cache it.
    pub fn retransmit_counter(&mut self, service: &ServiceIdentity, endpoint: &str) -> Counter {
        let labels = self.labels(service, endpoint);
        self.retransmits.get_or_create(&labels).clone()
    }

    pub fn observe_connect(&mut self, service: &ServiceIdentity, endpoint: &str, secs: f64) {
        let labels = self.labels(service, endpoint);
        self.connect_duration.get_or_create(&labels).observe(secs);
    }

    pub fn add_connect_failure(
        &mut self,
        service: &ServiceIdentity,
        endpoint: &str,
        reason: FailureReason,
    ) {
        let EndpointLabels {
            service_name,
            remote_endpoint,
            k8s,
        } = self.labels(service, endpoint);
        let labels = FailureLabels {
            service_name,
            remote_endpoint,
            reason,
            k8s,
        };
        self.connect_failures.get_or_create(&labels).inc();
        if let Some(pod) = &service.k8s {
            self.pods.note(pod, &TcpSeries::Failure(labels));
        }
    }

    /// The labels of (service, endpoint); a pod's are noted for removal.
    fn labels(&mut self, service: &ServiceIdentity, endpoint: &str) -> EndpointLabels {
        let labels = EndpointLabels {
            service_name: Escaped(service.name.clone()),
            remote_endpoint: Escaped(self.endpoint_label(&service.name, endpoint)),
            k8s: K8sLabelSet::of(service.k8s.as_ref()),
        };
        if let Some(pod) = &service.k8s {
            self.pods.note(pod, &TcpSeries::Endpoint(labels.clone()));
        }
        labels
    }

    /// The pods with series here (counted, and whether new ones came
    /// since the last [`Self::forget_gone_pods`]).
    pub fn pod_series(&self) -> &PodSeries<TcpSeries> {
        &self.pods
    }

    /// Remove the series of pods that are not `live` any more.
    pub fn forget_gone_pods(&mut self, live: &LivePods) -> usize {
        let gone = self.pods.take_gone(live);
        for s in &gone {
            match s {
                TcpSeries::Endpoint(l) => {
                    self.retransmits.remove(l);
                    self.connect_duration.remove(l);
                }
                TcpSeries::Failure(l) => {
                    self.connect_failures.remove(l);
                }
            }
        }
        gone.len()
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
        let svc = ServiceIdentity::named("api");
        s.add_retransmits(&svc, "10.0.0.1:5432", 1);
        s.add_retransmits(&svc, "10.0.0.2:5432", 1);
        s.add_retransmits(&svc, "10.0.0.3:5432", 4);
        s.add_retransmits(&svc, "10.0.0.1:5432", 1);
        let get = |ep: &str| {
            s.retransmits
                .get_or_create(&EndpointLabels {
                    service_name: Escaped(svc.name.clone()),
                    remote_endpoint: Escaped(ep.into()),
                    k8s: K8sLabelSet::default(),
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

    #[test]
    fn pods_of_a_service_share_its_endpoint_cap_and_carry_their_labels() {
        use crate::request::k8s::identity::K8sLabels;
        let mut reg = Registry::default();
        let mut s = TcpStats::new(
            &TcpConfig {
                max_remote_endpoints: 1,
            },
            &mut reg,
        );
        let pod = |name: &str| ServiceIdentity {
            name: "checkout".into(),
            k8s: Some(Arc::new(K8sLabels {
                k8s_namespace: "shop".into(),
                k8s_pod: name.into(),
                k8s_workload: "checkout".into(),
                k8s_container: "".into(),
                workload_kind: None,
            })),
        };
        s.observe_connect(&pod("checkout-a"), "10.0.0.1:5432", 0.001);
        s.observe_connect(&pod("checkout-b"), "10.0.0.2:5432", 0.001);
        s.add_connect_failure(&pod("checkout-b"), "10.0.0.1:5432", FailureReason::refused);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("sloguard_tcp_connect_duration_seconds_count{service_name=\"checkout\",remote_endpoint=\"10.0.0.1:5432\",k8s_namespace=\"shop\",k8s_pod=\"checkout-a\",k8s_workload=\"checkout\"} 1"), "{text}");
        assert!(text.contains("sloguard_tcp_connect_duration_seconds_count{service_name=\"checkout\",remote_endpoint=\"other\",k8s_namespace=\"shop\",k8s_pod=\"checkout-b\",k8s_workload=\"checkout\"} 1"), "one budget per service, not per pod: {text}");
        assert!(text.contains("sloguard_tcp_connect_failures_total{service_name=\"checkout\",remote_endpoint=\"10.0.0.1:5432\",reason=\"refused\",k8s_namespace=\"shop\",k8s_pod=\"checkout-b\",k8s_workload=\"checkout\"} 1"), "{text}");
        assert!(
            !text.contains("k8s_container"),
            "empty values are left out: {text}"
        );
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&text);
    }
}
