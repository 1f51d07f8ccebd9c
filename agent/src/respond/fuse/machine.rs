//! One route's fuse: `closed → open` on L2, `open → half_open` after the open
//! time (doubling per repeat, capped), `half_open → closed` on a healthy
//! period or back to `open` (escalated) on an unhealthy one. A manual override
//! pins the state until its TTL ends or it is released.
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FuseState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl FuseState {
    pub const ALL: [FuseState; 3] = [FuseState::Closed, FuseState::Open, FuseState::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            FuseState::Closed => "closed",
            FuseState::Open => "open",
            FuseState::HalfOpen => "half_open",
        }
    }

    /// Counts against `max_fused_share` (the route is in a breaker cycle).
    pub fn is_fused(self) -> bool {
        self != FuseState::Closed
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// Fused regardless of what the detectors say.
    ForceOpen,
    /// Disabled: never fused, whatever the detectors say.
    ForceClosed,
}

impl OverrideKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideKind::ForceOpen => "force_open",
            OverrideKind::ForceClosed => "force_closed",
        }
    }
}

/// A manual override, in force until `until`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub kind: OverrideKind,
    #[serde(with = "humantime_serde")]
    pub until: SystemTime,
    pub who: String,
    pub why: String,
}

/// What made a state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// An L2 alert fired.
    Alert,
    /// A period verdict in `half_open`.
    Verdict,
    /// The open time ran out.
    Timer,
    /// An operator set or released an override.
    Override,
    /// An override's TTL ran out.
    Ttl,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Alert => "alert",
            Cause::Verdict => "verdict",
            Cause::Timer => "timer",
            Cause::Override => "override",
            Cause::Ttl => "ttl",
        }
    }
}

/// The open-time schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub reset_after: Duration,
}

impl Timing {
    /// `open_for · 2^escalation`, capped at `max_open_for`.
    pub fn open_time(&self, escalation: u32) -> Duration {
        let factor = 1u32.checked_shl(escalation.min(31)).unwrap_or(u32::MAX);
        self.open_for
            .checked_mul(factor)
            .unwrap_or(self.max_open_for)
            .min(self.max_open_for)
    }
}

/// A transition of one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: FuseState,
    pub to: FuseState,
    pub cause: Cause,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteFuse {
    /// The effective state (an override's when one is in force).
    pub state: FuseState,
    /// Opens in a row without a long healthy stretch; picks the open time.
    pub escalation: u32,
    #[serde(with = "humantime_serde")]
    pub open_until: Option<SystemTime>,
    #[serde(with = "humantime_serde")]
    pub half_open_at: Option<SystemTime>,
    #[serde(with = "humantime_serde")]
    pub closed_at: Option<SystemTime>,
    pub overridden: Option<Override>,
    /// Bumped on every state change; actions key their idempotency on it.
    pub seq: u64,
}

impl RouteFuse {
    /// An L2 alert fired on the route.
    pub fn on_l2(&mut self, now: SystemTime, t: &Timing) -> Option<Change> {
        if self.overridden.is_some() {
            return None;
        }
        match self.state {
            FuseState::Open => None,
            FuseState::Closed => {
                let rested = self
                    .closed_at
                    .is_none_or(|c| now.duration_since(c).unwrap_or_default() >= t.reset_after);
                self.escalation = if rested {
                    0
                } else {
                    self.escalation.saturating_add(1)
                };
                Some(self.open(now, t, Cause::Alert))
            }
            FuseState::HalfOpen => {
                self.escalation = self.escalation.saturating_add(1);
                Some(self.open(now, t, Cause::Alert))
            }
        }
    }

    /// A closed period's verdict; only `half_open` listens, and only to a
    /// period that ended after it entered `half_open` and saw traffic.
    pub fn on_verdict(
        &mut self,
        healthy: bool,
        requests: u64,
        period_end: SystemTime,
        now: SystemTime,
        t: &Timing,
    ) -> Option<Change> {
        if self.overridden.is_some() || self.state != FuseState::HalfOpen || requests == 0 {
            return None;
        }
        if self.half_open_at.is_some_and(|h| period_end <= h) {
            return None;
        }
        if healthy {
            Some(self.set(FuseState::Closed, now, Cause::Verdict))
        } else {
            self.escalation = self.escalation.saturating_add(1);
            Some(self.open(now, t, Cause::Verdict))
        }
    }

    /// Open time or override TTL ran out.
    pub fn tick(&mut self, now: SystemTime) -> Option<Change> {
        if let Some(o) = &self.overridden {
            if now < o.until {
                return None;
            }
            let to = after_override(o.kind);
            self.overridden = None;
            return Some(self.set(to, now, Cause::Ttl));
        }
        if self.state == FuseState::Open && self.open_until.is_none_or(|u| now >= u) {
            return Some(self.set(FuseState::HalfOpen, now, Cause::Timer));
        }
        None
    }

    /// Pin the route open or closed until `o.until`. Always a change record
    /// (from may equal to), so every override is audited.
    pub fn force(&mut self, o: Override, now: SystemTime) -> Change {
        let to = match o.kind {
            OverrideKind::ForceOpen => FuseState::Open,
            OverrideKind::ForceClosed => FuseState::Closed,
        };
        if to == FuseState::Open {
            self.open_until = Some(o.until);
        }
        self.overridden = Some(o);
        self.set(to, now, Cause::Override)
    }

    /// End the override now; a forced-open route goes `half_open` (it proves
    /// itself before closing), a forced-closed one resumes `closed`.
    pub fn release(&mut self, now: SystemTime) -> Option<Change> {
        let o = self.overridden.take()?;
        Some(self.set(after_override(o.kind), now, Cause::Override))
    }

    fn open(&mut self, now: SystemTime, t: &Timing, cause: Cause) -> Change {
        self.open_until = Some(now + t.open_time(self.escalation));
        self.set(FuseState::Open, now, cause)
    }

    fn set(&mut self, to: FuseState, now: SystemTime, cause: Cause) -> Change {
        let from = self.state;
        if from != to {
            self.seq += 1;
        }
        self.state = to;
        match to {
            FuseState::Closed => {
                self.closed_at = Some(now);
                self.open_until = None;
                self.half_open_at = None;
            }
            FuseState::HalfOpen => {
                self.half_open_at = Some(now);
                self.open_until = None;
            }
            FuseState::Open => self.half_open_at = None,
        }
        Change { from, to, cause }
    }
}

fn after_override(kind: OverrideKind) -> FuseState {
    match kind {
        OverrideKind::ForceOpen => FuseState::HalfOpen,
        OverrideKind::ForceClosed => FuseState::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const T: Timing = Timing {
        open_for: Duration::from_secs(30),
        max_open_for: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Drives a fuse from open through half_open with an unhealthy period.
    fn reopen(f: &mut RouteFuse, c: &ManualClock) -> Duration {
        let opened = c.now();
        let open_time = f.open_until.unwrap().duration_since(opened).unwrap();
        c.advance(open_time);
        assert_eq!(f.tick(c.now()).unwrap().to, FuseState::HalfOpen);
        c.advance(secs(10));
        let ch = f.on_verdict(false, 100, c.now(), c.now(), &T).unwrap();
        assert_eq!((ch.from, ch.to), (FuseState::HalfOpen, FuseState::Open));
        open_time
    }

    #[test]
    fn l2_opens_and_open_time_expires_into_half_open() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        let ch = f.on_l2(c.now(), &T).unwrap();
        assert_eq!(
            ch,
            Change {
                from: FuseState::Closed,
                to: FuseState::Open,
                cause: Cause::Alert
            }
        );
        assert_eq!(f.seq, 1);
        // A second L2 while open changes nothing.
        assert_eq!(f.on_l2(c.now(), &T), None);
        c.advance(secs(29));
        assert_eq!(f.tick(c.now()), None);
        c.advance(secs(1));
        let ch = f.tick(c.now()).unwrap();
        assert_eq!((ch.to, ch.cause), (FuseState::HalfOpen, Cause::Timer));
    }

    #[test]
    fn healthy_period_in_half_open_closes() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        f.on_l2(c.now(), &T);
        c.advance(secs(30));
        f.tick(c.now());
        let entered = c.now();
        // A period that ended before half_open, or saw no traffic, decides nothing.
        assert_eq!(
            f.on_verdict(true, 100, entered - secs(1), c.now(), &T),
            None
        );
        c.advance(secs(10));
        assert_eq!(f.on_verdict(true, 0, c.now(), c.now(), &T), None);
        let ch = f.on_verdict(true, 50, c.now(), c.now(), &T).unwrap();
        assert_eq!(
            (ch.from, ch.to, ch.cause),
            (FuseState::HalfOpen, FuseState::Closed, Cause::Verdict)
        );
        assert_eq!(f.seq, 3);
    }

    #[test]
    fn unhealthy_half_open_reopens_doubled_and_caps() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        f.on_l2(c.now(), &T);
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(reopen(&mut f, &c).as_secs());
        }
        let last = f.open_until.unwrap().duration_since(c.now()).unwrap();
        seen.push(last.as_secs());
        assert_eq!(seen, vec![30, 60, 120, 240, 300, 300, 300]);
    }

    #[test]
    fn repeat_soon_after_close_escalates_long_rest_resets() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        f.on_l2(c.now(), &T);
        c.advance(secs(30));
        f.tick(c.now());
        c.advance(secs(10));
        f.on_verdict(true, 10, c.now(), c.now(), &T);
        assert_eq!(f.state, FuseState::Closed);
        // Fires again a minute later: 60 s.
        c.advance(secs(60));
        f.on_l2(c.now(), &T);
        assert_eq!(
            f.open_until.unwrap().duration_since(c.now()).unwrap(),
            secs(60)
        );
        c.advance(secs(60));
        f.tick(c.now());
        c.advance(secs(10));
        f.on_verdict(true, 10, c.now(), c.now(), &T);
        // After a long healthy stretch: back to 30 s.
        c.advance(secs(601));
        f.on_l2(c.now(), &T);
        assert_eq!(f.escalation, 0);
        assert_eq!(
            f.open_until.unwrap().duration_since(c.now()).unwrap(),
            secs(30)
        );
    }

    #[test]
    fn l2_in_half_open_reopens_escalated() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        f.on_l2(c.now(), &T);
        c.advance(secs(30));
        f.tick(c.now());
        let ch = f.on_l2(c.now(), &T).unwrap();
        assert_eq!((ch.from, ch.to), (FuseState::HalfOpen, FuseState::Open));
        assert_eq!(
            f.open_until.unwrap().duration_since(c.now()).unwrap(),
            secs(60)
        );
    }

    fn ov(kind: OverrideKind, until: SystemTime) -> Override {
        Override {
            kind,
            until,
            who: "alice".into(),
            why: "test".into(),
        }
    }

    #[test]
    fn force_closed_wins_until_ttl_then_automatic_resumes() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        f.on_l2(c.now(), &T);
        let ch = f.force(ov(OverrideKind::ForceClosed, c.now() + secs(600)), c.now());
        assert_eq!(
            (ch.from, ch.to, ch.cause),
            (FuseState::Open, FuseState::Closed, Cause::Override)
        );
        // Detectors and timers cannot move it while the override holds.
        c.advance(secs(100));
        assert_eq!(f.on_l2(c.now(), &T), None);
        assert_eq!(f.tick(c.now()), None);
        assert_eq!(f.state, FuseState::Closed);
        c.advance(secs(500));
        let ch = f.tick(c.now()).unwrap();
        assert_eq!((ch.to, ch.cause), (FuseState::Closed, Cause::Ttl));
        assert!(f.overridden.is_none());
        assert!(f.on_l2(c.now(), &T).is_some());
    }

    #[test]
    fn force_open_expires_into_half_open_and_release_ends_early() {
        let c = ManualClock::default();
        let mut f = RouteFuse::default();
        f.force(ov(OverrideKind::ForceOpen, c.now() + secs(600)), c.now());
        assert_eq!(f.state, FuseState::Open);
        c.advance(secs(599));
        assert_eq!(f.tick(c.now()), None);
        assert_eq!(f.on_verdict(true, 10, c.now(), c.now(), &T), None);
        c.advance(secs(1));
        let ch = f.tick(c.now()).unwrap();
        assert_eq!((ch.to, ch.cause), (FuseState::HalfOpen, Cause::Ttl));

        let mut g = RouteFuse::default();
        g.force(ov(OverrideKind::ForceOpen, c.now() + secs(600)), c.now());
        let ch = g.release(c.now()).unwrap();
        assert_eq!((ch.to, ch.cause), (FuseState::HalfOpen, Cause::Override));
        assert_eq!(g.release(c.now()), None);
    }

    #[test]
    fn open_time_never_overflows() {
        assert_eq!(T.open_time(0), secs(30));
        assert_eq!(T.open_time(u32::MAX), secs(300));
    }
}
