//! What separates failed requests from healthy ones: every snapshot is
//! described by a few dimensions (gray tag, method, client address, server
//! endpoint, header presence and values, query keys, request size band,
//! kernel evidence), and each value is ranked by how much more often it
//! appears among the failed than among the healthy. Nothing is told what to
//! look for: the top of the list is the best single explanation.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Snapshot;
use crate::request::trace::context::TRACE_HEADERS;

/// Headers whose values are unique per request (ids) or already a
/// dimension of their own (the gray tag): their values say nothing here.
fn no_value_header(name: &str) -> bool {
    name == "x-request-id" || name == "x-gray-tag" || TRACE_HEADERS.contains(&name)
}

/// Dimensions in the order ties are broken: the one an operator acts on first.
const DIMENSIONS: [&str; 10] = [
    "gray_tag",
    "method",
    "client",
    "server",
    "header",
    "header_value",
    "query_keys",
    "request_size",
    "tcp_retransmits",
    "new_connection",
];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Factor {
    pub dimension: &'static str,
    pub value: String,
    /// Share of failed requests with this value, 0..=1.
    pub failed_share: f64,
    pub healthy_share: f64,
    pub failed_count: usize,
    pub healthy_count: usize,
}

impl Factor {
    /// How much more common the value is among failed requests.
    pub fn score(&self) -> f64 {
        self.failed_share - self.healthy_share
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub failed: usize,
    pub healthy: usize,
    /// Values more common among failed requests, best separator first.
    pub factors: Vec<Factor>,
}

fn size_band(bytes: u64) -> &'static str {
    match bytes {
        0..1024 => "<1KiB",
        1024..16_384 => "1-16KiB",
        16_384..1_048_576 => "16KiB-1MiB",
        _ => ">=1MiB",
    }
}

/// The (dimension, value) pairs of one snapshot, each once.
fn features(s: &Snapshot) -> BTreeSet<(&'static str, String)> {
    let mut f = BTreeSet::new();
    let tag = if s.gray_tag.is_empty() {
        "(none)"
    } else {
        &s.gray_tag
    };
    f.insert(("gray_tag", tag.to_string()));
    f.insert(("method", s.method.clone()));
    if let Some(c) = s.client {
        // The address, not the port: ports are per connection.
        f.insert(("client", c.ip().to_string()));
    }
    if let Some(a) = s.server {
        f.insert(("server", a.to_string()));
    }
    for (k, v) in &s.headers {
        if k == "x-gray-tag" {
            continue;
        }
        f.insert(("header", k.clone()));
        if !no_value_header(k) {
            f.insert(("header_value", format!("{k}: {v}")));
        }
    }
    for k in &s.header_names {
        if k != "x-gray-tag" {
            f.insert(("header", k.clone()));
        }
    }
    let keys: BTreeSet<&str> = s
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .into_iter()
        .flat_map(|q| q.split('&'))
        .map(|p| p.split('=').next().unwrap_or(""))
        .filter(|k| !k.is_empty())
        .collect();
    let keys: Vec<&str> = keys.into_iter().collect();
    f.insert((
        "query_keys",
        if keys.is_empty() {
            "(none)".into()
        } else {
            keys.join(",")
        },
    ));
    f.insert(("request_size", size_band(s.request_bytes).to_string()));
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    f.insert(("tcp_retransmits", yes_no(s.tcp_retransmits > 0)));
    f.insert(("new_connection", yes_no(s.tcp_connect_ns.is_some())));
    f
}

/// Rank what separates `failed` from `healthy`.
pub fn diff(failed: &[Snapshot], healthy: &[Snapshot]) -> Diff {
    let count = |set: &[Snapshot]| {
        let mut m: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
        for s in set {
            for k in features(s) {
                *m.entry(k).or_default() += 1;
            }
        }
        m
    };
    let (fc, hc) = (count(failed), count(healthy));
    let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let mut factors: Vec<Factor> = fc
        .iter()
        .map(|((d, v), &n)| {
            let h = hc.get(&(*d, v.clone())).copied().unwrap_or(0);
            Factor {
                dimension: d,
                value: v.clone(),
                failed_share: share(n, failed.len()),
                healthy_share: share(h, healthy.len()),
                failed_count: n,
                healthy_count: h,
            }
        })
        .filter(|f| f.score() > 0.0)
        .collect();
    let rank = |d: &str| {
        DIMENSIONS
            .iter()
            .position(|x| *x == d)
            .unwrap_or(DIMENSIONS.len())
    };
    factors.sort_by(|a, b| {
        b.score()
            .total_cmp(&a.score())
            .then_with(|| rank(a.dimension).cmp(&rank(b.dimension)))
            .then_with(|| a.value.cmp(&b.value))
    });
    Diff {
        failed: failed.len(),
        healthy: healthy.len(),
        factors,
    }
}

impl Diff {
    /// A table for terminals; the top `limit` factors.
    pub fn render(&self, limit: usize) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "{} failed or slow vs {} healthy requests; what the failed ones have more often:\n",
            self.failed, self.healthy
        );
        let _ = writeln!(
            out,
            "{:>4}  {:<16} {:<40} {:>7} {:>8}",
            "rank", "dimension", "value", "failed", "healthy"
        );
        for (i, f) in self.factors.iter().take(limit).enumerate() {
            let v = printable(crate::request::redact::cap(&f.value, 40));
            let _ = writeln!(
                out,
                "{:>4}  {:<16} {:<40} {:>6.0}% {:>7.0}%",
                i + 1,
                f.dimension,
                v,
                f.failed_share * 100.0,
                f.healthy_share * 100.0
            );
        }
        if self.factors.is_empty() {
            out.push_str("      nothing sets the failed requests apart\n");
        }
        out
    }
}

/// Control characters from the network shown escaped, never sent to the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}
