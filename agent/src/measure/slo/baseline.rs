//! Robust baseline of a route's P99: median and MAD over the last N healthy
//! periods. The engine decides which periods may enter (never the incident's).
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselineFigures {
    pub median: Duration,
    pub mad: Duration,
    /// Periods the figures are computed over.
    pub periods: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Baseline {
    capacity: usize,
    p99_ns: VecDeque<u64>,
    figures: Option<BaselineFigures>,
}

impl Baseline {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            p99_ns: VecDeque::new(),
            figures: None,
        }
    }

    /// Learns one healthy period's P99; `scratch` is reused for sorting.
    pub fn learn(&mut self, p99: Duration, scratch: &mut Vec<u64>) {
        if self.p99_ns.len() == self.capacity {
            self.p99_ns.pop_front();
        }
        self.p99_ns
            .push_back(p99.as_nanos().min(u64::MAX as u128) as u64);
        scratch.clear();
        scratch.extend(self.p99_ns.iter().copied());
        let median = median_of(scratch);
        for v in scratch.iter_mut() {
            *v = v.abs_diff(median);
        }
        let mad = median_of(scratch);
        self.figures = Some(BaselineFigures {
            median: Duration::from_nanos(median),
            mad: Duration::from_nanos(mad),
            periods: self.p99_ns.len(),
        });
    }

    pub fn figures(&self) -> Option<BaselineFigures> {
        self.figures
    }

    pub fn len(&self) -> usize {
        self.p99_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.p99_ns.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.p99_ns.capacity() * std::mem::size_of::<u64>()
    }
}

/// Median (mean of the middle two for an even count); sorts `v`.
fn median_of(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return 0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        v[n / 2 - 1] / 2 + v[n / 2] / 2 + (v[n / 2 - 1] % 2 + v[n / 2] % 2) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn median_and_mad() {
        let mut b = Baseline::new(30);
        let mut s = Vec::new();
        for v in [100, 110, 90, 105, 95] {
            b.learn(ms(v), &mut s);
        }
        let f = b.figures().unwrap();
        assert_eq!(f.median, ms(100));
        // Deviations 0,10,10,5,5 -> median 5.
        assert_eq!(f.mad, ms(5));
        assert_eq!(f.periods, 5);
    }

    #[test]
    fn keeps_only_the_last_n() {
        let mut b = Baseline::new(3);
        let mut s = Vec::new();
        for v in [1000, 1000, 1000, 10, 10, 10] {
            b.learn(ms(v), &mut s);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.figures().unwrap().median, ms(10));
        assert_eq!(b.figures().unwrap().mad, Duration::ZERO);
    }

    #[test]
    fn even_count_median_is_midpoint() {
        let mut b = Baseline::new(4);
        let mut s = Vec::new();
        for v in [10, 20] {
            b.learn(ms(v), &mut s);
        }
        assert_eq!(b.figures().unwrap().median, ms(15));
    }
}
