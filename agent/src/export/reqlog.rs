//! Sampled request logs: one JSON line per kept request (with `log.format:
//! json`), carrying the ids that join it to its trace. Errors are kept
//! always by default, slow requests often, the rest rarely: logs explain
//! incidents without costing what full access logs cost.
//!
//! Whatever the shares say, at most `max_per_second` lines are written (a
//! token bucket, bursts of one second's worth): a client that aborts every
//! request makes every request an "error", and the agent must not turn
//! that into a log flood. Lines beyond are counted, not written. Fields
//! copied from requests (path, X-Request-Id) are cut to [`MAX_FIELD_BYTES`].
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogConfig {
    pub enabled: bool,
    /// Share of error requests logged (5xx, and 4xx on the client side).
    pub errors: f64,
    /// Share of requests slower than `slow_threshold` logged.
    pub slow: f64,
    #[serde(with = "humantime_serde")]
    pub slow_threshold: Duration,
    /// Share of all other requests logged.
    pub rest: f64,
    /// Lines written per second at most (errors included); beyond, dropped
    /// and counted in `sloguard_request_logs_dropped_total`.
    pub max_per_second: u32,
}

/// Request fields copied into a log line are cut to this many bytes.
pub const MAX_FIELD_BYTES: usize = 256;

impl Default for RequestLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            errors: 1.0,
            slow: 0.05,
            slow_threshold: Duration::from_secs(1),
            rest: 0.001,
            max_per_second: 100,
        }
    }
}

impl RequestLogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (k, v) in [
            ("errors", self.errors),
            ("slow", self.slow),
            ("rest", self.rest),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::key(
                    format!("request_logs.{k}"),
                    "must be between 0.0 and 1.0",
                ));
            }
        }
        if self.max_per_second == 0 {
            return Err(ConfigError::key(
                "request_logs.max_per_second",
                "must be at least 1 (enabled: false turns request logs off)",
            ));
        }
        Ok(())
    }
}

/// A token bucket: `rate` tokens a second, holding at most `rate`.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What one log line says.
pub struct RequestLogLine<'a> {
    pub side: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub request_id: Option<&'a str>,
    pub service: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub status: u16,
    pub duration: Duration,
    pub error: bool,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub tcp_retransmits: u32,
    /// The request's gray cohort (`""` untagged: the field is left out).
    pub gray_tag: &'a str,
    /// The local process's pod: `k8s_*` fields, left out outside pods.
    pub k8s: Option<&'a crate::request::k8s::identity::K8sLabels>,
}

/// The sampler; xorshift is plenty for a sampling coin and costs nothing.
pub struct RequestLogger {
    cfg: RequestLogConfig,
    rng: u64,
    limit: RateLimit,
    /// Lines sampled but not written because of `max_per_second`.
    pub dropped: Counter,
    pub logged: u64,
}

impl RequestLogger {
    pub fn new(cfg: RequestLogConfig) -> Self {
        let seed = rand::random::<u64>() | 1;
        Self {
            limit: RateLimit::new(cfg.max_per_second),
            cfg,
            rng: seed,
            dropped: Counter::default(),
            logged: 0,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sloguard_request_logs_dropped",
            "Request log lines sampled but not written: request_logs.max_per_second reached",
            self.dropped.clone(),
        );
    }

    fn coin(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        if p <= 0.0 {
            return false;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Whether to log a request with these properties.
    pub fn keep(&mut self, error: bool, duration: Duration) -> bool {
        self.keep_at(error, duration, Instant::now())
    }

    fn keep_at(&mut self, error: bool, duration: Duration, now: Instant) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let p = if error {
            self.cfg.errors
        } else if duration >= self.cfg.slow_threshold {
            self.cfg.slow
        } else {
            self.cfg.rest
        };
        if !self.coin(p) {
            return false;
        }
        if !self.limit.take(now) {
            self.dropped.inc();
            return false;
        }
        true
    }

    pub fn log(&mut self, l: &RequestLogLine<'_>) {
        self.logged += 1;
        tracing::info!(
            target: "sloguard::request",
            side = l.side,
            trace_id = l.trace_id,
            span_id = l.span_id,
            request_id = crate::request::redact::cap(l.request_id.unwrap_or(""), MAX_FIELD_BYTES),
            service_name = l.service,
            http_request_method = l.method,
            http_route = l.route,
            url_path = crate::request::redact::cap(l.path, MAX_FIELD_BYTES),
            url_scheme = l.scheme,
            http_response_status_code = l.status,
            duration_ms = l.duration.as_secs_f64() * 1e3,
            error = l.error,
            request_bytes = l.request_bytes,
            response_bytes = l.response_bytes,
            tcp_retransmits = l.tcp_retransmits,
            gray_tag = Some(l.gray_tag).filter(|g| !g.is_empty()),
            // `None` fields are not written at all.
            k8s_namespace = l.k8s.map(|k| &*k.k8s_namespace),
            k8s_pod = l.k8s.map(|k| &*k.k8s_pod),
            k8s_workload = l.k8s.map(|k| &*k.k8s_workload).filter(|v| !v.is_empty()),
            k8s_container = l.k8s.map(|k| &*k.k8s_container).filter(|v| !v.is_empty()),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_config() {
        let mut l = RequestLogger::new(RequestLogConfig {
            rest: 0.1,
            slow: 0.5,
            max_per_second: u32::MAX,
            ..Default::default()
        });
        let n = 20_000;
        let fast = Duration::from_millis(3);
        let errors = (0..n).filter(|_| l.keep(true, fast)).count();
        let slow = (0..n)
            .filter(|_| l.keep(false, Duration::from_secs(2)))
            .count();
        let rest = (0..n).filter(|_| l.keep(false, fast)).count();
        assert_eq!(errors, n);
        assert!((9_000..11_000).contains(&slow), "{slow}");
        assert!((1_600..2_400).contains(&rest), "{rest}");
        let mut off = RequestLogger::new(RequestLogConfig {
            enabled: false,
            ..Default::default()
        });
        assert!(!off.keep(true, fast));
    }

    /// Every request an error (an aborting client): at most
    /// `max_per_second` lines a second, the rest counted.
    #[test]
    fn lines_are_rate_limited_and_drops_counted() {
        let mut l = RequestLogger::new(RequestLogConfig {
            max_per_second: 50,
            ..Default::default()
        });
        let t0 = Instant::now();
        let fast = Duration::from_millis(1);
        let first = (0..10_000).filter(|_| l.keep_at(true, fast, t0)).count();
        assert_eq!(first, 50, "one second's burst");
        assert_eq!(l.dropped.get(), 10_000 - 50);
        // Half a second later: half a second's worth more.
        let t1 = t0 + Duration::from_millis(500);
        let later = (0..10_000).filter(|_| l.keep_at(true, fast, t1)).count();
        assert_eq!(later, 25);
        assert_eq!(l.dropped.get(), 20_000 - 75);
        // Long idle refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        let burst = (0..10_000).filter(|_| l.keep_at(true, fast, t2)).count();
        assert_eq!(burst, 50);
        let e = RequestLogConfig {
            max_per_second: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("request_logs.max_per_second"), "{e}");
    }

    #[test]
    fn shares_out_of_range_name_the_key() {
        let c = RequestLogConfig {
            slow: 1.5,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("request_logs.slow")
        );
    }

    /// A `Write` into shared memory, for capturing the JSON lines.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pod_fields_are_written_only_for_processes_in_pods() {
        let pod = crate::request::k8s::identity::K8sLabels {
            k8s_namespace: "shop".into(),
            k8s_pod: "checkout-7d9f-x2".into(),
            k8s_workload: "checkout".into(),
            k8s_container: "".into(),
            workload_kind: None,
        };
        // The pod's line is a canary's, the other is untagged.
        fn gray_of<T>(k8s: &Option<T>) -> &'static str {
            if k8s.is_some() { "version:canary" } else { "" }
        }
        let line = |k8s| RequestLogLine {
            side: "server",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id: "00f067aa0ba902b7",
            request_id: None,
            service: "checkout",
            method: "GET",
            route: "/items/{id}",
            path: "/items/7",
            scheme: "https",
            status: 200,
            duration: Duration::from_millis(3),
            error: false,
            request_bytes: 80,
            response_bytes: 300,
            tcp_retransmits: 0,
            gray_tag: gray_of(&k8s),
            k8s,
        };
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let mut logger = RequestLogger::new(RequestLogConfig::default());
        tracing::subscriber::with_default(subscriber, || {
            logger.log(&line(Some(&pod)));
            logger.log(&line(None));
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (in_pod, outside) = (&lines[0]["fields"], &lines[1]["fields"]);
        assert_eq!(in_pod["k8s_namespace"], "shop", "{text}");
        assert_eq!(in_pod["k8s_pod"], "checkout-7d9f-x2");
        assert_eq!(in_pod["k8s_workload"], "checkout");
        assert_eq!(in_pod["gray_tag"], "version:canary", "{text}");
        assert!(
            outside.get("gray_tag").is_none(),
            "untagged: left out: {text}"
        );
        // Unknown container: left out, not empty.
        assert!(in_pod.get("k8s_container").is_none(), "{text}");
        assert_eq!(outside["service_name"], "checkout");
        assert_eq!(outside["url_scheme"], "https", "{text}");
        for k in ["k8s_namespace", "k8s_pod", "k8s_workload", "k8s_container"] {
            assert!(outside.get(k).is_none(), "{k} outside a pod: {text}");
        }
    }
}
