//! What one route entry (route × gray tag) collects during a period, and the
//! small summary kept once the period is closed.
use std::time::Duration;

use crate::request::Endpoint;

use super::sketch::LatencySketch;

/// Trace ids kept per period (the slowest/failed requests).
pub const SAMPLES: usize = 5;
/// Remote endpoints tracked per period for "top retransmit peer".
const PEERS: usize = 4;

/// A request worth showing in an alert: failed ones first, then the slowest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceSample {
    /// Ranking key: 5xx above everything, then duration.
    pub score: u64,
    pub trace_id: [u8; 16],
}

impl TraceSample {
    pub fn new(trace_id: [u8; 16], duration_ns: u64, failed: bool) -> Self {
        let d = duration_ns.min(u64::MAX >> 1);
        let score = if failed { d | (1 << 63) } else { d };
        Self { score, trace_id }
    }
}

/// Keeps the `SAMPLES` highest-scored samples in a fixed array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopSamples {
    items: [TraceSample; SAMPLES],
    len: u8,
    /// Lowest kept score once full: most requests are rejected by one compare.
    floor: u64,
}

impl TopSamples {
    #[inline]
    pub fn offer(&mut self, s: TraceSample) {
        let len = self.len as usize;
        if len == SAMPLES && s.score <= self.floor {
            return;
        }
        if len < SAMPLES {
            self.items[len] = s;
            self.len += 1;
        } else {
            if self.items.iter().any(|x| x.trace_id == s.trace_id) {
                return;
            }
            let min_i = (0..SAMPLES)
                .min_by_key(|&i| self.items[i].score)
                .unwrap_or(0);
            self.items[min_i] = s;
        }
        if self.len as usize == SAMPLES {
            self.floor = self.items.iter().map(|x| x.score).min().unwrap_or(0);
        }
    }

    pub fn merge(&mut self, other: &TopSamples) {
        for s in other.iter() {
            if !self.iter().any(|x| x.trace_id == s.trace_id) {
                self.offer(*s);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &TraceSample> {
        self.items[..self.len as usize].iter()
    }

    /// Hex trace ids, highest score first.
    pub fn trace_ids(&self) -> Vec<String> {
        let mut v: Vec<&TraceSample> = self.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.score));
        v.iter().map(|s| hex(&s.trace_id)).collect()
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.floor = 0;
    }
}

fn hex(id: &[u8; 16]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    s
}

type PeerSlots = [Option<(Endpoint, u64)>; PEERS];

/// Approximate heavy hitters (space saving): the endpoint with the most
/// events in a small fixed array, allocated at the first event: most periods
/// of most routes see no retransmit, and an entry keeps one of these open
/// plus one per closed period (8 bytes each instead of 128).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopPeers {
    items: Option<Box<PeerSlots>>,
}

impl TopPeers {
    #[inline]
    pub fn add(&mut self, peer: Endpoint, n: u64) {
        let items = self.items.get_or_insert_with(|| Box::new([None; PEERS]));
        let mut min_i = 0;
        let mut min_n = u64::MAX;
        for (i, slot) in items.iter_mut().enumerate() {
            match slot {
                Some((p, c)) if *p == peer => {
                    *c += n;
                    return;
                }
                None => {
                    *slot = Some((peer, n));
                    return;
                }
                Some((_, c)) if *c < min_n => {
                    min_n = *c;
                    min_i = i;
                }
                _ => {}
            }
        }
        // Space saving: the newcomer inherits the evicted count.
        items[min_i] = Some((peer, min_n + n));
    }

    fn iter(&self) -> impl Iterator<Item = &(Endpoint, u64)> {
        self.items.iter().flat_map(|b| b.iter().flatten())
    }

    pub fn merge(&mut self, other: &TopPeers) {
        for (p, n) in other.iter() {
            self.add(*p, *n);
        }
    }

    pub fn top(&self) -> Option<(Endpoint, u64)> {
        self.iter().max_by_key(|(_, n)| *n).copied()
    }

    pub fn clear(&mut self) {
        self.items = None;
    }

    pub fn heap_bytes(&self) -> usize {
        self.items
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<PeerSlots>())
    }
}

/// The open period of one entry.
#[derive(Clone, Debug, Default)]
pub struct PeriodStats {
    pub requests: u64,
    pub errors: u64,
    pub latency: LatencySketch,
    pub retransmitted_segments: u64,
    pub requests_with_retransmits: u64,
    pub connect: LatencySketch,
    pub retransmit_peers: TopPeers,
    pub samples: TopSamples,
}

impl PeriodStats {
    /// Summarises and empties the period (keeping sketch windows).
    pub fn close(&mut self) -> PeriodSummary {
        let s = PeriodSummary {
            requests: self.requests,
            errors: self.errors,
            p50: self.latency.quantile(0.5),
            p99: self.latency.quantile(0.99),
            retransmitted_segments: self.retransmitted_segments,
            requests_with_retransmits: self.requests_with_retransmits,
            connect_p99: self.connect.quantile(0.99),
            retransmit_peers: std::mem::take(&mut self.retransmit_peers),
            samples: self.samples,
            connect_failures: 0,
            connect_failure_peer: None,
        };
        self.requests = 0;
        self.errors = 0;
        self.latency.clear();
        self.retransmitted_segments = 0;
        self.requests_with_retransmits = 0;
        self.connect.clear();
        self.samples.clear();
        s
    }

    pub fn heap_bytes(&self) -> usize {
        self.latency.heap_bytes() + self.connect.heap_bytes() + self.retransmit_peers.heap_bytes()
    }
}

/// A closed period of one entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeriodSummary {
    pub requests: u64,
    pub errors: u64,
    /// Median, for the status endpoint (judging uses P99 only).
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub retransmitted_segments: u64,
    pub requests_with_retransmits: u64,
    pub connect_p99: Option<Duration>,
    pub retransmit_peers: TopPeers,
    pub samples: TopSamples,
    /// Failed connects of the entry's service in this period.
    pub connect_failures: u64,
    /// The endpoint most of those connects went to.
    pub connect_failure_peer: Option<(Endpoint, u64)>,
}

impl PeriodSummary {
    pub fn error_ratio(&self) -> f64 {
        ratio(self.errors, self.requests)
    }
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> Endpoint {
        Endpoint {
            ip: std::net::IpAddr::from([10, 0, 0, last]),
            port: 5432,
        }
    }

    #[test]
    fn top_samples_prefer_failed_then_slow() {
        let mut t = TopSamples::default();
        for i in 0..20u8 {
            t.offer(TraceSample::new([i; 16], i as u64 * 1000, false));
        }
        t.offer(TraceSample::new([99; 16], 1, true));
        let ids = t.trace_ids();
        assert_eq!(ids.len(), SAMPLES);
        assert_eq!(ids[0], "63".repeat(16), "the failed request ranks first");
        assert_eq!(ids[1], "13".repeat(16), "then the slowest");
    }

    #[test]
    fn top_peer_finds_heavy_hitter() {
        let mut p = TopPeers::default();
        for i in 0..10 {
            p.add(ep(i), 1);
        }
        p.add(ep(7), 50);
        assert_eq!(p.top().unwrap().0, ep(7));
    }

    #[test]
    fn peers_cost_a_pointer_until_the_first_event() {
        assert_eq!(std::mem::size_of::<TopPeers>(), 8);
        let mut open = PeriodStats::default();
        assert_eq!(open.heap_bytes(), 0);
        open.retransmit_peers.add(ep(1), 3);
        assert!(open.heap_bytes() > 0);
        // Closing moves the peers into the summary and leaves none open.
        let s = open.close();
        assert_eq!(s.retransmit_peers.top(), Some((ep(1), 3)));
        assert_eq!(open.retransmit_peers.top(), None);
        assert_eq!(open.heap_bytes(), 0);
    }
}
