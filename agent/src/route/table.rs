//! The route table: configured patterns, the id heuristic, the per-service
//! cap, gray tags and method normalisation, with interned keys so a known
//! route costs no allocation.
use std::collections::HashMap;
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::RouteKey;
use super::gray::{GrayCohorts, GrayCounters, GraySettings, OTHER_COHORT};
use super::template::{Seg, compile, heuristic, matches, path_of};
use crate::config::ConfigError;
use crate::request::RequestHeaders;

/// Route of requests beyond a service's cap.
pub const OVERFLOW_ROUTE: &str = "/{overflow}";
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
    /// Distinct route keys admitted so far (all services).
    pub routes: u64,
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
    keys: HashMap<Box<str>, RouteKey>,
    /// Per configured pattern: does it apply to this service?
    patterns: Vec<bool>,
    overflow: HashMap<&'static str, RouteKey>,
}

pub struct RouteTable {
    patterns: Vec<CompiledPattern>,
    max_per_service: usize,
    services: HashMap<Box<str>, ServiceRoutes>,
    methods: HashMap<&'static str, Arc<str>>,
    gray: GrayCohorts,
    counters: RouteCounters,
    template: String,
    lookup: String,
    /// Recent (service, method, path) → key, so a repeated path skips the
    /// patterns and the id heuristic (they showed in profiles). Entries never
    /// go stale: admitted keys are never removed and a service at its cap
    /// stays there. Bounded; cleared wholesale when full.
    /// The flag: the key is its service's overflow route (counted per hit).
    cache: hashbrown::HashMap<Box<str>, (RouteKey, bool)>,
    cache_key: String,
}

/// Entries of [`RouteTable`]'s path cache (about 100 bytes each).
const PATH_CACHE_CAP: usize = 4096;

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

    /// Distinct route keys currently known for `service` (overflow excluded).
    pub fn routes_of(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, |s| s.keys.len())
    }

    /// The route key of a request. Allocates only the first time a key is seen.
    pub fn route_for(&mut self, service: &str, method: &str, target: &str) -> RouteKey {
        let method = normalize_method(method);
        let Some(path) = path_of(target) else {
            return self.resolve(service, method, target);
        };
        self.cache_key.clear();
        for part in [service, "\0", method, "\0", path] {
            self.cache_key.push_str(part);
        }
        if let Some((k, overflow)) = self.cache.get(self.cache_key.as_str()) {
            if *overflow {
                self.counters.overflow_requests += 1;
            }
            return k.clone();
        }
        let before = self.counters.overflow_requests;
        let key = self.resolve(service, method, target);
        let overflow = self.counters.overflow_requests != before;
        if self.cache.len() >= PATH_CACHE_CAP {
            self.cache.clear();
        }
        self.cache
            .insert(self.cache_key.as_str().into(), (key.clone(), overflow));
        key
    }

    /// [`Self::route_for`] without the cache; `method` is normalised.
    fn resolve(&mut self, service: &str, method: &'static str, target: &str) -> RouteKey {
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
                    patterns: applies,
                    overflow: HashMap::new(),
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
        if let Some(k) = svc.keys.get(self.lookup.as_str()) {
            return k.clone();
        }
        if svc.keys.len() >= self.max_per_service {
            self.counters.overflow_requests += 1;
            let name = svc.name.clone();
            return svc
                .overflow
                .entry(method)
                .or_insert_with(|| RouteKey {
                    service: name,
                    method: method_arc.clone(),
                    route: OVERFLOW_ROUTE.into(),
                })
                .clone();
        }
        let key = RouteKey {
            service: svc.name.clone(),
            method: method_arc.clone(),
            route: configured.clone().unwrap_or_else(|| route.into()),
        };
        self.counters.routes += 1;
        svc.keys.insert(self.lookup.as_str().into(), key.clone());
        key
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
            "patterns:\n  - {service: 'shop*', pattern: '/static/*'}\n  - {method: GET, pattern: '/users/{name}'}\n",
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
            assert_eq!(&*k.route, "/search");
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
        let mut t = table("max_per_service: 500\n");
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
