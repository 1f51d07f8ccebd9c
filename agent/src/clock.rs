//! Injected time, so the SLO engine and the fuse machine are tested second by
//! second without sleeping.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time source.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        let n = start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Self {
            nanos: Arc::new(AtomicU64::new(n)),
        }
    }

    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }

    pub fn set(&self, t: SystemTime) {
        let n = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        self.nanos.store(n, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        // A fixed, readable epoch for tests: 2026-01-01T00:00:00Z.
        Self::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// Converts kernel `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) stamps to wall time.
#[derive(Clone, Copy, Debug)]
pub struct MonoToWall {
    /// wall_ns - mono_ns, measured once at start-up.
    offset_ns: i128,
}

impl MonoToWall {
    pub fn measure() -> Self {
        let mono = monotonic_ns() as i128;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            offset_ns: wall - mono,
        }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let n = (mono_ns as i128 + self.offset_ns).max(0) as u64;
        UNIX_EPOCH + Duration::from_nanos(n)
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock eBPF stamps events with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::default();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(10));
        assert_eq!(c.now().duration_since(t0).unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn mono_to_wall_is_close_to_now() {
        let m = MonoToWall::measure();
        let w = m.wall(monotonic_ns());
        let d = SystemTime::now()
            .duration_since(w)
            .unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_secs(1), "{d:?}");
    }
}
