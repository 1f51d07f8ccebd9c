//! The `slo:` config section: evaluation period, per-route targets (glob
//! rules, first match wins) and every detector threshold.
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::request::route::RouteKey;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    /// Evaluation period: every figure and detector works per closed period.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Target P99 for routes no rule matches (or a rule that leaves it out).
    #[serde(with = "humantime_serde")]
    pub default_p99: Duration,
    /// Target 5xx ratio for routes no rule matches, e.g. 0.005 = 0.5 %.
    pub default_error_ratio: f64,
    /// Per-route targets; the first rule whose globs all match wins.
    pub rules: Vec<SloRule>,
    /// A period with fewer requests is never judged (no alert, healthy verdict).
    pub min_requests: u64,
    /// Error-based judgements need at least this many 5xx in the periods.
    pub min_errors: u64,
    /// Healthy periods kept for the P99 baseline (median and MAD).
    pub baseline_periods: usize,
    /// Baseline periods needed before spikes are judged at all.
    pub min_baseline_periods: usize,
    /// L2 spike: P99 > median + spike_mad_factor * mad_scale * MAD ...
    pub spike_mad_factor: f64,
    /// Scales the MAD to a standard deviation for normal data.
    pub mad_scale: f64,
    /// ... and P99 > spike_ratio * median.
    pub spike_ratio: f64,
    /// Consecutive spike periods needed for L2.
    pub spike_periods: u32,
    /// L2 5xx burst: 5xx ratio over the spike periods above this (with min_errors).
    pub burst_error_ratio: f64,
    /// Gray rollback: a gray tag's 5xx ratio above this ...
    pub gray_error_ratio: f64,
    /// ... and its P99 above this ...
    #[serde(with = "humantime_serde")]
    pub gray_p99: Duration,
    /// ... for this many consecutive periods while stable is healthy.
    pub gray_periods: u32,
    /// An alert resolves after this many consecutive healthy periods.
    pub resolve_after_periods: u32,
    /// Route × gray-tag entries tracked at most; requests of further entries
    /// are counted in `sloguard_slo_untracked_requests_total` and not judged.
    pub max_routes: usize,
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(10),
            default_p99: Duration::from_millis(800),
            default_error_ratio: 0.005,
            rules: Vec::new(),
            min_requests: 20,
            min_errors: 5,
            baseline_periods: 30,
            min_baseline_periods: 5,
            spike_mad_factor: 3.0,
            mad_scale: 1.4826,
            spike_ratio: 1.5,
            spike_periods: 2,
            burst_error_ratio: 0.005,
            gray_error_ratio: 0.05,
            gray_p99: Duration::from_secs(2),
            gray_periods: 3,
            resolve_after_periods: 2,
            max_routes: 5000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloRule {
    /// Glob on `service_name`.
    pub service: String,
    /// Glob on `http_request_method`.
    pub method: String,
    /// Glob on `http_route` (the template, e.g. `/users/{id}`).
    pub route: String,
    /// Target P99; unset means `default_p99`.
    #[serde(with = "humantime_serde")]
    pub p99: Option<Duration>,
    /// Target 5xx ratio; unset means `default_error_ratio`.
    pub error_ratio: Option<f64>,
}

impl Default for SloRule {
    fn default() -> Self {
        Self {
            service: "*".into(),
            method: "*".into(),
            route: "*".into(),
            p99: None,
            error_ratio: None,
        }
    }
}

/// Longest history a detector may ask for, so per-route memory stays small.
pub const MAX_STREAK_PERIODS: u32 = 60;

impl SloConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = |f: &str| format!("slo.{f}");
        if self.period < Duration::from_secs(1) || self.period > Duration::from_secs(3600) {
            return Err(ConfigError::key(k("period"), "must be between 1s and 1h"));
        }
        positive_duration(self.default_p99, &k("default_p99"))?;
        ratio(self.default_error_ratio, &k("default_error_ratio"))?;
        for (i, r) in self.rules.iter().enumerate() {
            let rk = |f: &str| format!("slo.rules[{i}].{f}");
            for (f, g) in [
                ("service", &r.service),
                ("method", &r.method),
                ("route", &r.route),
            ] {
                Glob::new(g).map_err(|e| ConfigError::key(rk(f), e.to_string()))?;
            }
            if let Some(p) = r.p99 {
                positive_duration(p, &rk("p99"))?;
            }
            if let Some(e) = r.error_ratio {
                ratio(e, &rk("error_ratio"))?;
            }
        }
        if self.min_requests == 0 {
            return Err(ConfigError::key(k("min_requests"), "must be at least 1"));
        }
        if self.min_errors == 0 {
            return Err(ConfigError::key(k("min_errors"), "must be at least 1"));
        }
        if !(1..=1000).contains(&self.baseline_periods) {
            return Err(ConfigError::key(
                k("baseline_periods"),
                "must be between 1 and 1000",
            ));
        }
        if self.min_baseline_periods == 0 || self.min_baseline_periods > self.baseline_periods {
            return Err(ConfigError::key(
                k("min_baseline_periods"),
                "must be between 1 and baseline_periods",
            ));
        }
        for (f, v) in [
            ("spike_mad_factor", self.spike_mad_factor),
            ("mad_scale", self.mad_scale),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError::key(k(f), "must be a number >= 0"));
            }
        }
        if !self.spike_ratio.is_finite() || self.spike_ratio < 1.0 {
            return Err(ConfigError::key(k("spike_ratio"), "must be a number >= 1"));
        }
        ratio(self.burst_error_ratio, &k("burst_error_ratio"))?;
        ratio(self.gray_error_ratio, &k("gray_error_ratio"))?;
        positive_duration(self.gray_p99, &k("gray_p99"))?;
        for (f, v) in [
            ("spike_periods", self.spike_periods),
            ("gray_periods", self.gray_periods),
            ("resolve_after_periods", self.resolve_after_periods),
        ] {
            if v == 0 || v > MAX_STREAK_PERIODS {
                return Err(ConfigError::key(
                    k(f),
                    format!("must be between 1 and {MAX_STREAK_PERIODS}"),
                ));
            }
        }
        if self.max_routes == 0 {
            return Err(ConfigError::key(k("max_routes"), "must be at least 1"));
        }
        Ok(())
    }
}

fn positive_duration(d: Duration, key: &str) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::key(key, "must be greater than 0"));
    }
    Ok(())
}

fn ratio(v: f64, key: &str) -> Result<(), ConfigError> {
    if !v.is_finite() || v <= 0.0 || v >= 1.0 {
        return Err(ConfigError::key(
            key,
            "must be a ratio between 0 and 1 (e.g. 0.005 for 0.5 %)",
        ));
    }
    Ok(())
}

/// A route's SLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SloTarget {
    pub p99: Duration,
    pub error_ratio: f64,
}

struct CompiledRule {
    service: GlobMatcher,
    method: GlobMatcher,
    route: GlobMatcher,
    target: SloTarget,
}

/// Rules compiled once; matched once per new route entry, not per request.
pub struct SloRules {
    rules: Vec<CompiledRule>,
    default: SloTarget,
}

impl SloRules {
    /// `cfg` must have passed `validate()` (an invalid glob then matches nothing).
    pub fn new(cfg: &SloConfig) -> Self {
        let default = SloTarget {
            p99: cfg.default_p99,
            error_ratio: cfg.default_error_ratio,
        };
        let m = |g: &str| {
            Glob::new(g)
                .unwrap_or_else(|_| Glob::new("").expect("empty glob is valid"))
                .compile_matcher()
        };
        let rules = cfg
            .rules
            .iter()
            .map(|r| CompiledRule {
                service: m(&r.service),
                method: m(&r.method),
                route: m(&r.route),
                target: SloTarget {
                    p99: r.p99.unwrap_or(default.p99),
                    error_ratio: r.error_ratio.unwrap_or(default.error_ratio),
                },
            })
            .collect();
        Self { rules, default }
    }

    pub fn target(&self, key: &RouteKey) -> SloTarget {
        self.rules
            .iter()
            .find(|r| {
                r.service.is_match(&*key.service)
                    && r.method.is_match(&*key.method)
                    && r.route.is_match(&*key.route)
            })
            .map(|r| r.target)
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, Vec::<(String, String)>::new())
    }

    #[test]
    fn defaults_validate() {
        SloConfig::default().validate().unwrap();
        assert_eq!(parse("").unwrap().slo, SloConfig::default());
    }

    /// docs/slo.md shows the section with its defaults; keep them equal.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let doc = include_str!("../../../../docs/slo.md");
        let yaml = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .expect("yaml block in docs/slo.md");
        let c = parse(yaml).unwrap();
        assert_eq!(c.slo, SloConfig::default());
        let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let defaults = serde_yaml_ng::to_value(SloConfig::default()).unwrap();
        assert_eq!(file["slo"], defaults, "every key is documented");
    }

    #[test]
    fn yaml_section_parses() {
        let c = parse(
            "slo:\n  period: 2s\n  min_requests: 5\n  rules:\n    - service: shop\n      route: /pay*\n      p99: 300ms\n      error_ratio: 0.001\n",
        )
        .unwrap();
        assert_eq!(c.slo.period, Duration::from_secs(2));
        assert_eq!(c.slo.rules[0].p99, Some(Duration::from_millis(300)));
        assert_eq!(c.slo.rules[0].method, "*");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            ("slo:\n  period: 10ms\n", "slo.period"),
            (
                "slo:\n  default_error_ratio: 5\n",
                "slo.default_error_ratio",
            ),
            ("slo:\n  spike_periods: 0\n", "slo.spike_periods"),
            ("slo:\n  spike_ratio: 0.5\n", "slo.spike_ratio"),
            ("slo:\n  max_routes: 0\n", "slo.max_routes"),
            (
                "slo:\n  min_baseline_periods: 40\n",
                "slo.min_baseline_periods",
            ),
            (
                "slo:\n  rules:\n    - route: \"/a[\"\n",
                "slo.rules[0].route",
            ),
            (
                "slo:\n  rules:\n    - error_ratio: 0\n",
                "slo.rules[0].error_ratio",
            ),
            ("slo:\n  gray_p99: 0s\n", "slo.gray_p99"),
            ("slo:\n  nope: 1\n", "nope"),
        ] {
            let e = parse(yaml).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let cfg = SloConfig {
            rules: vec![
                SloRule {
                    service: "shop".into(),
                    route: "/pay/*".into(),
                    p99: Some(Duration::from_millis(300)),
                    ..Default::default()
                },
                SloRule {
                    service: "shop".into(),
                    error_ratio: Some(0.01),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = SloRules::new(&cfg);
        let pay = r.target(&RouteKey::new("shop", "POST", "/pay/{id}"));
        assert_eq!(pay.p99, Duration::from_millis(300));
        assert_eq!(pay.error_ratio, 0.005);
        let other = r.target(&RouteKey::new("shop", "GET", "/cart"));
        assert_eq!(other.p99, Duration::from_millis(800));
        assert_eq!(other.error_ratio, 0.01);
        let none = r.target(&RouteKey::new("blog", "GET", "/"));
        assert_eq!(none.p99, Duration::from_millis(800));
    }
}
