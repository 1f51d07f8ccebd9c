//! The route table: configured patterns, the id heuristic, the per-service
//! cap, gray tags and method normalisation, with interned keys so a known
//! route costs no allocation.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::RouteKey;
use super::gray::{GrayCohorts, GrayCounters, GraySettings, OTHER_COHORT};
use super::template::{Seg, compile, heuristic, matches, path_of};
use crate::config::error::ConfigError;
use crate::request::RequestHeaders;

/// Route of requests beyond a service's cap.
pub const OVERFLOW_ROUTE: &str = "/{overflow}";
/// Route of requests whose path is not a route yet: it matches no configured
/// pattern and has not been seen `routes.admit_after` times within
/// `routes.admit_window`. Counted in the RED metrics, never judged or fused.
pub const UNADMITTED_ROUTE: &str = "/{unadmitted}";

/// The buckets that collect many paths: never one route to fuse.
pub fn is_bucket_route(route: &str) -> bool {
    route == OVERFLOW_ROUTE || route == UNADMITTED_ROUTE
}
/// Route of targets without a path (`*`, authority form of CONNECT).
pub const NO_PATH_ROUTE: &str = "{no_path}";
/// Gray tag of tagged requests outside the tracked cohorts.
pub const OTHER_GRAY_TAG: &str = OTHER_COHORT;

/// `routes:` section of the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Tried in order before the id heuristic; the first match names the route.
    pub patterns: Vec<RoutePattern>,
    /// Distinct (method, route) pairs per service; the rest go to `/{overflow}`.
    pub max_per_service: usize,
    /// A path that matches no configured pattern becomes a route of its own
    /// (its id-heuristic template) only after this many requests within
    /// `admit_window`; until then its requests go to `/{unadmitted}`.
    /// 1 admits at first sight.
    pub admit_after: u32,
    #[serde(with = "humantime_serde")]
    pub admit_window: Duration,
    /// A route with no request for this long leaves the table, freeing its
    /// room under the cap; it is admitted again like a new one.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Request headers carrying gray tags (`key:value` pairs, comma-separated);
    /// a key the header gives wins over the same key in the query parameter.
    pub gray_headers: Vec<String>,
    /// Query parameter read for gray tags after the headers.
    pub gray_query_param: String,
    /// Keys that define a cohort (`[version]`, `[env, abtest]`); empty: all pairs.
    pub gray_dimensions: Vec<String>,
    /// Cohorts kept as label values (written in any order, normalised);
    /// empty: the first `gray_max_cohorts_per_route` seen per route.
    pub gray_tags: Vec<String>,
    /// Cohorts learned per route when `gray_tags` is empty; the rest are `other`.
    pub gray_max_cohorts_per_route: usize,
    /// Longest cohort label value (normalised); longer ones are `other`.
    pub gray_max_len: usize,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            max_per_service: 500,
            admit_after: 3,
            admit_window: Duration::from_secs(600),
            idle_after: Duration::from_secs(3600),
            gray_headers: vec!["X-Gray-Tag".into()],
            gray_query_param: "gray".into(),
            gray_dimensions: Vec::new(),
            gray_tags: Vec::new(),
            gray_max_cohorts_per_route: 4,
            gray_max_len: 128,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutePattern {
    /// Glob on the service name; absent means every service.
    pub service: Option<String>,
    /// Request method (exact); absent means every method.
    pub method: Option<String>,
    /// `/users/{id}`, `/static/*`: `{name}` is one segment, a final `*` the rest.
    pub pattern: String,
}

impl RoutesConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, p) in self.patterns.iter().enumerate() {
            let key = |f: &str| format!("routes.patterns[{i}].{f}");
            compile(&p.pattern).map_err(|m| ConfigError::key(key("pattern"), m))?;
            if let Some(g) = &p.service {
                Glob::new(g).map_err(|e| ConfigError::key(key("service"), e.to_string()))?;
            }
            if let Some(m) = &p.method
                && normalize_method(m) == OTHER_METHOD
            {
                return Err(ConfigError::key(
                    key("method"),
                    format!("`{m}` is not a known HTTP method"),
                ));
            }
        }
        if self.max_per_service == 0 {
            return Err(ConfigError::key(
                "routes.max_per_service",
                "must be at least 1",
            ));
        }
        if self.admit_after == 0 || self.admit_after > 1000 {
            return Err(ConfigError::key(
                "routes.admit_after",
                "must be between 1 and 1000",
            ));
        }
        if self.admit_window < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "routes.admit_window",
                "must be at least 1s",
            ));
        }
        if self.idle_after < Duration::from_secs(1) {
            return Err(ConfigError::key("routes.idle_after", "must be at least 1s"));
        }
        for (i, t) in self.gray_tags.iter().enumerate() {
            if t.trim().is_empty() || t == OTHER_GRAY_TAG {
                return Err(ConfigError::key(
                    format!("routes.gray_tags[{i}]"),
                    "must be non-empty and not `other`",
                ));
            }
        }
        if self.gray_query_param.is_empty() {
            return Err(ConfigError::key(
                "routes.gray_query_param",
                "must not be empty",
            ));
        }
        for (i, h) in self.gray_headers.iter().enumerate() {
            let h = h.trim();
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                return Err(ConfigError::key(
                    format!("routes.gray_headers[{i}]"),
                    "must be a header name (letters, digits, `-`, `_`)",
                ));
            }
        }
        for (i, d) in self.gray_dimensions.iter().enumerate() {
            if d.trim().is_empty() || d.contains([',', ':']) {
                return Err(ConfigError::key(
                    format!("routes.gray_dimensions[{i}]"),
                    "must be a non-empty key without `,` or `:`",
                ));
            }
        }
        if self.gray_max_cohorts_per_route > 64 {
            return Err(ConfigError::key(
                "routes.gray_max_cohorts_per_route",
                "must be at most 64 (each cohort is a set of series per route)",
            ));
        }
        if !(8..=1024).contains(&self.gray_max_len) {
            return Err(ConfigError::key(
                "routes.gray_max_len",
                "must be between 8 and 1024",
            ));
        }
        Ok(())
    }
}

const OTHER_METHOD: &str = "_OTHER";
/// Methods OpenTelemetry's HTTP semantic conventions know.
const KNOWN_METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY",
];

/// `http.request.method` as OTel semconv wants it: known methods as sent
/// (they are case-sensitive), anything else `_OTHER`.
pub fn normalize_method(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(OTHER_METHOD)
}

/// Route table self metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteCounters {
    /// Requests sent to `/{overflow}` because their service was at its cap.
    pub overflow_requests: u64,
    /// Route keys admitted so far (all services; a route evicted and admitted
    /// again counts twice).
    pub routes: u64,
    /// Requests sent to `/{unadmitted}`.
    pub unadmitted_requests: u64,
    /// Routes that left the table after `idle_after` without a request.
    pub evicted_routes: u64,
}

/// An admitted route and when it last had a request (Unix seconds; shared
/// with the path cache, so a cached hit keeps it fresh).
struct Admitted {
    key: RouteKey,
    last_seen: Arc<AtomicU64>,
}

/// A path template on its way to admission.
struct Candidate {
    hits: u32,
    /// Start of its admission window (Unix seconds).
    since: u64,
    last: u64,
}

/// What the path cache remembers about a resolved path.
#[derive(Clone)]
enum Cached {
    Route(Arc<AtomicU64>),
    Overflow,
}

struct CompiledPattern {
    service: Option<GlobMatcher>,
    method: Option<String>,
    segs: Vec<Seg>,
    route: Arc<str>,
}

struct ServiceRoutes {
    name: Arc<str>,
    /// "METHOD route" → key.
    keys: HashMap<Box<str>, Admitted>,
    /// "METHOD route" → hits of a route not admitted yet; bounded.
    pending: HashMap<Box<str>, Candidate>,
    /// Per configured pattern: does it apply to this service?
    patterns: Vec<bool>,
    overflow: HashMap<&'static str, RouteKey>,
    unadmitted: HashMap<&'static str, RouteKey>,
}

pub struct RouteTable {
    patterns: Vec<CompiledPattern>,
    max_per_service: usize,
    admit_after: u32,
    admit_window: u64,
    idle_after: u64,
    /// Candidates kept per service (see [`pending_cap`]).
    pending_cap: usize,
    /// When the next idle sweep is due (Unix seconds).
    next_sweep: u64,
    services: HashMap<Box<str>, ServiceRoutes>,
    methods: HashMap<&'static str, Arc<str>>,
    gray: GrayCohorts,
    counters: RouteCounters,
    template: String,
    lookup: String,
    /// Recent (service, method, path) → key, so a repeated path skips the
    /// patterns and the id heuristic (they showed in profiles). Only admitted
    /// and overflow keys are cached (a pending path must be counted); the
    /// cache is cleared whenever routes are evicted, so it never holds a
    /// stale key. Bounded; cleared wholesale when full.
    cache: hashbrown::HashMap<Box<str>, (RouteKey, Cached)>,
    cache_key: String,
}

/// Entries of [`RouteTable`]'s path cache (about 100 bytes each).
const PATH_CACHE_CAP: usize = 4096;

/// Paths on their way to admission kept per service: twice the route cap,
/// within [64, 2048] (about 100 bytes each).
fn pending_cap(max_per_service: usize) -> usize {
    max_per_service.saturating_mul(2).clamp(64, 2048)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl RouteTable {
    /// Build from a validated config (invalid patterns are skipped).
    pub fn new(cfg: &RoutesConfig) -> Self {
        let patterns = cfg
            .patterns
            .iter()
            .filter_map(|p| {
                Some(CompiledPattern {
                    service: match &p.service {
                        Some(g) => Some(Glob::new(g).ok()?.compile_matcher()),
                        None => None,
                    },
                    method: p.method.clone(),
                    segs: compile(&p.pattern).ok()?,
                    route: p.pattern.as_str().into(),
                })
            })
            .collect();
        let methods = KNOWN_METHODS
            .iter()
            .chain(std::iter::once(&OTHER_METHOD))
            .map(|m| (*m, Arc::from(*m)))
            .collect();
        Self {
            patterns,
            max_per_service: cfg.max_per_service.max(1),
            admit_after: cfg.admit_after.max(1),
            admit_window: cfg.admit_window.as_secs().max(1),
            idle_after: cfg.idle_after.as_secs().max(1),
            pending_cap: pending_cap(cfg.max_per_service),
            next_sweep: 0,
            services: HashMap::new(),
            methods,
            gray: GrayCohorts::new(&GraySettings {
                query_param: &cfg.gray_query_param,
                dimensions: &cfg.gray_dimensions,
                configured: &cfg.gray_tags,
                max_per_route: cfg.gray_max_cohorts_per_route,
                max_len: cfg.gray_max_len,
            }),
            counters: RouteCounters::default(),
            template: String::new(),
            lookup: String::new(),
            cache: hashbrown::HashMap::new(),
            cache_key: String::new(),
        }
    }

    pub fn counters(&self) -> &RouteCounters {
        &self.counters
    }

    /// Route keys currently admitted for `service` (buckets excluded).
    pub fn routes_of(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, |s| s.keys.len())
    }

    /// The route key of a request now; see [`Self::route_at`].
    pub fn route_for(&mut self, service: &str, method: &str, target: &str) -> RouteKey {
        self.route_at(service, method, target, SystemTime::now())
    }

    /// The route key of a request seen at `now`. Allocates only the first
    /// time a key is seen.
    pub fn route_at(
        &mut self,
        service: &str,
        method: &str,
        target: &str,
        now: SystemTime,
    ) -> RouteKey {
        let now = unix_secs(now);
        if now >= self.next_sweep {
            self.sweep(now);
        }
        let method = normalize_method(method);
        let Some(path) = path_of(target) else {
            return self.resolve(service, method, target, now).0;
        };
        self.cache_key.clear();
        for part in [service, "\0", method, "\0", path] {
            self.cache_key.push_str(part);
        }
        if let Some((k, cached)) = self.cache.get(self.cache_key.as_str()) {
            match cached {
                Cached::Overflow => self.counters.overflow_requests += 1,
                Cached::Route(last) => last.store(now, Ordering::Relaxed),
            }
            return k.clone();
        }
        let (key, cached) = self.resolve(service, method, target, now);
        if let Some(cached) = cached {
            if self.cache.len() >= PATH_CACHE_CAP {
                self.cache.clear();
            }
            self.cache
                .insert(self.cache_key.as_str().into(), (key.clone(), cached));
        }
        key
    }

    /// Drops routes idle for `idle_after` and candidates whose window is
    /// over; runs every eighth of `idle_after` (at most once a second).
    fn sweep(&mut self, now: u64) {
        self.next_sweep = now + (self.idle_after / 8).max(1);
        let (idle, window) = (self.idle_after, self.admit_window);
        let mut evicted = 0;
        for svc in self.services.values_mut() {
            let before = svc.keys.len();
            svc.keys
                .retain(|_, a| now.saturating_sub(a.last_seen.load(Ordering::Relaxed)) < idle);
            evicted += before - svc.keys.len();
            svc.pending
                .retain(|_, c| now.saturating_sub(c.since) < window);
        }
        self.services
            .retain(|_, s| !s.keys.is_empty() || !s.pending.is_empty());
        if evicted > 0 {
            self.counters.evicted_routes += evicted as u64;
            self.cache.clear();
        }
    }

    /// [`Self::route_at`] without the cache; `method` is normalised. The
    /// second value says how the path cache may remember the answer (None:
    /// not at all, the path is still pending).
    fn resolve(
        &mut self,
        service: &str,
        method: &'static str,
        target: &str,
        now: u64,
    ) -> (RouteKey, Option<Cached>) {
        if !self.services.contains_key(service) {
            let applies = self
                .patterns
                .iter()
                .map(|p| p.service.as_ref().is_none_or(|g| g.is_match(service)))
                .collect();
            self.services.insert(
                service.into(),
                ServiceRoutes {
                    name: service.into(),
                    keys: HashMap::new(),
                    pending: HashMap::new(),
                    patterns: applies,
                    overflow: HashMap::new(),
                    unadmitted: HashMap::new(),
                },
            );
        }
        let svc = self.services.get_mut(service).expect("inserted above");
        let method_arc = &self.methods[method];
        // The configured route, or the heuristic template in `self.template`.
        let configured = match path_of(target) {
            None => None,
            Some(path) => {
                let hit = self
                    .patterns
                    .iter()
                    .zip(&svc.patterns)
                    .find(|(p, applies)| {
                        **applies
                            && p.method.as_deref().is_none_or(|m| m == method)
                            && matches(&p.segs, path)
                    });
                match hit {
                    Some((p, _)) => Some(p.route.clone()),
                    None => {
                        heuristic(path, &mut self.template);
                        None
                    }
                }
            }
        };
        let route: &str = match (&configured, path_of(target)) {
            (Some(r), _) => r,
            (None, Some(_)) => &self.template,
            (None, None) => NO_PATH_ROUTE,
        };
        self.lookup.clear();
        self.lookup.push_str(method);
        self.lookup.push(' ');
        self.lookup.push_str(route);
        if let Some(a) = svc.keys.get(self.lookup.as_str()) {
            a.last_seen.store(now, Ordering::Relaxed);
            return (a.key.clone(), Some(Cached::Route(a.last_seen.clone())));
        }
        // At the cap every new route is overflow, pending or not.
        if svc.keys.len() >= self.max_per_service {
            self.counters.overflow_requests += 1;
            let name = svc.name.clone();
            let key = svc
                .overflow
                .entry(method)
                .or_insert_with(|| RouteKey {
                    service: name,
                    method: method_arc.clone(),
                    route: OVERFLOW_ROUTE.into(),
                })
                .clone();
            return (key, Some(Cached::Overflow));
        }
        // A configured pattern is a route by decision; anything else must
        // earn it, so a flood of one-off paths cannot fill the cap.
        if configured.is_none()
            && !admit(
                &mut svc.pending,
                &self.lookup,
                now,
                self.admit_after,
                self.admit_window,
                self.pending_cap,
            )
        {
            self.counters.unadmitted_requests += 1;
            let name = svc.name.clone();
            let key = svc
                .unadmitted
                .entry(method)
                .or_insert_with(|| RouteKey {
                    service: name,
                    method: method_arc.clone(),
                    route: UNADMITTED_ROUTE.into(),
                })
                .clone();
            return (key, None);
        }
        let key = RouteKey {
            service: svc.name.clone(),
            method: method_arc.clone(),
            route: configured.clone().unwrap_or_else(|| route.into()),
        };
        self.counters.routes += 1;
        let last_seen = Arc::new(AtomicU64::new(now));
        svc.keys.insert(
            self.lookup.as_str().into(),
            Admitted {
                key: key.clone(),
                last_seen: last_seen.clone(),
            },
        );
        (key, Some(Cached::Route(last_seen)))
    }

    /// The gray cohort of a request on `route` (see [`GrayCohorts::cohort`]).
    pub fn gray_tag(
        &mut self,
        route: &RouteKey,
        headers: &RequestHeaders,
        target: &str,
    ) -> Arc<str> {
        self.gray.cohort(route, headers, target)
    }

    pub fn gray_counters(&self) -> &GrayCounters {
        self.gray.counters()
    }
}

/// Counts one request of a not-yet-admitted route; true when it has now
/// been seen `after` times within `window` seconds (and leaves `pending`).
/// A full `pending` first drops candidates whose window is over, then the
/// half with the fewest hits, oldest first: one-off paths go, a path seen
/// again stays.
fn admit(
    pending: &mut HashMap<Box<str>, Candidate>,
    lookup: &str,
    now: u64,
    after: u32,
    window: u64,
    cap: usize,
) -> bool {
    if after <= 1 {
        return true;
    }
    if let Some(c) = pending.get_mut(lookup) {
        if now.saturating_sub(c.since) >= window {
            *c = Candidate {
                hits: 0,
                since: now,
                last: now,
            };
        }
        c.hits += 1;
        c.last = now;
        if c.hits >= after {
            pending.remove(lookup);
            return true;
        }
        return false;
    }
    if pending.len() >= cap {
        pending.retain(|_, c| now.saturating_sub(c.since) < window);
    }
    if pending.len() >= cap {
        let mut order: Vec<(u32, u64)> = pending.values().map(|c| (c.hits, c.last)).collect();
        order.sort_unstable();
        // Keep the better half: more hits, then more recent.
        let cut = order[order.len() / 2];
        pending.retain(|_, c| (c.hits, c.last) > cut);
    }
    pending.insert(
        lookup.into(),
        Candidate {
            hits: 1,
            since: now,
            last: now,
        },
    );
    false
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod admission_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let cfg: RoutesConfig = serde_yaml_ng::from_str(yaml).unwrap();
        cfg.validate().unwrap();
        RouteTable::new(&cfg)
    }

    #[test]
    fn configured_patterns_win_then_heuristic() {
        let mut t = table(
            // Naming only: admit at first sight.
            "admit_after: 1\npatterns:\n  - {service: 'shop*', pattern: '/static/*'}\n  - {method: GET, pattern: '/users/{name}'}\n",
        );
        let k = t.route_for("shop-api", "GET", "/static/css/a.css?v=3");
        assert_eq!(&*k.route, "/static/*");
        assert_eq!(
            &*t.route_for("other", "GET", "/static/x").route,
            "/static/x"
        );
        assert_eq!(
            &*t.route_for("other", "GET", "/users/alice").route,
            "/users/{name}"
        );
        assert_eq!(
            &*t.route_for("other", "POST", "/users/alice").route,
            "/users/alice"
        );
        assert_eq!(
            &*t.route_for("other", "POST", "/orders/991?x=1").route,
            "/orders/{id}"
        );
        assert_eq!(&*t.route_for("other", "OPTIONS", "*").route, NO_PATH_ROUTE);
    }

    #[test]
    fn query_strings_never_enter_a_route() {
        let mut t = table("{}");
        for i in 0..100 {
            let k = t.route_for("s", "GET", &format!("/search?q=term{i}&page={i}"));
            // Admitted at its third request (admit_after: 3).
            let want = if i < 2 { UNADMITTED_ROUTE } else { "/search" };
            assert_eq!(&*k.route, want);
        }
        assert_eq!(t.routes_of("s"), 1);
    }

    #[test]
    fn methods_follow_semconv() {
        let mut t = table("{}");
        assert_eq!(&*t.route_for("s", "PATCH", "/a").method, "PATCH");
        assert_eq!(&*t.route_for("s", "get", "/a").method, "_OTHER");
        assert_eq!(&*t.route_for("s", "PROPFIND", "/a").method, "_OTHER");
        assert_eq!(normalize_method("QUERY"), "QUERY");
    }

    #[test]
    fn ten_thousand_distinct_urls_stay_at_the_cap() {
        // The cap itself: admit at first sight (flooding with admission is
        // `junk_paths_do_not_take_the_room_of_real_routes`).
        let mut t = table("max_per_service: 500\nadmit_after: 1\n");
        let words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "zeta"];
        let mut overflow = 0;
        for i in 0..10_000usize {
            // Names, not ids: the heuristic cannot fold them. Base-7 digits of i.
            let path: String = (0..5)
                .map(|d| format!("/{}", words[(i / 7usize.pow(d)) % 7]))
                .collect();
            let k = t.route_for("svc", "GET", &path);
            if &*k.route == OVERFLOW_ROUTE {
                overflow += 1;
            }
        }
        assert_eq!(t.routes_of("svc"), 500);
        assert_eq!(overflow, 10_000 - 500);
        assert_eq!(t.counters().overflow_requests, 9_500);
        // Another service has its own budget; known routes still resolve.
        assert_eq!(&*t.route_for("svc2", "GET", "/p/x").route, "/p/x");
        let first = "/alpha/alpha/alpha/alpha/alpha";
        assert_eq!(&*t.route_for("svc", "GET", first).route, first);
    }

    #[test]
    fn cached_paths_resolve_and_count_like_fresh_ones() {
        let mut t = table("max_per_service: 2\npatterns:\n  - {method: GET, pattern: '/u/{id}'}\n");
        let mut fresh =
            table("max_per_service: 2\npatterns:\n  - {method: GET, pattern: '/u/{id}'}\n");
        let targets = [
            "/u/7", "/a", "/b?x=1", "/c", "/u/7", "/a?y", "/c", "/c", "*",
        ];
        for (i, target) in targets.iter().cycle().take(3 * targets.len()).enumerate() {
            let method = if i % 4 == 0 { "POST" } else { "GET" };
            let cached = t.route_for("svc", method, target);
            // A table that has never cached this path: clear its cache each time.
            fresh.cache.clear();
            let direct = fresh.route_for("svc", method, target);
            assert_eq!(cached, direct, "{method} {target}");
        }
        assert_eq!(t.counters(), fresh.counters());
        assert!(t.counters().overflow_requests > 0);
    }

    #[test]
    fn known_routes_are_interned() {
        let mut t = table("{}");
        let a = t.route_for("s", "GET", "/u/1");
        let b = t.route_for("s", "GET", "/u/2");
        assert!(Arc::ptr_eq(&a.route, &b.route));
        assert!(Arc::ptr_eq(&a.service, &b.service));
    }

    #[test]
    fn gray_tags_are_bounded() {
        let mut t = table("gray_tags: [canary, blue]\n");
        let r = RouteKey::new("s", "GET", "/a");
        let mut h = RequestHeaders::default();
        assert_eq!(&*t.gray_tag(&r, &h, "/a"), "");
        assert_eq!(&*t.gray_tag(&r, &h, "/a?x=1&gray=canary"), "canary");
        assert_eq!(&*t.gray_tag(&r, &h, "/a?gray=evil"), "other");
        h.set(crate::request::Header::XGrayTag, "blue");
        assert_eq!(&*t.gray_tag(&r, &h, "/a?gray=canary"), "blue");
        h.set(crate::request::Header::XGrayTag, &"x".repeat(1000));
        assert_eq!(&*t.gray_tag(&r, &h, "/a"), "other");
        // Without a configured set the first cohorts of a route are learned.
        let mut t = table("gray_query_param: g\n");
        assert_eq!(
            &*t.gray_tag(&r, &RequestHeaders::default(), "/a?g=any"),
            "any"
        );
    }

    #[test]
    fn invalid_config_names_the_key() {
        let bad = [
            (
                "patterns: [{pattern: 'nope'}]",
                "routes.patterns[0].pattern",
            ),
            (
                "patterns: [{pattern: '/a', method: FETCH}]",
                "routes.patterns[0].method",
            ),
            (
                "patterns: [{pattern: '/a', service: '['}]",
                "routes.patterns[0].service",
            ),
            ("max_per_service: 0", "routes.max_per_service"),
            ("gray_tags: [other]", "routes.gray_tags[0]"),
            ("gray_headers: [\"X Gray\"]", "routes.gray_headers[0]"),
            ("gray_dimensions: [\"a:b\"]", "routes.gray_dimensions[0]"),
            (
                "gray_max_cohorts_per_route: 65",
                "routes.gray_max_cohorts_per_route",
            ),
            ("gray_max_len: 2", "routes.gray_max_len"),
        ];
        for (yaml, key) in bad {
            let cfg: RoutesConfig = serde_yaml_ng::from_str(yaml).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}
