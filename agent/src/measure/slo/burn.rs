//! Error-budget burn rates over 5m, 1h and 6h: burn = 5xx ratio over the
//! window / the SLO's error ratio (1.0 spends the budget exactly on time).
//!
//! A per-period ring over 6 h would cost 2,160 slots per route at a 10 s
//! period (~17 KiB; 85 MiB at 5,000 entries), so only the last 5 minutes are
//! kept in at most 30 fine slots (one per period at periods of 10 s and
//! longer, else one per 10 s worth of periods: 240 bytes whatever the
//! period); older periods are folded into 5-minute slots (72 for 6 h).
//! The 1h and 6h windows therefore move in 5-minute steps: they cover the
//! open 5-minute slot plus the last 12 (72) closed ones. The 5m window moves
//! in fine-slot steps: the open fine slot plus the last closed ones.
use std::collections::VecDeque;
use std::time::Duration;

use super::period::ratio;

const FINE_WINDOW: Duration = Duration::from_secs(300);
/// Fine slots over the 5m window at most (memory per entry is bounded by
/// this, not by the period).
const MAX_FINE_SLOTS: usize = 30;
const COARSE_SLOTS_1H: usize = 12;
const COARSE_SLOTS_6H: usize = 72;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    requests: u32,
    errors: u32,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BurnRates {
    pub m5: f64,
    pub h1: f64,
    pub h6: f64,
}

#[derive(Clone, Debug)]
pub struct BurnWindows {
    /// Periods per 5 minutes (>= 1).
    per_slot: usize,
    /// Periods per fine slot (1 at periods of 10 s and longer).
    fine_per: usize,
    /// Closed fine slots, at most `fine_cap`.
    fine: VecDeque<Counts>,
    fine_cap: usize,
    /// Periods folded into `fine_open` so far.
    in_fine: usize,
    fine_open: Counts,
    /// Periods folded into `open_slot` so far.
    in_slot: usize,
    open_slot: Counts,
    coarse: VecDeque<Counts>,
}

impl BurnWindows {
    pub fn new(period: Duration) -> Self {
        let p = period.as_nanos().max(1);
        let per_slot = FINE_WINDOW.as_nanos().div_ceil(p).max(1) as usize;
        let fine_per = per_slot.div_ceil(MAX_FINE_SLOTS);
        let fine_cap = per_slot.div_ceil(fine_per);
        Self {
            per_slot,
            fine_per,
            fine: VecDeque::with_capacity(fine_cap),
            fine_cap,
            in_fine: 0,
            fine_open: Counts::default(),
            in_slot: 0,
            open_slot: Counts::default(),
            coarse: VecDeque::with_capacity(COARSE_SLOTS_6H),
        }
    }

    /// Adds one closed period.
    pub fn push(&mut self, requests: u64, errors: u64) {
        let c = Counts {
            requests: requests.min(u32::MAX as u64) as u32,
            errors: errors.min(u32::MAX as u64) as u32,
        };
        self.fine_open.add(c);
        self.in_fine += 1;
        if self.in_fine == self.fine_per {
            if self.fine.len() == self.fine_cap {
                self.fine.pop_front();
            }
            self.fine.push_back(self.fine_open);
            self.fine_open = Counts::default();
            self.in_fine = 0;
        }
        self.open_slot.add(c);
        self.in_slot += 1;
        if self.in_slot == self.per_slot {
            if self.coarse.len() == COARSE_SLOTS_6H {
                self.coarse.pop_front();
            }
            self.coarse.push_back(self.open_slot);
            self.open_slot = Counts::default();
            self.in_slot = 0;
        }
    }

    /// Burn rates against an SLO error ratio (> 0).
    pub fn rates(&self, slo_error_ratio: f64) -> BurnRates {
        let burn = |c: Counts| ratio(c.errors as u64, c.requests as u64) / slo_error_ratio;
        let mut m5 = self.fine_open;
        self.fine.iter().for_each(|c| m5.add(*c));
        let sum_coarse = |n: usize| {
            let mut t = self.open_slot;
            self.coarse.iter().rev().take(n).for_each(|c| t.add(*c));
            t
        };
        BurnRates {
            m5: burn(m5),
            h1: burn(sum_coarse(COARSE_SLOTS_1H)),
            h6: burn(sum_coarse(COARSE_SLOTS_6H)),
        }
    }

    /// True when the whole 6 h horizon saw no request (the entry may go).
    pub fn idle(&self) -> bool {
        self.open_slot.requests == 0
            && self.fine_open.requests == 0
            && self.fine.iter().all(|c| c.requests == 0)
            && self.coarse.len() == COARSE_SLOTS_6H
            && self.coarse.iter().all(|c| c.requests == 0)
    }

    pub fn heap_bytes(&self) -> usize {
        (self.fine.capacity() + self.coarse.capacity()) * std::mem::size_of::<Counts>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_rate_arithmetic() {
        let mut b = BurnWindows::new(Duration::from_secs(10));
        // 5 minutes = 30 periods of 1000 requests with 10 errors (1 %):
        // burn against a 0.5 % SLO is 2.
        for _ in 0..30 {
            b.push(1000, 10);
        }
        let r = b.rates(0.005);
        assert!((r.m5 - 2.0).abs() < 1e-9, "{r:?}");
        assert!((r.h1 - 2.0).abs() < 1e-9, "{r:?}");
        // Another 55 minutes clean: 5m burn is 0, 1h is 1/12 of 2, and the
        // 6h window still holds the bad slot.
        for _ in 0..330 {
            b.push(1000, 0);
        }
        let r = b.rates(0.005);
        assert_eq!(r.m5, 0.0);
        assert!((r.h1 - 2.0 / 12.0).abs() < 1e-9, "{r:?}");
        assert!((r.h6 - 2.0 / 12.0).abs() < 1e-9, "{r:?}");
        // Five more minutes push the bad slot out of the 1h window only.
        for _ in 0..30 {
            b.push(1000, 0);
        }
        let r = b.rates(0.005);
        assert_eq!(r.h1, 0.0);
        assert!((r.h6 - 2.0 / 13.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn empty_windows_burn_nothing() {
        let b = BurnWindows::new(Duration::from_secs(10));
        assert_eq!(b.rates(0.005), BurnRates::default());
        assert!(!b.idle(), "an entry younger than 6 h is not idle");
    }

    #[test]
    fn six_hours_without_traffic_is_idle() {
        let mut b = BurnWindows::new(Duration::from_secs(60));
        b.push(10, 0);
        for _ in 0..(6 * 60 + 5) {
            b.push(0, 0);
        }
        assert!(b.idle());
    }

    #[test]
    fn memory_is_bounded() {
        let mut b = BurnWindows::new(Duration::from_secs(1));
        for _ in 0..100_000 {
            b.push(1, 0);
        }
        assert_eq!(b.fine.len(), MAX_FINE_SLOTS);
        assert_eq!(b.coarse.len(), COARSE_SLOTS_6H);
        assert_eq!(b.heap_bytes(), (MAX_FINE_SLOTS + COARSE_SLOTS_6H) * 8);
    }

    #[test]
    fn short_periods_share_fine_slots() {
        // 2 s periods: 150 per 5 minutes in 30 fine slots of 5 periods.
        let mut b = BurnWindows::new(Duration::from_secs(2));
        assert_eq!((b.fine_per, b.fine_cap), (5, 30));
        // 5 minutes at 1 % errors, then 3 clean periods: the window holds
        // 150 bad periods (30 closed slots) plus the open slot's 3 clean ones.
        for _ in 0..150 {
            b.push(100, 1);
        }
        for _ in 0..3 {
            b.push(100, 0);
        }
        let r = b.rates(0.01);
        assert!((r.m5 - 150.0 / 153.0).abs() < 1e-9, "{r:?}");
        // Two more clean periods close the slot: the oldest bad slot leaves.
        for _ in 0..2 {
            b.push(100, 0);
        }
        let r = b.rates(0.01);
        assert!((r.m5 - 145.0 / 150.0).abs() < 1e-9, "{r:?}");
    }
}
