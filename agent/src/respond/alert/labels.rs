//! An [`AlertEvent`] turned into what receivers see: Alertmanager labels,
//! annotations and the label-set fingerprint, computed once per event and
//! shared by every receiver.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::model::{AlertEvent, AlertKind, AlertStatus};

/// Alertmanager's `model.Fingerprint` of a label set: FNV-1a 64 over the
/// sorted label names and values, each followed by the separator byte 0xff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const SEPARATOR: u8 = 0xff;

impl Fingerprint {
    /// `labels` iterates in sorted name order (a `BTreeMap` does), as
    /// `model.LabelSet.Fingerprint` sorts the names first.
    pub fn of(labels: &BTreeMap<String, String>) -> Self {
        let mut h = FNV_OFFSET;
        let mut add = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(FNV_PRIME);
            }
        };
        for (name, value) in labels {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(h)
    }
}

impl std::fmt::Display for Fingerprint {
    /// 16 lowercase hex digits, as `model.Fingerprint.String()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One alert as delivered: the same for webhooks and Alertmanager.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: SystemTime,
    /// Set when resolved.
    pub ends_at: Option<SystemTime>,
    pub generator_url: String,
    pub fingerprint: Fingerprint,
}

impl Alert {
    /// Labels per docs/design.md ("Contracts"). A label whose value is empty (e.g. `gray_tag` for
    /// all traffic of a route) is left out: Prometheus and Alertmanager treat an
    /// empty label as absent, and the fingerprint must match theirs.
    pub fn from_event(ev: &AlertEvent, node: &str, generator_url: &str) -> Self {
        let mut labels = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                labels.insert(k.to_string(), v.to_string());
            }
        };
        put("alertname", ev.kind.alertname());
        put("severity", ev.kind.severity());
        put("service_name", &ev.route.service);
        put("http_route", &ev.route.route);
        put("http_request_method", &ev.route.method);
        put("gray_tag", &ev.gray_tag);
        put("node", node);
        let fingerprint = Fingerprint::of(&labels);
        Alert {
            status: ev.status,
            labels,
            annotations: annotations(ev),
            starts_at: ev.starts_at,
            ends_at: match ev.status {
                AlertStatus::Firing => None,
                // A resolve without a time means "now" to every receiver.
                AlertStatus::Resolved => Some(ev.ends_at.unwrap_or_else(SystemTime::now)),
            },
            generator_url: generator_url.to_string(),
            fingerprint,
        }
    }

    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

pub fn status_str(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

/// Seconds with millisecond precision and the unit, e.g. `1.250s`.
pub fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn ratio(r: f64) -> String {
    format!("{r:.4}")
}

fn annotations(ev: &AlertEvent) -> BTreeMap<String, String> {
    if ev.kind == AlertKind::FuseStateReset {
        // No route and no figures: the diagnosis says what happened.
        let mut a = BTreeMap::new();
        a.insert(
            "summary".into(),
            "fuse state file was unusable; moved aside, fusing runs in dry_run".into(),
        );
        a.insert("description".into(), ev.diagnosis.clone());
        return a;
    }
    let f = &ev.figures;
    let k = &ev.evidence;
    let mut a = BTreeMap::new();
    // The headline is the detector's own (one wording, one number format);
    // the summary adds the route it is about.
    let summary = format!(
        "{} on {}",
        crate::measure::slo::detectors::headline(ev.kind, &ev.gray_tag, f),
        ev.route
    );
    let mut description = format!(
        "{} requests, {} 5xx (error ratio {:.2} %, SLO {:.2} %), P99 {} (SLO {}) over {} period(s)",
        f.requests,
        f.errors_5xx,
        f.error_ratio * 100.0,
        f.slo_error_ratio * 100.0,
        seconds(f.p99),
        seconds(f.slo_p99),
        f.periods
    );
    if let (Some(m), Some(d)) = (f.baseline_median, f.baseline_mad) {
        let _ = write!(
            description,
            "; baseline P99 median {} MAD {}",
            seconds(m),
            seconds(d)
        );
    }
    let _ = write!(
        description,
        "; kernel: {} retransmitted segments, {} failed connects",
        k.retransmitted_segments, k.connect_failures
    );
    if let Some(c) = k.connect_p99 {
        let _ = write!(description, ", connect P99 {}", seconds(c));
    }
    if !ev.diagnosis.is_empty() {
        let _ = write!(description, ". {}", ev.diagnosis);
    }
    a.insert("summary".into(), summary);
    a.insert("description".into(), description);
    a.insert("requests".into(), f.requests.to_string());
    a.insert("errors_5xx".into(), f.errors_5xx.to_string());
    a.insert("error_ratio".into(), ratio(f.error_ratio));
    a.insert("p99".into(), seconds(f.p99));
    a.insert("slo_p99".into(), seconds(f.slo_p99));
    a.insert("slo_error_ratio".into(), ratio(f.slo_error_ratio));
    a.insert("periods".into(), f.periods.to_string());
    if let Some(m) = f.baseline_median {
        a.insert("baseline_p99_median".into(), seconds(m));
    }
    if let Some(m) = f.baseline_mad {
        a.insert("baseline_p99_mad".into(), seconds(m));
    }
    if !ev.sample_trace_ids.is_empty() {
        a.insert("trace_ids".into(), ev.sample_trace_ids.join(","));
    }
    if let Some(id) = &ev.snapshot_id {
        // The failed and healthy requests behind the alert: `sloguard snapshots get ID`.
        a.insert("snapshot_id".into(), id.clone());
    }
    a.insert(
        "tcp_retransmitted_segments".into(),
        k.retransmitted_segments.to_string(),
    );
    a.insert(
        "tcp_requests_with_retransmits".into(),
        k.requests_with_retransmits.to_string(),
    );
    a.insert(
        "tcp_connect_failures".into(),
        k.connect_failures.to_string(),
    );
    if let Some(c) = k.connect_p99 {
        a.insert("tcp_connect_p99".into(), seconds(c));
    }
    if let Some(p) = &k.top_retransmit_peer {
        a.insert("tcp_top_retransmit_peer".into(), p.clone());
    }
    if !ev.diagnosis.is_empty() {
        a.insert("diagnosis".into(), ev.diagnosis.clone());
    }
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Expected values from prometheus/common `model/signature_test.go`.
    #[test]
    fn fingerprint_matches_prometheus_common() {
        assert_eq!(Fingerprint::of(&set(&[])).0, 14695981039346656037);
        assert_eq!(
            Fingerprint::of(&set(&[
                ("name", "garland, briggs"),
                ("fear", "love is not enough")
            ]))
            .0,
            5799056148416392346
        );
        assert_eq!(
            Fingerprint::of(&set(&[("first-label", "first-label-value")])).0,
            5146282821936882169
        );
        assert_eq!(
            Fingerprint::of(&set(&[
                ("first-label", "first-label-value"),
                ("second-label", "second-label-value"),
                ("third-label", "third-label-value")
            ]))
            .0,
            13843036195897128121
        );
        assert_eq!(Fingerprint(0xab).to_string(), "00000000000000ab");
    }

    pub(crate) fn l2_event() -> AlertEvent {
        AlertEvent::example_l2(
            "/orders/{id}",
            AlertStatus::Firing,
            UNIX_EPOCH + Duration::from_millis(1_767_225_600_250),
        )
    }

    #[test]
    fn labels_and_annotations_follow_design() {
        let a = Alert::from_event(&l2_event(), "node-1", "");
        assert_eq!(
            a.labels,
            set(&[
                ("alertname", "SloguardP99SpikeWith5xxBurst"),
                ("severity", "critical"),
                ("service_name", "checkout"),
                ("http_route", "/orders/{id}"),
                ("http_request_method", "POST"),
                ("node", "node-1"),
            ]),
            "empty gray_tag is left out"
        );
        assert_eq!(a.fingerprint, Fingerprint::of(&a.labels));
        let an = &a.annotations;
        assert_eq!(an["p99"], "2.400s");
        assert_eq!(an["slo_p99"], "0.800s");
        assert_eq!(an["error_ratio"], "0.0500");
        assert_eq!(an["requests"], "1200");
        assert_eq!(an["errors_5xx"], "60");
        assert_eq!(an["baseline_p99_median"], "0.180s");
        assert_eq!(an["baseline_p99_mad"], "0.012s");
        assert_eq!(
            an["trace_ids"],
            "4bf92f3577b34da6a3ce929d0e0e4736,00f067aa0ba902b700f067aa0ba902b7"
        );
        assert_eq!(an["tcp_retransmitted_segments"], "41");
        assert_eq!(an["tcp_connect_failures"], "3");
        assert_eq!(an["tcp_connect_p99"], "0.210s");
        assert_eq!(an["tcp_top_retransmit_peer"], "10.0.3.7:5432");
        assert!(an["diagnosis"].contains("10.0.3.7:5432"));
        assert!(
            an["summary"].contains("checkout POST /orders/{id}"),
            "{an:?}"
        );
        assert!(an["description"].contains("41 retransmitted segments"));
        assert!(!an.contains_key("snapshot_id"));
        let mut frozen = l2_event();
        frozen.snapshot_id = Some("snap-1765000000-3".into());
        let f = Alert::from_event(&frozen, "node-1", "");
        assert_eq!(f.annotations["snapshot_id"], "snap-1765000000-3");
        assert_eq!(
            f.fingerprint, a.fingerprint,
            "the id is an annotation, not a label"
        );

        let mut gray = l2_event();
        gray.kind = AlertKind::GrayRollback;
        gray.gray_tag = "canary".into();
        gray.evidence = crate::respond::alert::model::KernelEvidence::default();
        gray.sample_trace_ids.clear();
        let g = Alert::from_event(&gray, "node-1", "");
        assert_eq!(g.labels["gray_tag"], "canary");
        assert_eq!(g.labels["severity"], "warning");
        assert_ne!(g.fingerprint, a.fingerprint);
        assert!(!g.annotations.contains_key("tcp_connect_p99"));
        assert!(!g.annotations.contains_key("tcp_top_retransmit_peer"));
        assert!(!g.annotations.contains_key("trace_ids"));
    }

    /// The summary and the diagnosis open with the same detector headline, in
    /// one number format; the summary adds the route.
    #[test]
    fn summary_is_the_detector_headline_on_the_route() {
        let ev = l2_event();
        let a = Alert::from_event(&ev, "node-1", "");
        assert_eq!(
            a.annotations["summary"],
            "P99 spike to 2.40s (baseline 180ms) with a 5xx burst (60 of 1200 requests) \
             on checkout POST /orders/{id}"
        );
        let mut gray = l2_event();
        gray.kind = AlertKind::GrayRollback;
        gray.gray_tag = "canary".into();
        assert_eq!(
            Alert::from_event(&gray, "n", "").annotations["summary"],
            "gray cohort canary: 5.0 % 5xx and P99 2.40s while stable is healthy \
             on checkout POST /orders/{id}"
        );
    }

    #[test]
    fn fingerprint_ignores_status_and_annotations() {
        let mut ev = l2_event();
        let firing = Alert::from_event(&ev, "n", "");
        ev.status = AlertStatus::Resolved;
        ev.figures.p99 = Duration::from_millis(100);
        ev.ends_at = Some(ev.starts_at + Duration::from_secs(60));
        let resolved = Alert::from_event(&ev, "n", "");
        assert_eq!(firing.fingerprint, resolved.fingerprint);
        assert_eq!(resolved.ends_at, ev.ends_at);
    }
}
