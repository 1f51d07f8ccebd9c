//! Gray-release cohorts. A gray release marks its traffic with several
//! dimensions at once (`X-Gray-Tag: env:staging,zone:bj,abtest:v2`), falls
//! back to a query parameter (`?gray=env:staging`), and resolves a key given
//! twice by priority: header over query (over call context, once a protocol
//! carries one). The pairs are normalised (keys trimmed and lower-cased,
//! sorted) so the same tag written two ways is one cohort, and the cohorts of
//! a route are bounded: a client cannot mint label values at will.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::RouteKey;
use crate::request::RequestHeaders;

/// Cohort of tagged requests outside the tracked set.
pub const OTHER_COHORT: &str = "other";
/// Pairs read from one request; the rest are ignored (a tag is a handful of
/// dimensions, not a payload).
pub const MAX_PAIRS: usize = 8;
/// Routes whose learned cohorts are remembered; beyond, tagged requests of
/// new routes go to `other` (the route table caps routes long before this).
const MAX_LEARNING_ROUTES: usize = 65_536;

/// Why a tagged request was counted in `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherReason {
    /// The route already tracks its maximum of learned cohorts.
    RouteCap,
    /// Not one of the configured cohorts.
    NotConfigured,
    /// Longer than the label bound, or holding control characters.
    Invalid,
}

impl OtherReason {
    pub const ALL: [OtherReason; 3] = [Self::RouteCap, Self::NotConfigured, Self::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RouteCap => "route_cap",
            Self::NotConfigured => "not_configured",
            Self::Invalid => "invalid",
        }
    }
}

/// Tagged requests counted in `other`, by [`OtherReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrayCounters {
    pub other: [u64; 3],
}

impl GrayCounters {
    pub fn get(&self, r: OtherReason) -> u64 {
        self.other[r as usize]
    }
}

/// What [`GrayCohorts`] needs from the `routes:` config section.
pub struct GraySettings<'a> {
    pub query_param: &'a str,
    pub dimensions: &'a [String],
    pub configured: &'a [String],
    pub max_per_route: usize,
    pub max_len: usize,
}

/// Header names read as gray tags, lower-case. Set once at start from
/// `routes.gray_headers`: the head parser is a free function on the hot path
/// and the names are process-wide, so it reads them here instead of carrying
/// the config through every parse call. Unset (unit tests): `x-gray-tag`.
static GRAY_HEADERS: OnceLock<Vec<Box<[u8]>>> = OnceLock::new();

/// Make `names` the gray headers of this process (the first call wins).
pub fn set_header_names(names: &[String]) {
    let _ = GRAY_HEADERS.set(
        names
            .iter()
            .map(|n| {
                n.trim()
                    .to_ascii_lowercase()
                    .into_bytes()
                    .into_boxed_slice()
            })
            .collect(),
    );
}

/// Is `name` (as sent, any case) one of this process's gray headers?
pub fn is_gray_header(name: &[u8]) -> bool {
    match GRAY_HEADERS.get() {
        Some(names) => header_in(name, names),
        None => name.eq_ignore_ascii_case(b"x-gray-tag"),
    }
}

fn header_in(name: &[u8], names: &[Box<[u8]>]) -> bool {
    names
        .iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

/// The cohort of each tagged request, per route.
pub struct GrayCohorts {
    query_param: String,
    /// Lower-case keys that define a cohort; empty: every pair.
    dimensions: Vec<String>,
    /// Normalised configured cohorts; empty: learn the first ones per route.
    configured: HashMap<Box<str>, Arc<str>>,
    max_per_route: usize,
    max_len: usize,
    learned: HashMap<RouteKey, Vec<Arc<str>>>,
    /// One `Arc` per distinct cohort, so equal labels share their string.
    interned: HashMap<Box<str>, Arc<str>>,
    other: Arc<str>,
    none: Arc<str>,
    counters: GrayCounters,
    /// Reused per request: (key, value) pairs and the normalised form.
    pairs: Vec<(String, String)>,
    norm: String,
}

impl GrayCohorts {
    pub fn new(s: &GraySettings<'_>) -> Self {
        let mut g = Self {
            query_param: s.query_param.to_string(),
            dimensions: s
                .dimensions
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            configured: HashMap::new(),
            max_per_route: s.max_per_route,
            max_len: s.max_len,
            learned: HashMap::new(),
            interned: HashMap::new(),
            other: OTHER_COHORT.into(),
            none: "".into(),
            counters: GrayCounters::default(),
            pairs: Vec::new(),
            norm: String::new(),
        };
        for c in s.configured {
            g.pairs.clear();
            g.add_pairs(c);
            g.normalise();
            if !g.norm.is_empty() {
                let norm: Box<str> = g.norm.as_str().into();
                g.configured.insert(norm.clone(), Arc::from(norm));
            }
        }
        g
    }

    pub fn counters(&self) -> &GrayCounters {
        &self.counters
    }

    /// The cohort label of a request on `route`: `""` untagged, the
    /// normalised pairs (`env:staging,zone:bj`) when tracked, else `other`.
    pub fn cohort(&mut self, route: &RouteKey, headers: &RequestHeaders, target: &str) -> Arc<str> {
        self.pairs.clear();
        if let Some(v) = headers.x_gray_tag() {
            self.add_pairs(v);
        }
        if let Some(q) = query_param(target, &self.query_param) {
            if q.contains('%') || q.contains('+') {
                let decoded = percent_decode(q);
                self.add_pairs(&decoded);
            } else {
                self.add_pairs(q);
            }
        }
        if self.pairs.is_empty() {
            return self.none.clone();
        }
        self.normalise();
        if self.norm.is_empty() {
            return self.none.clone();
        }
        if self.norm.len() > self.max_len || self.norm.chars().any(char::is_control) {
            return self.count_other(OtherReason::Invalid);
        }
        if !self.configured.is_empty() {
            return match self.configured.get(self.norm.as_str()) {
                Some(c) => c.clone(),
                None => self.count_other(OtherReason::NotConfigured),
            };
        }
        let at_route_cap = self.learned.len() >= MAX_LEARNING_ROUTES;
        let known = match self.learned.get(route) {
            Some(list) => list.iter().find(|c| ***c == *self.norm).cloned(),
            None => None,
        };
        if let Some(c) = known {
            return c;
        }
        let full = self
            .learned
            .get(route)
            .map_or(at_route_cap, |l| l.len() >= self.max_per_route);
        if full {
            return self.count_other(OtherReason::RouteCap);
        }
        let c = match self.interned.get(self.norm.as_str()) {
            Some(c) => c.clone(),
            None => {
                let c: Arc<str> = self.norm.as_str().into();
                self.interned.insert(self.norm.as_str().into(), c.clone());
                c
            }
        };
        self.learned
            .entry(route.clone())
            .or_default()
            .push(c.clone());
        c
    }

    fn count_other(&mut self, r: OtherReason) -> Arc<str> {
        self.counters.other[r as usize] += 1;
        self.other.clone()
    }

    /// Add the pairs of one source whose keys are not there yet (an earlier
    /// source, or an earlier pair of this one, has priority).
    fn add_pairs(&mut self, src: &str) {
        for part in src.split(',') {
            if self.pairs.len() >= MAX_PAIRS {
                return;
            }
            let (key, value) = match part.split_once(':') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => ("", part.trim()),
            };
            if value.is_empty() {
                continue;
            }
            if !self.dimensions.is_empty()
                && !self.dimensions.iter().any(|d| d.eq_ignore_ascii_case(key))
            {
                continue;
            }
            if self.pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
                continue;
            }
            self.pairs
                .push((key.to_ascii_lowercase(), value.to_string()));
        }
    }

    /// `self.pairs` sorted by key into `self.norm`: `value` for a key-less
    /// tag (first), then `key:value`, comma-separated.
    fn normalise(&mut self) {
        self.pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.norm.clear();
        for (k, v) in &self.pairs {
            if !self.norm.is_empty() {
                self.norm.push(',');
            }
            if !k.is_empty() {
                self.norm.push_str(k);
                self.norm.push(':');
            }
            self.norm.push_str(v);
        }
    }
}

/// A cohort as people read it in alerts: `env=staging, zone=bj`.
pub fn describe(cohort: &str) -> String {
    cohort
        .split(',')
        .map(|p| match p.split_once(':') {
            Some((k, v)) => format!("{k}={v}"),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The (key, value) pairs of a normalised cohort, for span attributes.
pub fn pairs(cohort: &str) -> impl Iterator<Item = (&str, &str)> {
    cohort
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once(':').unwrap_or(("", p)))
}

/// The value of query parameter `name` in a request target (not decoded).
pub fn query_param<'t>(target: &'t str, name: &str) -> Option<&'t str> {
    let q = target.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or(q);
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// `%XX` and `+` decoded; invalid escapes stay as they are, invalid UTF-8
/// becomes U+FFFD (the result is a label value, never a path).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
#[path = "gray_tests.rs"]
mod tests;
