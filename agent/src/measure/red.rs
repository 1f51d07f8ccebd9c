//! RED metrics per route in OpenTelemetry semantic conventions:
//! `http_server_request_duration_seconds` and
//! `http_client_request_duration_seconds`. Request and error rates derive
//! from their `_count` by status code. Each bucket keeps the trace id of a
//! request it counted as an OpenMetrics exemplar, so a slow bucket leads to
//! a real trace. A process in a pod adds its pod's `k8s_*` labels; outside
//! Kubernetes there are none (not even empty ones).
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use crate::export::metrics::Escaped;
use crate::request::k8s::identity::{K8sLabelSet, K8sLabels};
use crate::request::k8s::pod_series::{LivePods, PodSeries};

mod status;

use crate::request::Side;
use crate::request::route::RouteKey;
pub use status::StatusLabel;

/// Seconds. Dense around common SLO targets (100 ms, 250 ms, 500 ms, the
/// default 800 ms, 1 s) so `histogram_quantile` and burn rates are sharp
/// where they matter; 1 ms to 10 s.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1.0, 1.5, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedLabels {
    pub service_name: Escaped<Arc<str>>,
    pub http_request_method: Escaped<Arc<str>>,
    pub http_route: Escaped<Arc<str>>,
    /// Registered codes as they are, the rest by class (bounded).
    pub http_response_status_code: StatusLabel,
    pub gray_tag: Escaped<Arc<str>>,
    /// `network_protocol_version="2"` on HTTP/2 requests.
    #[prometheus(flatten)]
    pub protocol: ProtocolLabel,
    /// The serving (or calling) process's pod: values bounded by the pods
    /// on this node.
    #[prometheus(flatten)]
    pub k8s: K8sLabelSet,
}

/// OTel's `network.protocol.version`, written for HTTP/2 only: HTTP/1.x
/// series keep the label set they always had (dashboards, recording rules
/// and alerts keyed on it stay as they are); absent means 1.x.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct ProtocolLabel {
    pub http2: bool,
}

impl EncodeLabelSet for ProtocolLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        if self.http2 {
            prometheus_client::encoding::EncodeLabel::encode(
                &("network_protocol_version", "2"),
                encoder.encode_label(),
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: TraceId,
}

/// A trace id kept as its 16 bytes and written as 32 lowercase hex digits
/// (a `String` per exemplar cost an allocation of its own).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

impl EncodeLabelValue for TraceId {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let mut buf = [0u8; 32];
        let text = crate::request::trace::context::hex_lower_into(&self.0, &mut buf);
        std::fmt::Write::write_str(encoder, text)
    }
}

type DurationFamily = Family<
    RedLabels,
    HistogramWithExemplars<TraceExemplar>,
    fn() -> HistogramWithExemplars<TraceExemplar>,
>;

fn new_histogram() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
}

#[derive(Clone)]
pub struct RedMetrics {
    server: DurationFamily,
    client: DurationFamily,
    /// Handles on the families' histograms by the identity of their label
    /// values, which are interned `Arc`s (route table, gray tags, pod
    /// labels): a request finds its histogram by pointer instead of hashing
    /// the label strings under the family's lock (that showed in profiles).
    /// The keys hold their `Arc`s, so a pointer is never reused while
    /// cached. Bounded; cleared wholesale when full.
    handles: hashbrown::HashMap<HandleKey, HistogramWithExemplars<TraceExemplar>>,
    /// The series of each pod, removed when the pod is gone.
    pods: PodSeries<(Side, RedLabels)>,
}

/// Entries of [`RedMetrics::handles`] (about 100 bytes each).
const HANDLE_CACHE_CAP: usize = 16_384;

/// A label set by the identity of its interned values.
#[derive(Clone)]
struct HandleKey {
    side: Side,
    protocol: ProtocolLabel,
    status: StatusLabel,
    service: Arc<str>,
    method: Arc<str>,
    route: Arc<str>,
    gray_tag: Arc<str>,
    k8s: Option<Arc<K8sLabels>>,
}

impl PartialEq for HandleKey {
    fn eq(&self, o: &Self) -> bool {
        self.side == o.side
            && self.protocol == o.protocol
            && self.status == o.status
            && Arc::ptr_eq(&self.service, &o.service)
            && Arc::ptr_eq(&self.method, &o.method)
            && Arc::ptr_eq(&self.route, &o.route)
            && Arc::ptr_eq(&self.gray_tag, &o.gray_tag)
            && match (&self.k8s, &o.k8s) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for HandleKey {}

impl std::hash::Hash for HandleKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.side.hash(h);
        self.protocol.hash(h);
        self.status.hash(h);
        for s in [&self.service, &self.method, &self.route, &self.gray_tag] {
            (Arc::as_ptr(s) as *const u8 as usize).hash(h);
        }
        self.k8s
            .as_ref()
            .map_or(0, |k| Arc::as_ptr(k) as usize)
            .hash(h);
    }
}

impl Default for RedMetrics {
    fn default() -> Self {
        Self {
            server: Family::new_with_constructor(new_histogram as fn() -> _),
            client: Family::new_with_constructor(new_histogram as fn() -> _),
            handles: hashbrown::HashMap::new(),
            pods: PodSeries::default(),
        }
    }
}

impl RedMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests (first request byte read to last response byte written)",
            Unit::Seconds,
            self.server.clone(),
        );
        registry.register_with_unit(
            "http_client_request_duration",
            "Duration of HTTP client requests (first request byte written to last response byte read)",
            Unit::Seconds,
            self.client.clone(),
        );
    }

    /// Count one request. `trace_id` becomes the bucket's exemplar; `k8s`
    /// is the local process's pod, if it runs in one.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        side: Side,
        protocol: ProtocolLabel,
        route: &RouteKey,
        status: u16,
        gray_tag: &Arc<str>,
        k8s: Option<&Arc<K8sLabels>>,
        seconds: f64,
        trace_id: Option<[u8; 16]>,
        at: SystemTime,
    ) {
        let status = StatusLabel::of(status);
        let key = HandleKey {
            side,
            protocol,
            status,
            service: route.service.clone(),
            method: route.method.clone(),
            route: route.route.clone(),
            gray_tag: gray_tag.clone(),
            k8s: k8s.cloned(),
        };
        let exemplar = trace_id.map(|id| TraceExemplar {
            trace_id: TraceId(id),
        });
        if let Some(h) = self.handles.get(&key) {
            h.observe(seconds, exemplar, Some(at));
            return;
        }
        let labels = RedLabels {
            service_name: Escaped(route.service.clone()),
            http_request_method: Escaped(route.method.clone()),
            http_route: Escaped(route.route.clone()),
            http_response_status_code: status,
            gray_tag: Escaped(gray_tag.clone()),
            protocol,
            k8s: K8sLabelSet::of(k8s),
        };
        let fam = match side {
            Side::Server => &self.server,
            Side::Client => &self.client,
        };
        let h = fam.get_or_create(&labels).clone();
        h.observe(seconds, exemplar, Some(at));
        if let Some(pod) = k8s {
            self.pods.note(pod, &(side, labels));
        }
        if self.handles.len() >= HANDLE_CACHE_CAP {
            self.handles.clear();
        }
        self.handles.insert(key, h);
    }

    /// The pods with series here (counted, and whether new ones came
    /// since the last [`Self::forget_gone_pods`]).
    pub fn pod_series(&self) -> &PodSeries<(Side, RedLabels)> {
        &self.pods
    }

    /// Remove the series of pods that are not `live` any more, and the
    /// cached handles that keep their histograms.
    pub fn forget_gone_pods(&mut self, live: &LivePods) -> usize {
        let gone = self.pods.take_gone(live);
        if gone.is_empty() {
            return 0;
        }
        for (side, labels) in &gone {
            match side {
                Side::Server => self.server.remove(labels),
                Side::Client => self.client.remove(labels),
            };
        }
        self.handles
            .retain(|k, _| k.k8s.as_ref().is_none_or(|p| live.holds(p)));
        gone.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A registry with the RED families registered in it.
    /// One HTTP/1.x observation of 10 ms with no pod labels and no trace:
    /// what most tests here record.
    fn http1(red: &mut RedMetrics, side: Side, route: &RouteKey, status: u16, tag: &Arc<str>) {
        red.observe(
            side,
            ProtocolLabel::default(),
            route,
            status,
            tag,
            None,
            0.01,
            None,
            SystemTime::now(),
        );
    }

    pub(crate) fn registered() -> (Registry, RedMetrics) {
        let mut reg = Registry::default();
        let red = RedMetrics::default();
        red.register(&mut reg);
        (reg, red)
    }

    #[test]
    fn openmetrics_shows_exemplar_and_prometheus_text_passes_promtool() {
        let (reg, mut red) = registered();
        let route = RouteKey::new("shop", "GET", "/items/{id}");
        let (tag, now): (Arc<str>, _) = ("".into(), SystemTime::now());
        let trace = Some([
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ]);
        red.observe(
            Side::Server,
            ProtocolLabel::default(),
            &route,
            200,
            &tag,
            None,
            0.003,
            trace,
            now,
        );
        red.observe(
            Side::Server,
            ProtocolLabel::default(),
            &route,
            500,
            &tag,
            None,
            0.9,
            None,
            now,
        );
        red.observe(
            Side::Client,
            ProtocolLabel::default(),
            &route,
            200,
            &tag,
            None,
            0.02,
            None,
            now,
        );
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        assert!(om.contains("http_server_request_duration_seconds_bucket{le=\"0.005\",service_name=\"shop\",http_request_method=\"GET\",http_route=\"/items/{id}\",http_response_status_code=\"200\",gray_tag=\"\"} 1 # {trace_id=\"0af7651916cd43dd8448eb211c80319c\"} 0.003"), "{om}");
        assert!(
            om.contains("http_client_request_duration_seconds_count{"),
            "{om}"
        );
        let text = crate::export::metrics::openmetrics_to_prometheus(&om);
        assert!(!text.contains("trace_id"));
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&om);
    }

    #[test]
    fn http2_series_carry_the_protocol_version_and_http1_series_do_not() {
        let (reg, mut red) = registered();
        let route = RouteKey::new("web", "GET", "/a");
        let tag: Arc<str> = "".into();
        let now = SystemTime::now();
        let h2 = ProtocolLabel { http2: true };
        red.observe(Side::Server, h2, &route, 200, &tag, None, 0.01, None, now);
        http1(&mut red, Side::Server, &route, 200, &tag);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let base = "service_name=\"web\",http_request_method=\"GET\",http_route=\"/a\",http_response_status_code=\"200\",gray_tag=\"\"";
        assert!(text.contains(&format!("http_server_request_duration_seconds_count{{{base},network_protocol_version=\"2\"}} 1")), "{text}");
        assert!(
            text.contains(&format!(
                "http_server_request_duration_seconds_count{{{base}}} 1"
            )),
            "{text}"
        );
    }

    #[test]
    fn pod_labels_follow_the_route_labels_and_are_absent_outside_pods() {
        let (reg, mut red) = registered();
        let route = RouteKey::new("checkout", "POST", "/pay");
        let tag: Arc<str> = "".into();
        let pod = Arc::new(K8sLabels {
            k8s_namespace: "shop".into(),
            k8s_pod: "checkout-7d4b9c8f6d-x2x9q".into(),
            k8s_workload: "checkout".into(),
            k8s_container: "app".into(),
            workload_kind: Some(crate::request::k8s::identity::WorkloadKind::Deployment),
        });
        let at = SystemTime::now();
        red.observe(
            Side::Server,
            ProtocolLabel::default(),
            &route,
            200,
            &tag,
            Some(&pod),
            0.01,
            None,
            at,
        );
        http1(&mut red, Side::Server, &route, 200, &tag);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        let base = "service_name=\"checkout\",http_request_method=\"POST\",http_route=\"/pay\",http_response_status_code=\"200\",gray_tag=\"\"";
        let want = format!(
            "http_server_request_duration_seconds_count{{{base},k8s_namespace=\"shop\",k8s_pod=\"checkout-7d4b9c8f6d-x2x9q\",k8s_workload=\"checkout\",k8s_container=\"app\"}} 1"
        );
        assert!(om.contains(&want), "{want}\n{om}");
        let bare = format!("http_server_request_duration_seconds_count{{{base}}} 1");
        assert!(om.contains(&bare), "no k8s labels outside a pod: {om}");
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&om);
    }

    #[test]
    fn any_three_digits_from_a_server_make_a_bounded_set_of_series() {
        let (reg, mut red) = registered();
        let route = RouteKey::new("shop", "GET", "/a");
        let tag: Arc<str> = "".into();
        for code in 0..1000u16 {
            http1(&mut red, Side::Client, &route, code, &tag);
        }
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        let counts: Vec<&str> = om
            .lines()
            .filter(|l| l.starts_with("http_client_request_duration_seconds_count{"))
            .collect();
        let registered = (0..1000).filter(|c| status::is_registered(*c)).count();
        assert_eq!(counts.len(), registered + 6, "{counts:#?}");
        let five = "http_response_status_code=\"5xx\"";
        // 509 and 512..=599: 89 unregistered 5xx codes, one series.
        assert!(
            counts
                .iter()
                .any(|l| l.contains(five) && l.ends_with(" 89")),
            "{counts:#?}"
        );
        assert!(
            counts
                .iter()
                .any(|l| l.contains("http_response_status_code=\"503\""))
        );
    }

    #[test]
    fn cached_handles_count_into_the_family_series() {
        let (reg, mut red) = registered();
        let route = RouteKey::new("shop", "GET", "/a");
        let tag: Arc<str> = "".into();
        // Another Arc with the same text: a second cache entry, same series.
        let same_text: Arc<str> = "".into();
        for _ in 0..3 {
            http1(&mut red, Side::Server, &route, 200, &tag);
        }
        http1(&mut red, Side::Server, &route, 200, &same_text);
        red.handles.clear();
        http1(&mut red, Side::Server, &route, 200, &tag);
        http1(&mut red, Side::Server, &route, 500, &tag);
        http1(&mut red, Side::Client, &route, 200, &tag);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        let count = |side: &str, status: u16| {
            let prefix = format!(
                "http_{side}_request_duration_seconds_count{{service_name=\"shop\",http_request_method=\"GET\",http_route=\"/a\",http_response_status_code=\"{status}\",gray_tag=\"\"}} "
            );
            om.lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .collect::<Vec<_>>()
        };
        assert_eq!(count("server", 200), ["5"], "{om}");
        assert_eq!(count("server", 500), ["1"], "{om}");
        assert_eq!(count("client", 200), ["1"], "{om}");
    }
}
