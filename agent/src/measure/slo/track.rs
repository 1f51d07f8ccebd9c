//! The life cycle of the alert a detector feeds (fire once at onset, resolve
//! after N healthy periods) and the figures, kernel evidence and one-line
//! diagnosis an alert carries. The conditions themselves are `super::detectors`.
use std::time::{Duration, SystemTime};

use crate::request::Endpoint;
use crate::request::route::RouteKey;
use crate::respond::alert::model::{
    AlertEvent, AlertFigures, AlertKind, AlertStatus, KernelEvidence,
};

use super::baseline::BaselineFigures;
use super::detectors::{Judgement, fmt_duration, headline, pct};
use super::period::{PeriodSummary, TopPeers, TopSamples, ratio};
use super::rules::SloTarget;

/// Share of requests with retransmits from which TCP is named as a suspect.
const RETRANSMIT_SUSPECT_SHARE: f64 = 0.01;
/// Connect P99 from which slow connects are named (SYN retransmits start at 1 s).
const SLOW_CONNECT: Duration = Duration::from_millis(200);

/// An alert that is firing.
#[derive(Clone, Debug, PartialEq)]
struct Firing {
    starts_at: SystemTime,
    sample_trace_ids: Vec<String>,
    diagnosis: String,
}

/// One detector's state on one entry.
#[derive(Clone, Debug)]
pub struct AlertTrack {
    pub kind: AlertKind,
    healthy_streak: u32,
    firing: Option<Firing>,
}

/// What the engine knows about the closing period when stepping a track.
#[derive(Clone, Copy)]
pub struct StepInput<'a> {
    pub route: &'a RouteKey,
    pub gray_tag: &'a str,
    pub period_end: SystemTime,
    pub period: Duration,
    /// The detector's verdict on the period that just closed.
    pub judgement: Judgement,
    pub resolve_after: u32,
    /// Closed periods, newest last.
    pub history: &'a [&'a PeriodSummary],
    pub target: SloTarget,
    pub baseline: Option<BaselineFigures>,
}

impl AlertTrack {
    pub fn new(kind: AlertKind) -> Self {
        Self {
            kind,
            healthy_streak: 0,
            firing: None,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    /// Advances one closed period; returns the event to send, if any.
    pub fn step(&mut self, i: &StepInput<'_>) -> Option<AlertEvent> {
        match &self.firing {
            None if i.judgement.fire => {
                let n = i.judgement.streak.max(1);
                let periods = last(i.history, n as usize);
                let figures = figures(&periods, i, n);
                let evidence = evidence(&periods);
                let mut samples = TopSamples::default();
                periods.iter().for_each(|p| samples.merge(&p.samples));
                let diagnosis = diagnose(self.kind, i.gray_tag, &figures, &evidence, &periods);
                let starts_at = i
                    .period_end
                    .checked_sub(i.period * n)
                    .unwrap_or(i.period_end);
                let f = Firing {
                    starts_at,
                    sample_trace_ids: samples.trace_ids(),
                    diagnosis,
                };
                let ev = self.event(i, AlertStatus::Firing, &f, figures, evidence);
                self.firing = Some(f);
                self.healthy_streak = 0;
                Some(ev)
            }
            None => None,
            Some(f) => {
                if !i.judgement.healthy {
                    self.healthy_streak = 0;
                    return None;
                }
                self.healthy_streak += 1;
                if self.healthy_streak < i.resolve_after {
                    return None;
                }
                let n = self.healthy_streak;
                let periods = last(i.history, n as usize);
                let figures = figures(&periods, i, n);
                let evidence = evidence(&periods);
                let ev = self.event(i, AlertStatus::Resolved, f, figures, evidence);
                self.firing = None;
                self.healthy_streak = 0;
                Some(ev)
            }
        }
    }

    fn event(
        &self,
        i: &StepInput<'_>,
        status: AlertStatus,
        f: &Firing,
        figures: AlertFigures,
        evidence: KernelEvidence,
    ) -> AlertEvent {
        AlertEvent {
            kind: self.kind,
            status,
            route: i.route.clone(),
            gray_tag: i.gray_tag.to_string(),
            starts_at: f.starts_at,
            ends_at: (status == AlertStatus::Resolved).then_some(i.period_end),
            figures,
            evidence,
            sample_trace_ids: f.sample_trace_ids.clone(),
            diagnosis: f.diagnosis.clone(),
            snapshot_id: None,
        }
    }
}

fn last<'a>(history: &[&'a PeriodSummary], n: usize) -> Vec<&'a PeriodSummary> {
    let from = history.len().saturating_sub(n);
    history[from..].to_vec()
}

/// Figures over the given periods; P99 is the worst period's P99 (closed
/// periods keep their P99, not their sketch).
fn figures(periods: &[&PeriodSummary], i: &StepInput<'_>, n: u32) -> AlertFigures {
    let requests: u64 = periods.iter().map(|p| p.requests).sum();
    let errors: u64 = periods.iter().map(|p| p.errors).sum();
    AlertFigures {
        requests,
        errors_5xx: errors,
        error_ratio: ratio(errors, requests),
        p99: periods
            .iter()
            .filter_map(|p| p.p99)
            .max()
            .unwrap_or_default(),
        slo_p99: i.target.p99,
        slo_error_ratio: i.target.error_ratio,
        baseline_median: i.baseline.map(|b| b.median),
        baseline_mad: i.baseline.map(|b| b.mad),
        periods: n,
    }
}

/// Kernel evidence summed over the given periods.
pub fn evidence(periods: &[&PeriodSummary]) -> KernelEvidence {
    let mut peers = TopPeers::default();
    periods
        .iter()
        .for_each(|p| peers.merge(&p.retransmit_peers));
    KernelEvidence {
        retransmitted_segments: periods.iter().map(|p| p.retransmitted_segments).sum(),
        requests_with_retransmits: periods.iter().map(|p| p.requests_with_retransmits).sum(),
        connect_failures: periods.iter().map(|p| p.connect_failures).sum(),
        connect_p99: periods.iter().filter_map(|p| p.connect_p99).max(),
        top_retransmit_peer: peers.top().map(|(e, _)| endpoint(&e)),
    }
}

fn endpoint(e: &Endpoint) -> String {
    std::net::SocketAddr::new(e.ip, e.port).to_string()
}

/// One line: what fired, then what TCP says about it.
fn diagnose(
    kind: AlertKind,
    gray_tag: &str,
    f: &AlertFigures,
    ev: &KernelEvidence,
    periods: &[&PeriodSummary],
) -> String {
    let what = headline(kind, gray_tag, f);
    let mut tcp = Vec::new();
    let retrans_share = ratio(ev.requests_with_retransmits, f.requests);
    if ev.retransmitted_segments > 0 && retrans_share >= RETRANSMIT_SUSPECT_SHARE {
        tcp.push(format!(
            "{} retransmitted segments on {} of requests{}",
            ev.retransmitted_segments,
            pct(retrans_share),
            ev.top_retransmit_peer
                .as_ref()
                .map(|p| format!(" to {p}"))
                .unwrap_or_default()
        ));
    }
    if ev.connect_failures > 0 {
        let peer = periods
            .iter()
            .filter_map(|p| p.connect_failure_peer)
            .max_by_key(|(_, n)| *n)
            .map(|(e, _)| format!(" to {}", endpoint(&e)))
            .unwrap_or_default();
        tcp.push(format!("{} failed connects{peer}", ev.connect_failures));
    }
    if let Some(c) = ev.connect_p99.filter(|c| *c >= SLOW_CONNECT) {
        tcp.push(format!("connect P99 {}", fmt_duration(c)));
    }
    if tcp.is_empty() {
        format!(
            "{what}; TCP clean ({} retransmits, {} connect failures): look at the application",
            ev.retransmitted_segments, ev.connect_failures
        )
    } else {
        format!("{what}; coincides with {}", tcp.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_duration(Duration::from_millis(2310)), "2.31s");
        assert_eq!(fmt_duration(Duration::from_micros(120)), "120µs");
    }

    #[test]
    fn diagnosis_names_retransmit_peer() {
        let mut peers = TopPeers::default();
        let ep = Endpoint {
            ip: [10, 0, 3, 7].into(),
            port: 5432,
        };
        peers.add(ep, 40);
        let p = PeriodSummary {
            requests: 1000,
            errors: 50,
            p99: Some(Duration::from_secs(2)),
            retransmitted_segments: 40,
            requests_with_retransmits: 41,
            retransmit_peers: peers,
            ..Default::default()
        };
        let ev = evidence(&[&p]);
        assert_eq!(ev.top_retransmit_peer.as_deref(), Some("10.0.3.7:5432"));
        let f = AlertFigures {
            requests: 1000,
            errors_5xx: 50,
            p99: Duration::from_secs(2),
            ..Default::default()
        };
        let d = diagnose(AlertKind::P99SpikeWith5xxBurst, "", &f, &ev, &[&p]);
        assert!(
            d.contains("40 retransmitted segments on 4.1 % of requests to 10.0.3.7:5432"),
            "{d}"
        );
    }

    #[test]
    fn diagnosis_says_tcp_clean() {
        let p = PeriodSummary {
            requests: 1000,
            errors: 50,
            ..Default::default()
        };
        let ev = evidence(&[&p]);
        let f = AlertFigures {
            requests: 1000,
            errors_5xx: 50,
            ..Default::default()
        };
        let d = diagnose(AlertKind::P99SpikeWith5xxBurst, "", &f, &ev, &[&p]);
        assert!(
            d.ends_with("TCP clean (0 retransmits, 0 connect failures): look at the application"),
            "{d}"
        );
    }
}
