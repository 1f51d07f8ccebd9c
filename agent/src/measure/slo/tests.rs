//! Engine and detector tests, second by second on a manual clock.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, ManualClock};
use crate::request::Endpoint;
use crate::request::route::RouteKey;
use crate::respond::alert::model::{AlertEvent, AlertKind, AlertStatus};

use super::*;

const PERIOD: Duration = Duration::from_secs(10);

struct Harness {
    clock: ManualClock,
    eng: SloEngine,
    next_trace: u64,
}

/// One period's traffic on one entry.
#[derive(Clone, Copy)]
struct Traffic<'a> {
    route: &'a RouteKey,
    tag: &'a str,
    requests: u64,
    errors: u64,
    latency_ms: u64,
    retransmits_every: u64,
}

fn traffic<'a>(route: &'a RouteKey, requests: u64, errors: u64, latency_ms: u64) -> Traffic<'a> {
    Traffic {
        route,
        tag: "",
        requests,
        errors,
        latency_ms,
        retransmits_every: 0,
    }
}

fn db() -> Endpoint {
    Endpoint {
        ip: [10, 0, 3, 7].into(),
        port: 5432,
    }
}

impl Harness {
    fn new(cfg: SloConfig) -> Self {
        cfg.validate().unwrap();
        let clock = ManualClock::default();
        let eng = SloEngine::new(cfg, Arc::new(clock.clone()));
        Self {
            clock,
            eng,
            next_trace: 1,
        }
    }

    fn record(&mut self, t: Traffic<'_>) {
        for i in 0..t.requests {
            // ±5 % deterministic jitter, so the baseline has a non-zero MAD.
            let jitter = 95 + (i * 7919 % 11);
            let duration_ns = t.latency_ms * 1_000_000 * jitter / 100;
            self.next_trace += 1;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&self.next_trace.to_be_bytes());
            let retrans = t.retransmits_every > 0 && i % t.retransmits_every == 0;
            self.eng.record(&SloSample {
                route: t.route,
                gray_tag: t.tag,
                status: if i < t.errors { 503 } else { 200 },
                duration_ns,
                trace_id: Some(id),
                retransmits: if retrans { 2 } else { 0 },
                connect_duration_ns: (i == 0).then_some(300_000),
                peer: Some(db()),
            });
        }
    }

    /// Records the traffic, then lets one period end and ticks.
    fn period(&mut self, ts: &[Traffic<'_>]) -> TickOutput {
        for t in ts {
            self.record(*t);
        }
        self.clock.advance(PERIOD);
        self.eng.tick()
    }

    fn periods(&mut self, n: usize, ts: &[Traffic<'_>]) -> Vec<AlertEvent> {
        (0..n).flat_map(|_| self.period(ts).alerts).collect()
    }
}

fn route() -> RouteKey {
    RouteKey::new("shop", "GET", "/cart/{id}")
}

fn kinds(alerts: &[AlertEvent]) -> Vec<(AlertKind, AlertStatus)> {
    alerts.iter().map(|a| (a.kind, a.status)).collect()
}

#[test]
fn low_volume_never_alerts() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    // 19 requests per period (min_requests is 20), all failing and slow.
    for _ in 0..40 {
        let out = h.period(&[traffic(&r, 19, 19, 5_000)]);
        assert!(out.alerts.is_empty(), "{:?}", out.alerts);
        assert_eq!(out.verdicts.len(), 1);
        assert!(out.verdicts[0].healthy);
        assert_eq!(out.verdicts[0].requests, 19);
    }
}

#[test]
fn single_slow_period_is_l1_only_and_resolves() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    assert!(h.periods(10, &[traffic(&r, 200, 0, 50)]).is_empty());
    // One slow period with errors: over target and a spike, but one period.
    let out = h.period(&[traffic(&r, 200, 20, 1_500)]);
    assert_eq!(
        kinds(&out.alerts),
        vec![(AlertKind::P99Breach, AlertStatus::Firing)]
    );
    assert!(!out.verdicts[0].healthy);
    let a = &out.alerts[0];
    assert_eq!(a.figures.slo_p99, Duration::from_millis(800));
    assert!(
        a.figures.p99 > Duration::from_millis(1_400),
        "{:?}",
        a.figures
    );
    assert!(a.diagnosis.starts_with("P99 1."), "{}", a.diagnosis);
    let onset = a.starts_at;
    // One healthy period does not resolve (resolve_after_periods = 2) ...
    assert!(h.period(&[traffic(&r, 200, 0, 50)]).alerts.is_empty());
    // ... the second does, with ends_at at the end of that period.
    let out = h.period(&[traffic(&r, 200, 0, 50)]);
    assert_eq!(
        kinds(&out.alerts),
        vec![(AlertKind::P99Breach, AlertStatus::Resolved)]
    );
    assert_eq!(out.alerts[0].starts_at, onset);
    assert_eq!(out.alerts[0].ends_at, Some(h.clock.now()));
}

#[test]
fn fivexx_without_latency_spike_is_not_l2() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.periods(10, &[traffic(&r, 200, 0, 50)]);
    for _ in 0..5 {
        let out = h.period(&[traffic(&r, 200, 40, 50)]);
        assert!(out.alerts.is_empty(), "{:?}", out.alerts);
        assert!(!out.verdicts[0].healthy, "20 % errors breach the SLO");
    }
}

#[test]
fn l2_needs_two_consecutive_spike_periods() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.periods(10, &[traffic(&r, 200, 0, 50)]);
    // Spike + burst, healthy, spike + burst: never two in a row.
    let bad = traffic(&r, 200, 10, 300);
    let good = traffic(&r, 200, 0, 50);
    for t in [bad, good, bad, good, bad] {
        let out = h.period(&[t]);
        assert!(
            !out.alerts
                .iter()
                .any(|a| a.kind == AlertKind::P99SpikeWith5xxBurst),
            "{:?}",
            out.alerts
        );
    }
    let spike_start = h.clock.now();
    let out = h.period(&[bad]);
    let l2: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::P99SpikeWith5xxBurst)
        .collect();
    assert_eq!(l2.len(), 1, "{:?}", out.alerts);
    let a = l2[0];
    assert_eq!(a.status, AlertStatus::Firing);
    // 300 ms is under the 800 ms target: no L1, but a spike against 50 ms.
    assert!(!out.alerts.iter().any(|a| a.kind == AlertKind::P99Breach));
    assert_eq!(a.starts_at, spike_start - PERIOD);
    assert_eq!(a.figures.periods, 2);
    assert_eq!(a.figures.requests, 400);
    assert_eq!(a.figures.errors_5xx, 20);
    let median = a.figures.baseline_median.unwrap();
    assert!(median > Duration::from_millis(48) && median < Duration::from_millis(56));
    assert!(a.figures.baseline_mad.is_some());
    assert_eq!(a.sample_trace_ids.len(), 5);
    assert!(a.sample_trace_ids.iter().all(|t| t.len() == 32));
    assert!(
        a.diagnosis
            .ends_with("TCP clean (0 retransmits, 0 connect failures): look at the application"),
        "{}",
        a.diagnosis
    );
    assert!(a.diagnosis.contains("baseline"), "{}", a.diagnosis);
    // Firing is sent once; the third bad period sends nothing new.
    assert!(h.period(&[bad]).alerts.is_empty());
}

#[test]
fn l2_sample_traces_are_the_failed_requests() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.periods(10, &[traffic(&r, 100, 0, 50)]);
    let before = h.next_trace;
    let alerts = h.periods(2, &[traffic(&r, 100, 3, 400)]);
    let l2 = alerts
        .iter()
        .find(|a| a.kind == AlertKind::P99SpikeWith5xxBurst)
        .expect("L2");
    // The failed requests are the first 3 of each period.
    let failed: Vec<String> = [0u64, 1, 2, 100, 101, 102]
        .iter()
        .map(|i| format!("{:032x}", before + 1 + i))
        .collect();
    for id in &l2.sample_trace_ids {
        assert!(failed.contains(id), "{id} not a failed request");
    }
}

#[test]
fn baseline_does_not_learn_from_the_incident() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.periods(15, &[traffic(&r, 200, 0, 50)]);
    let before = h.eng.baseline(&r).unwrap();
    let alerts = h.periods(20, &[traffic(&r, 200, 30, 2_000)]);
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::P99SpikeWith5xxBurst && a.status == AlertStatus::Firing)
    );
    let during = h.eng.baseline(&r).unwrap();
    assert_eq!(
        during, before,
        "the incident's periods never enter the baseline"
    );
    // Recovery: healthy periods are learned again.
    let alerts = h.periods(3, &[traffic(&r, 200, 0, 50)]);
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::P99SpikeWith5xxBurst && a.status == AlertStatus::Resolved),
        "{:?}",
        kinds(&alerts)
    );
    let after = h.eng.baseline(&r).unwrap();
    assert!(after.periods > before.periods);
    assert!(after.median < Duration::from_millis(60));
}

#[test]
fn resolve_waits_for_configured_healthy_periods() {
    let cfg = SloConfig {
        resolve_after_periods: 3,
        ..Default::default()
    };
    let mut h = Harness::new(cfg);
    let r = route();
    h.periods(10, &[traffic(&r, 200, 0, 50)]);
    let fired = h.periods(2, &[traffic(&r, 200, 20, 400)]);
    assert!(
        fired
            .iter()
            .any(|a| a.kind == AlertKind::P99SpikeWith5xxBurst)
    );
    let good = traffic(&r, 200, 0, 50);
    assert!(h.periods(2, &[good]).is_empty());
    // A relapse restarts the count.
    h.period(&[traffic(&r, 200, 20, 400)]);
    assert!(h.periods(2, &[good]).is_empty());
    let out = h.period(&[good]);
    assert_eq!(
        kinds(&out.alerts),
        vec![(AlertKind::P99SpikeWith5xxBurst, AlertStatus::Resolved)]
    );
    let a = &out.alerts[0];
    assert_eq!(a.ends_at, Some(h.clock.now()));
    assert_eq!(a.figures.periods, 3);
    assert_eq!(a.figures.errors_5xx, 0);
}

#[test]
fn gray_rollback_fires_only_while_stable_is_healthy() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    let stable_ok = traffic(&r, 200, 0, 50);
    let canary_bad = Traffic {
        tag: "version:canary",
        ..traffic(&r, 100, 10, 3_000)
    };
    let out = h.periods(2, &[stable_ok, canary_bad]);
    assert!(out.is_empty(), "{:?}", kinds(&out));
    let out = h.period(&[stable_ok, canary_bad]);
    assert_eq!(
        kinds(&out.alerts),
        vec![(AlertKind::GrayRollback, AlertStatus::Firing)]
    );
    let a = &out.alerts[0];
    assert_eq!(a.gray_tag, "version:canary");
    assert_eq!(a.figures.periods, 3);
    assert!(
        a.diagnosis.contains("gray cohort version=canary:"),
        "{}",
        a.diagnosis
    );
    // The stable verdict stays healthy: a canary never fuses the route.
    assert!(out.verdicts.iter().all(|v| v.healthy));
    let out = h.period(&[stable_ok, canary_bad]);
    assert!(out.alerts.is_empty(), "fired once, not again");
    let out = h.periods(
        2,
        &[
            stable_ok,
            Traffic {
                tag: "canary",
                ..traffic(&r, 100, 0, 50)
            },
        ],
    );
    assert_eq!(
        kinds(&out),
        vec![(AlertKind::GrayRollback, AlertStatus::Resolved)]
    );

    // Stable as broken as the canary (a shared dependency): no rollback.
    let mut h = Harness::new(SloConfig::default());
    let stable_bad = traffic(&r, 200, 20, 3_000);
    let out = h.periods(6, &[stable_bad, canary_bad]);
    assert!(
        !out.iter().any(|a| a.kind == AlertKind::GrayRollback),
        "{:?}",
        kinds(&out)
    );
}

#[test]
fn burn_rates_follow_the_error_budget() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    // 1 % errors against a 0.5 % SLO burns the budget twice as fast.
    h.periods(30, &[traffic(&r, 1000, 10, 50)]);
    let b = h.eng.burn_rates(&r, "").unwrap();
    assert!((b.m5 - 2.0).abs() < 1e-9, "{b:?}");
    assert!((b.h1 - 2.0).abs() < 1e-9, "{b:?}");
    assert!((b.h6 - 2.0).abs() < 1e-9, "{b:?}");
    h.periods(30, &[traffic(&r, 1000, 0, 50)]);
    let b = h.eng.burn_rates(&r, "").unwrap();
    assert_eq!(b.m5, 0.0);
    assert!((b.h1 - 1.0).abs() < 1e-9, "{b:?}");
}

#[test]
fn route_cap_holds_and_counts_overflow() {
    let cfg = SloConfig {
        max_routes: 10,
        ..Default::default()
    };
    let mut h = Harness::new(cfg);
    let routes: Vec<RouteKey> = (0..50)
        .map(|i| RouteKey::new("shop", "GET", &format!("/r{i}")))
        .collect();
    for r in &routes {
        h.record(traffic(r, 3, 0, 10));
    }
    assert_eq!(h.eng.entries(), 10);
    assert_eq!(h.eng.untracked_requests(), 40 * 3);
    // Gray tags count against the same cap.
    h.record(Traffic {
        tag: "canary",
        ..traffic(&routes[0], 1, 0, 10)
    });
    assert_eq!(h.eng.entries(), 10);
    // Memory does not grow with traffic on the tracked routes.
    h.period(&[]);
    let bytes = h.eng.heap_bytes();
    for _ in 0..5 {
        for r in &routes[..10] {
            h.record(traffic(r, 2_000, 10, 30));
        }
        h.period(&[]);
    }
    assert!(
        h.eng.heap_bytes() <= bytes + 10 * 4096,
        "{} vs {bytes}",
        h.eng.heap_bytes()
    );
    // Snapshot and counter agree.
    let snap = h.eng.metrics().snapshot();
    assert_eq!(snap.rows.len(), 10);
    assert_eq!(snap.untracked_requests, 121);
}

#[test]
fn kernel_evidence_names_the_peer() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.periods(10, &[traffic(&r, 200, 0, 50)]);
    let bad = Traffic {
        retransmits_every: 10,
        ..traffic(&r, 200, 20, 400)
    };
    h.record(bad);
    for _ in 0..7 {
        h.eng.record_connect_failure("shop", Some(db()));
    }
    h.eng.record_connect_failure("other-service", None);
    let out = h.period(&[]);
    assert!(out.alerts.is_empty());
    let alerts = h.periods(1, &[bad]);
    let a = alerts
        .iter()
        .find(|a| a.kind == AlertKind::P99SpikeWith5xxBurst)
        .expect("L2");
    assert_eq!(a.evidence.retransmitted_segments, 80);
    assert_eq!(a.evidence.requests_with_retransmits, 40);
    assert_eq!(a.evidence.connect_failures, 7);
    assert_eq!(
        a.evidence.top_retransmit_peer.as_deref(),
        Some("10.0.3.7:5432")
    );
    let cp = a.evidence.connect_p99.unwrap();
    assert!(
        cp > Duration::from_micros(290) && cp < Duration::from_micros(310),
        "{cp:?}"
    );
    assert!(
        a.diagnosis.contains(
            "coincides with 80 retransmitted segments on 10.0 % of requests to 10.0.3.7:5432, 7 failed connects to 10.0.3.7:5432"
        ),
        "{}",
        a.diagnosis
    );
}

#[test]
fn tick_closes_every_ended_period() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.record(traffic(&r, 30, 0, 10));
    assert!(h.eng.tick().verdicts.is_empty(), "no period ended yet");
    h.clock.advance(PERIOD * 3);
    let out = h.eng.tick();
    assert_eq!(out.verdicts.len(), 3);
    assert_eq!(out.verdicts[0].requests, 30);
    assert_eq!(out.verdicts[1].requests, 0);
    assert!(out.verdicts[0].period_end < out.verdicts[2].period_end);
    assert_eq!(
        out.verdicts[2]
            .period_end
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % PERIOD.as_nanos(),
        0,
        "periods are aligned"
    );
    // A long suspend is bounded work.
    h.clock.advance(Duration::from_secs(86_400));
    let out = h.eng.tick();
    assert!(out.verdicts.len() <= 32, "{}", out.verdicts.len());
    assert!(h.eng.tick().verdicts.is_empty());
}

#[test]
fn idle_entries_are_dropped_after_the_burn_horizon() {
    let mut h = Harness::new(SloConfig {
        period: Duration::from_secs(60),
        ..Default::default()
    });
    let r = route();
    h.record(traffic(&r, 5, 0, 10));
    for _ in 0..(6 * 60 + 10) {
        h.clock.advance(Duration::from_secs(60));
        h.eng.tick();
    }
    assert_eq!(h.eng.entries(), 0);
    // The slot is free again.
    h.record(traffic(&r, 5, 0, 10));
    assert_eq!(h.eng.entries(), 1);
}

fn encode(eng: &SloEngine) -> String {
    let mut reg = prometheus_client::registry::Registry::default();
    eng.register_metrics(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    text
}

#[test]
fn metrics_export_route_and_slo_gauges() {
    let mut h = Harness::new(SloConfig::default());
    let r = route();
    h.periods(10, &[traffic(&r, 200, 0, 50)]);
    h.periods(
        2,
        &[
            traffic(&r, 200, 20, 400),
            Traffic {
                tag: "canary",
                ..traffic(&r, 50, 0, 60)
            },
        ],
    );
    let text = encode(&h.eng);
    let labels =
        r#"service_name="shop",http_request_method="GET",http_route="/cart/{id}",gray_tag=""#;
    for line in [
        format!("sloguard_route_requests{{{labels}\"}} 200"),
        format!("sloguard_route_error_ratio{{{labels}\"}} 0.1"),
        format!("sloguard_slo_target_p99_seconds{{{labels}\"}} 0.8"),
        format!("sloguard_slo_target_error_ratio{{{labels}\"}} 0.005"),
        format!("sloguard_slo_alerting{{{labels}\",alertname=\"SloguardP99SpikeWith5xxBurst\"}} 1"),
        format!("sloguard_slo_alerting{{{labels}\",alertname=\"SloguardP99Breach\"}} 0"),
        format!("sloguard_slo_burn_rate{{{labels}\",window=\"5m\"}} "),
        format!("sloguard_route_requests{{{labels}canary\"}} 50"),
        format!("sloguard_slo_alerting{{{labels}canary\",alertname=\"SloguardGrayRollback\"}} 0"),
        "sloguard_slo_routes 2".to_string(),
        "sloguard_slo_untracked_requests_total 0".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    let p99 = text
        .lines()
        .find(|l| l.starts_with(&format!("sloguard_route_p99_seconds{{{labels}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!((p99 - 0.42).abs() < 0.02, "{p99}");
    let base = text
        .lines()
        .find(|l| l.starts_with("sloguard_route_baseline_p99_seconds"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!((base - 0.052).abs() < 0.005, "{base}");
}

#[test]
fn metrics_pass_promtool() {
    let mut h = Harness::new(SloConfig {
        max_routes: 3,
        ..Default::default()
    });
    let r = route();
    let other = RouteKey::new("blog", "POST", "/posts");
    let third = RouteKey::new("blog", "GET", "/");
    h.periods(10, &[traffic(&r, 200, 0, 50), traffic(&other, 5, 0, 10)]);
    h.periods(
        2,
        &[
            traffic(&r, 200, 20, 400),
            Traffic {
                tag: "canary",
                ..traffic(&r, 50, 0, 60)
            },
            traffic(&third, 1, 0, 1),
        ],
    );
    let text = encode(&h.eng);
    crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&text);
    assert!(
        text.contains("sloguard_slo_untracked_requests_total 2"),
        "{text}"
    );
}

#[test]
fn engine_moves_to_a_pipeline_thread() {
    fn send<T: Send>() {}
    send::<SloEngine>();
    send::<TickOutput>();
    fn shared<T: Send + Sync + Clone>() {}
    shared::<SloMetrics>();
}

/// The memory budget: 1,000 routes × 5 gray tags with latencies spread over
/// three decades and retransmits in every period cost ~3.2 KiB per entry
/// (~16 MiB at the 5,000 default cap; 4.0 KiB before 16-bit sketch counters).
#[test]
fn memory_per_entry_stays_within_budget() {
    let mut h = Harness::new(SloConfig::default());
    let keys: Vec<RouteKey> = (0..1000)
        .map(|i| RouteKey::new("svc", "GET", &format!("/r{i}")))
        .collect();
    let tags = ["", "a", "b", "c", "d"];
    for p in 0..6u64 {
        for (i, k) in keys.iter().enumerate() {
            for (t, tag) in tags.iter().enumerate() {
                for j in 0..4u64 {
                    // 1 ms .. 1 s across requests of one entry.
                    let ms = [1, 10, 100, 1000][((i + t) as u64 + j + p) as usize % 4];
                    h.record(Traffic {
                        tag,
                        retransmits_every: 3,
                        ..traffic(k, 1, 0, ms)
                    });
                }
            }
        }
        h.period(&[]);
    }
    assert_eq!(h.eng.entries(), 5000);
    let per_entry = h.eng.heap_bytes() / 5000;
    assert!(
        per_entry < 3584,
        "{per_entry} bytes per entry (3.2 KiB measured)"
    );
    eprintln!("{per_entry} bytes per entry");
}

#[test]
fn period_due_turns_true_when_the_open_period_ends() {
    let mut h = Harness::new(SloConfig::default());
    assert!(!h.eng.period_due());
    h.clock.advance(PERIOD);
    assert!(h.eng.period_due());
    h.eng.tick();
    assert!(!h.eng.period_due());
}
