//! Resend snapshot requests to a service and compare each answer with what
//! the snapshot recorded: "before: 41/50 failed, p99 2.3 s; now: 0/50
//! failed, p99 12 ms". Bounded in count and time, rate limited, one request
//! at a time, and only safe methods unless told otherwise: a replay must
//! never be the next incident.
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Snapshot;
use crate::request::trace::context::TRACE_HEADERS;

/// Methods replayed without `--allow-unsafe`: those that change nothing on
/// the server (RFC 9110 "safe"). PUT and DELETE are idempotent but not safe,
/// and a snapshot has no body to send with them anyway.
pub const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// Request headers never resent: the new connection has its own host, and a
/// replay must not join the recorded request's trace.
fn resent(name: &str) -> bool {
    name != "host" && !TRACE_HEADERS.contains(&name)
}

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Scheme and authority the requests go to; their path and query come from the snapshots.
    pub target: reqwest::Url,
    pub max_requests: usize,
    pub max_time: Duration,
    /// Requests per second, at most.
    pub rate: f64,
    pub timeout: Duration,
    pub allow_unsafe: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "{count} of the requests use methods that are not safe to resend ({methods}); nothing was sent. Pass --allow-unsafe to resend them"
    )]
    Unsafe { count: usize, methods: String },
    #[error("--rate must be above 0 and at most 1000 (got {0})")]
    Rate(f64),
    #[error("--target {0}: must be an http:// or https:// URL with a host")]
    Target(String),
    #[error("nothing to replay: the set has no requests")]
    Empty,
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayResult {
    pub method: String,
    pub target: String,
    pub before_status: u16,
    pub before_ms: f64,
    /// `None`: no answer (connection refused, timeout); `error` says why.
    pub now_status: Option<u16>,
    pub now_ms: f64,
    pub error: Option<String>,
}

impl ReplayResult {
    pub fn failed_before(&self) -> bool {
        self.before_status == 0 || self.before_status >= 500
    }

    pub fn failed_now(&self) -> bool {
        self.now_status.is_none_or(|s| s >= 500)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub results: Vec<ReplayResult>,
    /// Snapshots not sent: over `max_requests` or past `max_time`.
    pub not_sent: usize,
    pub before_failed: usize,
    pub now_failed: usize,
    pub before_p99_ms: f64,
    pub now_p99_ms: f64,
}

impl ReplayReport {
    pub fn summary(&self) -> String {
        let n = self.results.len();
        let mut s = format!(
            "before: {}/{n} failed, p99 {}; now: {}/{n} failed, p99 {}",
            self.before_failed,
            fmt_ms(self.before_p99_ms),
            self.now_failed,
            fmt_ms(self.now_p99_ms)
        );
        if self.not_sent > 0 {
            s += &format!(" ({} not sent: --max-requests/--max-time)", self.not_sent);
        }
        s
    }

    pub fn recovered(&self) -> bool {
        !self.results.is_empty() && self.now_failed == 0
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// Nearest-rank P99 of `v` (ms).
fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64) * 0.99).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Checks that everything may be sent before sending anything.
pub fn check(snaps: &[Snapshot], opts: &ReplayOptions) -> Result<(), ReplayError> {
    if !(opts.rate > 0.0 && opts.rate <= 1000.0) {
        return Err(ReplayError::Rate(opts.rate));
    }
    if !matches!(opts.target.scheme(), "http" | "https") || opts.target.host_str().is_none() {
        return Err(ReplayError::Target(opts.target.to_string()));
    }
    if snaps.is_empty() {
        return Err(ReplayError::Empty);
    }
    if !opts.allow_unsafe {
        let bad: std::collections::BTreeSet<&str> = snaps
            .iter()
            .take(opts.max_requests)
            .map(|s| s.method.as_str())
            .filter(|m| !SAFE_METHODS.contains(m))
            .collect();
        if !bad.is_empty() {
            let count = snaps
                .iter()
                .take(opts.max_requests)
                .filter(|s| !SAFE_METHODS.contains(&s.method.as_str()))
                .count();
            let methods: Vec<String> = bad.iter().map(|m| super::diff::printable(m)).collect();
            return Err(ReplayError::Unsafe {
                count,
                methods: methods.join(", "),
            });
        }
    }
    Ok(())
}

/// Resend `snaps` one at a time, at most `rate` a second.
pub async fn replay(snaps: &[Snapshot], opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    check(snaps, opts)?;
    let client = reqwest::Client::builder()
        .timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let gap = Duration::from_secs_f64(1.0 / opts.rate);
    let start = Instant::now();
    let mut results = Vec::new();
    let mut next = tokio::time::Instant::now();
    for s in snaps.iter().take(opts.max_requests) {
        tokio::time::sleep_until(next).await;
        if start.elapsed() >= opts.max_time {
            break;
        }
        next = tokio::time::Instant::now() + gap;
        results.push(send(&client, s, opts).await);
    }
    let not_sent = snaps.len() - results.len();
    Ok(ReplayReport {
        before_failed: results.iter().filter(|r| r.failed_before()).count(),
        now_failed: results.iter().filter(|r| r.failed_now()).count(),
        before_p99_ms: p99(results.iter().map(|r| r.before_ms).collect()),
        now_p99_ms: p99(results.iter().map(|r| r.now_ms).collect()),
        results,
        not_sent,
    })
}

async fn send(client: &reqwest::Client, s: &Snapshot, opts: &ReplayOptions) -> ReplayResult {
    let path = if s.target.starts_with('/') {
        s.target.as_str()
    } else {
        "/"
    };
    let mut result = ReplayResult {
        method: s.method.clone(),
        target: s.target.clone(),
        before_status: s.status,
        before_ms: s.duration_ns as f64 / 1e6,
        now_status: None,
        now_ms: 0.0,
        error: None,
    };
    let (url, method) = match (
        opts.target.join(path),
        reqwest::Method::from_bytes(s.method.as_bytes()),
    ) {
        (Ok(u), Ok(m)) => (u, m),
        (Err(e), _) => {
            result.error = Some(format!("bad target: {e}"));
            return result;
        }
        (_, Err(e)) => {
            result.error = Some(format!("bad method: {e}"));
            return result;
        }
    };
    let mut req = client.request(method, url);
    for (k, v) in &s.headers {
        if resent(k) {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let t = Instant::now();
    match req.send().await {
        Ok(resp) => {
            result.now_status = Some(resp.status().as_u16());
            // The whole answer, as the recorded duration included it.
            let body = resp.bytes().await;
            result.now_ms = t.elapsed().as_secs_f64() * 1e3;
            if let Err(e) = body {
                result.error = Some(format!("reading the body: {e}"));
            }
        }
        Err(e) => {
            result.now_ms = t.elapsed().as_secs_f64() * 1e3;
            result.error = Some(e.to_string());
        }
    }
    result
}
