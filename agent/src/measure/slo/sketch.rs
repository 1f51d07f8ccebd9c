//! A mergeable, bounded latency sketch on the Prometheus native-histogram
//! schema 5 buckets: bucket `i` covers `(2^((i-1)/32), 2^(i/32)]` seconds, so a
//! bucket is 2.19 % wide and its geometric midpoint is within 1.09 % of any
//! value in it. Counts live in a dense window of 16-bit counters over the
//! occupied index range (the rare bucket that passes 65,535 in a period keeps
//! its high part in a side list), so a route whose latencies span 1 ms..1 s
//! costs ~660 bytes, at most ~2.3 KiB.
use std::time::Duration;

/// Schema 5: 2^5 buckets per power of two.
const BUCKETS_PER_OCTAVE: f64 = 32.0;
/// Durations below 1 µs land in the zero bucket (below any kernel timing noise).
pub const ZERO_THRESHOLD_NS: u64 = 1_000;
/// Index of the bucket holding 1 µs: ceil(32 * log2(1e-6)).
const MIN_INDEX: i32 = -637;
/// Index of the bucket ending at 2^16 s (~18 h); longer durations are clamped.
const MAX_INDEX: i32 = 512;
/// Extra buckets allocated on the growing side so a drifting latency does not
/// reallocate on every new bucket.
const GROW_SLACK: i32 = 8;

/// `2^(j/32)` for j in 0..=32: bucket bounds within one power of two.
const MANTISSA_BOUNDS: [f64; 33] = {
    let mut b = [0.0; 33];
    let mut j = 0;
    while j <= 32 {
        b[j] = pow2_frac(j as u32);
        j += 1;
    }
    b
};

/// 2^(j/32) by Newton iterations on x^32 = 2^j (const-evaluable, exact to
/// the last bit or two; the schema's bucket bounds).
const fn pow2_frac(j: u32) -> f64 {
    if j == 0 {
        return 1.0;
    }
    if j == 32 {
        return 2.0;
    }
    let target = (1u64 << j) as f64;
    let mut x = 1.0 + j as f64 / 46.0;
    let mut k = 0;
    while k < 60 {
        let mut p = 1.0;
        let mut n = 0;
        while n < 31 {
            p *= x;
            n += 1;
        }
        // x_{n+1} = x - (x^32 - t) / (32 x^31)
        x -= (p * x - target) / (32.0 * p);
        k += 1;
    }
    x
}

/// Schema-5 bucket index of a duration of at least 1 µs: the exponent of the
/// value in seconds times 32 plus the mantissa's bucket (as Prometheus does,
/// without a logarithm per record).
#[inline]
pub fn bucket_index(duration_ns: u64) -> i32 {
    let secs = duration_ns as f64 * 1e-9;
    let bits = secs.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    // Smallest j with mantissa <= 2^(j/32); mantissa is in [1, 2).
    let j = MANTISSA_BOUNDS.partition_point(|&b| b < mantissa) as i32;
    (exp * 32 + j).clamp(MIN_INDEX, MAX_INDEX)
}

/// Upper bound of bucket `i` in seconds (Prometheus' bucket boundary).
pub fn bucket_upper_seconds(i: i32) -> f64 {
    (i as f64 / BUCKETS_PER_OCTAVE).exp2()
}

/// Geometric midpoint of bucket `i` in seconds: the value reported for it.
fn bucket_mid_seconds(i: i32) -> f64 {
    ((i as f64 - 0.5) / BUCKETS_PER_OCTAVE).exp2()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySketch {
    /// Bucket index of `counts[0]`.
    base: i32,
    /// Low 16 bits of each bucket's count.
    counts: Vec<u16>,
    /// `(index, count >> 16)` of the buckets that wrapped, unordered.
    carry: Vec<(i32, u32)>,
    zero: u64,
    total: u64,
}

impl LatencySketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one duration. Allocates only when the value falls outside the
    /// window seen so far (never once the window covers the route's range).
    #[inline]
    pub fn record(&mut self, duration_ns: u64) {
        self.total += 1;
        if duration_ns < ZERO_THRESHOLD_NS {
            self.zero += 1;
            return;
        }
        let i = bucket_index(duration_ns);
        let pos = i - self.base;
        if pos < 0 || pos as usize >= self.counts.len() {
            self.cover(i, i);
        }
        let c = &mut self.counts[(i - self.base) as usize];
        *c = c.wrapping_add(1);
        if *c == 0 {
            self.carry_add(i, 1);
        }
    }

    /// Adds `n` << 16 to bucket `i`'s count.
    #[cold]
    fn carry_add(&mut self, i: i32, n: u32) {
        match self.carry.iter_mut().find(|(j, _)| *j == i) {
            Some((_, h)) => *h = h.saturating_add(n),
            None => self.carry.push((i, n)),
        }
    }

    /// The count of bucket `i` (inside the window).
    #[inline]
    fn count_at(&self, i: i32) -> u64 {
        let low = self.counts[(i - self.base) as usize] as u64;
        if self.carry.is_empty() {
            return low;
        }
        let high = self
            .carry
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(0, |(_, h)| *h as u64);
        low + (high << 16)
    }

    /// Adds every count of `other` (same bucket layout, so merging is exact).
    pub fn merge(&mut self, other: &LatencySketch) {
        self.total += other.total;
        self.zero += other.zero;
        let Some((lo, hi)) = other.occupied() else {
            return;
        };
        self.cover(lo, hi);
        for i in lo..=hi {
            let n = other.count_at(i);
            if n != 0 {
                let sum = self.count_at(i) + n;
                self.counts[(i - self.base) as usize] = sum as u16;
                let high = (sum >> 16).min(u32::MAX as u64) as u32;
                match self.carry.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, h)) => *h = high,
                    None if high > 0 => self.carry.push((i, high)),
                    None => {}
                }
            }
        }
    }

    /// The `q`-quantile (nearest rank: the ceil(q·n)-th smallest value),
    /// reported as its bucket's geometric midpoint; within 1.1 % of the exact
    /// value for durations of at least 1 µs. Zero-bucket values report 0.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 || !q.is_finite() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        if rank <= self.zero {
            return Some(Duration::ZERO);
        }
        let mut seen = self.zero;
        for pos in 0..self.counts.len() {
            let i = self.base + pos as i32;
            seen += self.count_at(i);
            if seen >= rank {
                return Some(Duration::from_secs_f64(bucket_mid_seconds(i)));
            }
        }
        // Only reachable when a saturated carry undercounts; report the top.
        self.occupied()
            .map(|(_, hi)| Duration::from_secs_f64(bucket_mid_seconds(hi)))
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// Empties the sketch but keeps its window, so the next period records
    /// without allocating.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.carry.clear();
        self.zero = 0;
        self.total = 0;
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u16>()
            + self.carry.capacity() * std::mem::size_of::<(i32, u32)>()
    }

    /// Non-zero buckets as `(index, count)`, lowest first; e.g. to export a
    /// native histogram.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        (0..self.counts.len())
            .map(|p| self.base + p as i32)
            .map(|i| (i, self.count_at(i)))
            .filter(|(_, n)| *n != 0)
    }

    fn occupied(&self) -> Option<(i32, i32)> {
        let first = self.counts.iter().position(|&n| n != 0);
        let last = self.counts.iter().rposition(|&n| n != 0);
        // A wrapped bucket can have a zero low part.
        let (mut lo, mut hi) = match (first, last) {
            (Some(f), Some(l)) => (self.base + f as i32, self.base + l as i32),
            _ => (i32::MAX, i32::MIN),
        };
        for (i, _) in &self.carry {
            lo = lo.min(*i);
            hi = hi.max(*i);
        }
        (lo <= hi).then_some((lo, hi))
    }

    /// Widens the window to cover indices `lo..=hi`.
    #[cold]
    fn cover(&mut self, lo: i32, hi: i32) {
        if self.counts.is_empty() {
            let lo = (lo - GROW_SLACK).max(MIN_INDEX);
            let hi = (hi + GROW_SLACK).min(MAX_INDEX);
            self.base = lo;
            self.counts = vec![0; (hi - lo + 1) as usize];
            return;
        }
        let cur_hi = self.base + self.counts.len() as i32 - 1;
        if lo >= self.base && hi <= cur_hi {
            return;
        }
        let new_lo = if lo < self.base {
            (lo - GROW_SLACK).max(MIN_INDEX)
        } else {
            self.base
        };
        let new_hi = if hi > cur_hi {
            (hi + GROW_SLACK).min(MAX_INDEX)
        } else {
            cur_hi
        };
        let mut counts = vec![0u16; (new_hi - new_lo + 1) as usize];
        let off = (self.base - new_lo) as usize;
        counts[off..off + self.counts.len()].copy_from_slice(&self.counts);
        self.counts = counts;
        self.base = new_lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn bucket_boundaries_are_schema_5() {
        // 1 s is the upper bound of bucket 0; just above it is bucket 1.
        assert_eq!(bucket_index(1_000_000_000), 0);
        assert_eq!(bucket_index(1_000_000_001), 1);
        // 2 s = 2^(32/32) closes bucket 32.
        assert_eq!(bucket_index(2_000_000_000), 32);
        assert!((bucket_upper_seconds(32) - 2.0).abs() < 1e-12);
        // 0.5 s closes bucket -32.
        assert_eq!(bucket_index(500_000_000), -32);
        assert_eq!(bucket_index(1_000), MIN_INDEX);
        assert_eq!(bucket_index(u64::MAX), MAX_INDEX);
    }

    #[test]
    fn index_agrees_with_the_logarithm() {
        for (k, b) in MANTISSA_BOUNDS.iter().enumerate() {
            let want = (k as f64 / 32.0).exp2();
            assert!((b - want).abs() < 1e-14, "{k}");
        }
        let mut ns = 1_000u64;
        while ns < 100_000_000_000 {
            let by_log = ((ns as f64 * 1e-9).log2() * 32.0).ceil() as i32;
            let i = bucket_index(ns);
            // Equal except within float noise of a boundary.
            assert!((i - by_log).abs() <= 1, "{ns}: {i} vs {by_log}");
            let upper = bucket_upper_seconds(i) * 1e9;
            let lower = bucket_upper_seconds(i - 1) * 1e9;
            assert!(
                ns as f64 <= upper * (1.0 + 1e-12) && ns as f64 > lower * (1.0 - 1e-12),
                "{ns}"
            );
            ns = ns * 1013 / 1000 + 1;
        }
    }

    #[test]
    fn empty_sketch_has_no_quantile() {
        let s = LatencySketch::new();
        assert_eq!(s.quantile(0.99), None);
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn sub_microsecond_goes_to_zero_bucket() {
        let mut s = LatencySketch::new();
        s.record(999);
        s.record(0);
        assert_eq!(s.count(), 2);
        assert_eq!(s.quantile(1.0), Some(Duration::ZERO));
        assert_eq!(s.heap_bytes(), 0);
    }

    #[test]
    fn clear_keeps_window_and_forgets_counts() {
        let mut s = LatencySketch::new();
        s.record(5_000_000);
        let bytes = s.heap_bytes();
        s.clear();
        assert_eq!(s.count(), 0);
        assert_eq!(s.quantile(0.5), None);
        s.record(5_000_000);
        assert_eq!(s.heap_bytes(), bytes, "no reallocation after clear");
    }

    #[test]
    fn window_stays_bounded_for_extreme_values() {
        let mut s = LatencySketch::new();
        s.record(1_000);
        s.record(u64::MAX);
        assert!(s.heap_bytes() <= ((MAX_INDEX - MIN_INDEX + 1) as usize) * 2);
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn counts_past_16_bits_are_exact() {
        let mut s = LatencySketch::new();
        // 200,000 at 1 ms (three wraps of the low part), then 1,000 at 1 s:
        // the P99 is still 1 ms and the P99.9 is 1 s.
        for _ in 0..200_000 {
            s.record(1_000_000);
        }
        for _ in 0..1_000 {
            s.record(1_000_000_000);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        assert!((ms(s.quantile(0.99).unwrap()) - 1.0).abs() < 0.011);
        assert!((ms(s.quantile(0.999).unwrap()) - 1000.0).abs() < 11.0);
        assert_eq!(
            s.buckets().map(|(_, n)| n).collect::<Vec<_>>(),
            [200_000, 1_000]
        );
        // Exactly 65,536 leaves a zero low part: still occupied, still merged.
        let mut w = LatencySketch::new();
        for _ in 0..65_536 {
            w.record(5_000_000);
        }
        assert_eq!(w.buckets().map(|(_, n)| n).collect::<Vec<_>>(), [65_536]);
        let mut m = LatencySketch::new();
        m.merge(&w);
        m.merge(&s);
        m.merge(&w);
        assert_eq!(
            m.buckets().map(|(_, n)| n).collect::<Vec<_>>(),
            [200_000, 131_072, 1_000]
        );
        assert_eq!(m.count(), 200_000 + 131_072 + 1_000);
        s.clear();
        assert_eq!(s.buckets().count(), 0);
        assert_eq!(s.quantile(0.5), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn quantiles_are_within_2_percent(
            values in prop::collection::vec(1_000u64..100_000_000_000, 1..2_000),
            q in 0.0f64..=1.0,
        ) {
            let mut s = LatencySketch::new();
            for &v in &values { s.record(v); }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for q in [q, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let exact = exact_quantile(&sorted, q) as f64;
                let got = s.quantile(q).unwrap().as_nanos() as f64;
                prop_assert!((got - exact).abs() <= 0.02 * exact,
                    "q={} exact={} got={}", q, exact, got);
            }
        }

        #[test]
        fn merge_equals_recording_everything(
            a in prop::collection::vec(0u64..10_000_000_000, 0..500),
            b in prop::collection::vec(0u64..10_000_000_000, 0..500),
        ) {
            let mut sa = LatencySketch::new();
            let mut sb = LatencySketch::new();
            let mut all = LatencySketch::new();
            for &v in &a { sa.record(v); all.record(v); }
            for &v in &b { sb.record(v); all.record(v); }
            sa.merge(&sb);
            prop_assert_eq!(sa.count(), all.count());
            for q in [0.0, 0.25, 0.5, 0.99, 1.0] {
                prop_assert_eq!(sa.quantile(q), all.quantile(q));
            }
            prop_assert_eq!(sa.buckets().collect::<Vec<_>>(), all.buckets().collect::<Vec<_>>());
        }
    }
}
