//! What each receiver has already been told: webhooks get each state change
//! once; Alertmanager gets firing alerts again every `resend_interval`.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::labels::{Alert, Fingerprint};
use super::model::AlertStatus;

/// Last status delivered per fingerprint, for one webhook receiver.
#[derive(Debug)]
pub struct Dedupe {
    delivered: HashMap<Fingerprint, AlertStatus>,
    cap: usize,
}

impl Dedupe {
    /// `cap` bounds the memory; resolved entries are forgotten first.
    pub fn new(cap: usize) -> Self {
        Self {
            delivered: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// False when this receiver already got `status` for `fp` (a repeated
    /// firing or a repeated resolve).
    pub fn should_deliver(&self, fp: Fingerprint, status: AlertStatus) -> bool {
        self.delivered.get(&fp) != Some(&status)
    }

    pub fn delivered(&mut self, fp: Fingerprint, status: AlertStatus) {
        if self.delivered.len() >= self.cap && !self.delivered.contains_key(&fp) {
            self.delivered.retain(|_, s| *s == AlertStatus::Firing);
            if self.delivered.len() >= self.cap {
                // Only firing alerts left: forgetting one costs a duplicate
                // notification at worst, never a lost one.
                if let Some(k) = self.delivered.keys().next().copied() {
                    self.delivered.remove(&k);
                }
            }
        }
        self.delivered.insert(fp, status);
    }

    pub fn len(&self) -> usize {
        self.delivered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty()
    }
}

/// Firing alerts one Alertmanager must hear about again, and when.
#[derive(Debug)]
pub struct ResendSet {
    active: HashMap<Fingerprint, (Arc<Alert>, Instant)>,
    interval: Duration,
    cap: usize,
}

/// What to post now after an alert came in.
#[derive(Debug, PartialEq)]
pub enum Arrival {
    /// New firing alert or a resolve: post it now.
    PostNow,
    /// Already firing and known: its figures are refreshed, it goes out with
    /// the next re-send.
    Refreshed,
    /// The set is full: not tracked (counted as dropped by the caller).
    Full,
}

impl ResendSet {
    pub fn new(interval: Duration, cap: usize) -> Self {
        Self {
            active: HashMap::new(),
            interval,
            cap: cap.max(1),
        }
    }

    pub fn arrive(&mut self, alert: &Arc<Alert>, now: Instant) -> Arrival {
        match alert.status {
            AlertStatus::Resolved => {
                self.active.remove(&alert.fingerprint);
                Arrival::PostNow
            }
            AlertStatus::Firing => {
                if let Some(e) = self.active.get_mut(&alert.fingerprint) {
                    e.0 = alert.clone();
                    return Arrival::Refreshed;
                }
                if self.active.len() >= self.cap {
                    return Arrival::Full;
                }
                self.active.insert(alert.fingerprint, (alert.clone(), now));
                Arrival::PostNow
            }
        }
    }

    /// Firing alerts last sent `interval` or longer ago; marks them sent.
    pub fn due(&mut self, now: Instant) -> Vec<Arc<Alert>> {
        let mut out = Vec::new();
        for (a, last) in self.active.values_mut() {
            if now.saturating_duration_since(*last) >= self.interval {
                *last = now;
                out.push(a.clone());
            }
        }
        out
    }

    /// When the next re-send is due, if anything fires.
    pub fn next_due(&self) -> Option<Instant> {
        self.active
            .values()
            .map(|(_, last)| *last + self.interval)
            .min()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::alert::labels::tests::l2_event;

    fn alert(route: &str, status: AlertStatus) -> Arc<Alert> {
        let mut ev = l2_event();
        ev.route = crate::request::route::RouteKey::new("svc", "GET", route);
        ev.status = status;
        if status == AlertStatus::Resolved {
            ev.ends_at = Some(ev.starts_at);
        }
        Arc::new(Alert::from_event(&ev, "n", ""))
    }

    #[test]
    fn webhook_gets_each_state_change_once() {
        let mut d = Dedupe::new(10);
        let f = alert("/a", AlertStatus::Firing).fingerprint;
        assert!(d.should_deliver(f, AlertStatus::Firing));
        d.delivered(f, AlertStatus::Firing);
        assert!(!d.should_deliver(f, AlertStatus::Firing), "re-sent firing");
        assert!(d.should_deliver(f, AlertStatus::Resolved));
        d.delivered(f, AlertStatus::Resolved);
        assert!(!d.should_deliver(f, AlertStatus::Resolved));
        assert!(d.should_deliver(f, AlertStatus::Firing), "fires again");
    }

    #[test]
    fn dedupe_memory_is_bounded_resolved_first() {
        let mut d = Dedupe::new(3);
        let fs: Vec<_> = (0..5)
            .map(|i| alert(&format!("/{i}"), AlertStatus::Firing).fingerprint)
            .collect();
        d.delivered(fs[0], AlertStatus::Firing);
        d.delivered(fs[1], AlertStatus::Resolved);
        d.delivered(fs[2], AlertStatus::Firing);
        d.delivered(fs[3], AlertStatus::Firing);
        assert_eq!(d.len(), 3);
        assert!(!d.should_deliver(fs[0], AlertStatus::Firing));
        assert!(!d.should_deliver(fs[2], AlertStatus::Firing));
        assert!(
            d.should_deliver(fs[1], AlertStatus::Resolved),
            "resolved forgotten first"
        );
        d.delivered(fs[4], AlertStatus::Firing);
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn alertmanager_resend_schedule() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(60);
        let mut s = ResendSet::new(iv, 2);
        let a = alert("/a", AlertStatus::Firing);
        assert_eq!(s.arrive(&a, t0), Arrival::PostNow);
        assert_eq!(s.next_due(), Some(t0 + iv));
        assert!(s.due(t0 + Duration::from_secs(59)).is_empty());
        // A repeated firing event refreshes, it is not posted at once.
        assert_eq!(
            s.arrive(&a, t0 + Duration::from_secs(10)),
            Arrival::Refreshed
        );
        let due = s.due(t0 + iv);
        assert_eq!(due.len(), 1);
        assert_eq!(s.next_due(), Some(t0 + 2 * iv));
        assert!(s.due(t0 + iv + Duration::from_secs(1)).is_empty());
        let b = alert("/b", AlertStatus::Firing);
        assert_eq!(s.arrive(&b, t0 + iv), Arrival::PostNow);
        let c = alert("/c", AlertStatus::Firing);
        assert_eq!(s.arrive(&c, t0 + iv), Arrival::Full);
        // Resolve stops the re-sends and is posted once.
        let ar = alert("/a", AlertStatus::Resolved);
        assert_eq!(ar.fingerprint, a.fingerprint);
        assert_eq!(s.arrive(&ar, t0 + iv), Arrival::PostNow);
        assert_eq!(s.len(), 1);
        let due = s.due(t0 + 3 * iv);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].fingerprint, b.fingerprint);
        s.arrive(&alert("/b", AlertStatus::Resolved), t0 + 3 * iv);
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
    }
}
