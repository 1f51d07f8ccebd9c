use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::measure::slo::SloTarget;
use crate::measure::slo::burn::BurnRates;
use crate::measure::slo::metrics::{MetricsSnapshot, RouteRow};
use crate::request::route::RouteKey;
use crate::respond::alert::model::AlertKind;
use crate::respond::fuse::{FuseMode, FuseState, Override, OverrideKind, RouteFuseStatus};

fn row(route: &str, tag: &str, alerting: Vec<(AlertKind, bool)>) -> RouteRow {
    RouteRow {
        route: RouteKey::new("shop", "GET", route),
        gray_tag: Arc::from(tag),
        requests: 50,
        p50: Some(Duration::from_millis(4)),
        p99: Some(Duration::from_millis(300)),
        error_ratio: 0.1,
        baseline_p99: Some(Duration::from_millis(20)),
        target: SloTarget {
            p99: Duration::from_millis(250),
            error_ratio: 0.005,
        },
        burn: BurnRates {
            m5: 20.0,
            h1: 2.0,
            h6: 0.5,
        },
        alerting,
    }
}

fn fuse(route: &str, state: FuseState, kind: Option<OverrideKind>) -> RouteFuseStatus {
    RouteFuseStatus {
        service: "shop".into(),
        method: "GET".into(),
        route: route.into(),
        state,
        mode: FuseMode::Enforce,
        escalation: 0,
        open_until: None,
        overridden: kind.map(|kind| Override {
            kind,
            until: SystemTime::UNIX_EPOCH,
            who: "a".into(),
            why: "b".into(),
        }),
        seq: 1,
        pending_actions: vec![],
    }
}

#[test]
fn assemble_joins_slo_rows_with_fuse_states_and_counts_routes() {
    let snap = MetricsSnapshot {
        rows: vec![
            row(
                "/pay",
                "",
                vec![
                    (AlertKind::P99Breach, true),
                    (AlertKind::P99SpikeWith5xxBurst, true),
                ],
            ),
            row("/pay", "canary", vec![(AlertKind::GrayRollback, true)]),
            row("/cart", "", vec![(AlertKind::P99Breach, false)]),
        ],
        untracked_requests: 7,
        entries: 3,
    };
    let fuses = [
        fuse("/pay", FuseState::Open, Some(OverrideKind::ForceOpen)),
        fuse("/quiet", FuseState::Open, Some(OverrideKind::ForceOpen)),
    ];
    let doc = assemble(
        "node-1",
        Duration::from_secs(10),
        FuseMode::Enforce,
        SystemTime::UNIX_EPOCH,
        &snap,
        &fuses,
        AgentStatus::default(),
    );
    assert_eq!(doc.schema, STATUS_SCHEMA);
    assert_eq!(doc.generated_at, "1970-01-01T00:00:00Z");
    assert_eq!(doc.fuse_mode, "enforce");
    let pay = &doc.routes[0];
    assert_eq!(pay.rate_per_second, 5.0);
    assert_eq!(pay.p50_seconds, Some(0.004));
    assert!(pay.l1 && pay.l2 && !pay.gray_rollback);
    assert_eq!(pay.level(), "L2");
    assert_eq!(pay.worst_burn(), 20.0);
    assert_eq!(pay.fuse.state, "open");
    assert_eq!(pay.fuse.overridden.as_deref(), Some("force_open"));
    // The fuse is per route: the gray row shares it.
    let canary = &doc.routes[1];
    assert_eq!(
        (canary.level(), canary.fuse.state.as_str()),
        ("gray", "open")
    );
    let cart = &doc.routes[2];
    assert_eq!((cart.level(), cart.fuse.state.as_str()), ("", "closed"));
    assert!(cart.alerts.is_empty());
    // Two distinct routes (the gray row is the same route).
    assert_eq!(doc.agent.routes_per_service["shop"], 2);
    assert_eq!(doc.agent.slo_untracked_requests, 7);
    // A fuse without SLO figures is still shown.
    assert_eq!(doc.other_fuses.len(), 1);
    assert_eq!(doc.other_fuses[0].route, "/quiet");
    // The CLI reads what the agent writes.
    let back: StatusDoc = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
    assert_eq!(back, doc);
    let v = serde_json::to_value(&doc).unwrap();
    assert_eq!(v["routes"][0]["burn_rate"]["5m"], 20.0);
}

#[test]
fn event_rate_is_the_slope_over_the_window() {
    let t0 = std::time::Instant::now();
    let mut r = EventRate::default();
    assert_eq!(r.per_second(), 0.0);
    for i in 0..30u64 {
        r.observe(t0 + Duration::from_secs(i), i * 100);
    }
    assert!((r.per_second() - 100.0).abs() < 1e-9);
    // Old samples leave the window: a stop shows within it.
    for i in 30..45u64 {
        r.observe(t0 + Duration::from_secs(i), 2900);
    }
    assert_eq!(r.per_second(), 0.0);
}
