//! Route admission and eviction: a flood of one-off paths cannot take the
//! room of real routes, from the table alone and through the whole chain
//! (route table → SLO engine → fuse controller).
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::measure::slo::{SloConfig, SloEngine, SloSample};
use crate::respond::fuse::{FuseConfig, FuseController, FuseMode, FuseState};

fn table(yaml: &str) -> RouteTable {
    let cfg: RoutesConfig = serde_yaml_ng::from_str(yaml).unwrap();
    cfg.validate().unwrap();
    RouteTable::new(&cfg)
}

/// Distinct names the id heuristic cannot fold: base-7 digits of `i` as words.
fn junk(i: usize) -> String {
    let words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "zeta"];
    (0..6)
        .map(|d| format!("/{}", words[(i / 7usize.pow(d)) % 7]))
        .collect()
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

#[test]
fn junk_paths_do_not_take_the_room_of_real_routes() {
    let mut t = table("{}");
    for i in 0..10_000 {
        let k = t.route_at("svc", "GET", &junk(i), at(0));
        assert_eq!(&*k.route, UNADMITTED_ROUTE);
    }
    assert_eq!(t.routes_of("svc"), 0);
    assert_eq!(t.counters().unadmitted_requests, 10_000);
    assert_eq!(t.counters().overflow_requests, 0);
    assert!(t.services["svc"].pending.len() <= pending_cap(500));
    // Real routes: admitted at their third request, under the flood.
    for round in 0..3 {
        for (j, path) in ["/api/pay", "/api/cart", "/users/42"].iter().enumerate() {
            let k = t.route_at("svc", "GET", path, at(1));
            let want = ["/api/pay", "/api/cart", "/users/{id}"][j];
            let got = if round < 2 { UNADMITTED_ROUTE } else { want };
            assert_eq!(&*k.route, got, "round {round} {path}");
            t.route_at("svc", "GET", &junk(20_000 + round * 10 + j), at(1));
        }
    }
    assert_eq!(t.routes_of("svc"), 3);
    // A configured pattern is a route at first sight.
    let mut t = table("patterns: [{pattern: '/static/*'}]\n");
    assert_eq!(
        &*t.route_for("svc", "GET", "/static/a.css").route,
        "/static/*"
    );
}

#[test]
fn admission_counts_hits_within_the_window() {
    let mut t = table("admit_after: 3\nadmit_window: 10m\n");
    let route = |t: &mut RouteTable, s| t.route_at("svc", "GET", "/a", at(s)).route;
    assert_eq!(&*route(&mut t, 0), UNADMITTED_ROUTE);
    assert_eq!(&*route(&mut t, 1), UNADMITTED_ROUTE);
    // The window is over: the count starts again.
    assert_eq!(&*route(&mut t, 700), UNADMITTED_ROUTE);
    assert_eq!(&*route(&mut t, 701), UNADMITTED_ROUTE);
    assert_eq!(&*route(&mut t, 702), "/a");
    assert_eq!(&*route(&mut t, 703), "/a");
}

#[test]
fn idle_routes_leave_and_free_the_cap() {
    let mut t = table("max_per_service: 2\nadmit_after: 1\nidle_after: 1h\n");
    assert_eq!(&*t.route_at("svc", "GET", "/a", at(0)).route, "/a");
    assert_eq!(&*t.route_at("svc", "GET", "/b", at(0)).route, "/b");
    assert_eq!(
        &*t.route_at("svc", "GET", "/c", at(0)).route,
        OVERFLOW_ROUTE
    );
    // /a keeps its place through the path cache; /b goes quiet.
    assert_eq!(&*t.route_at("svc", "GET", "/a?x=1", at(3000)).route, "/a");
    assert_eq!(&*t.route_at("svc", "GET", "/c", at(3700)).route, "/c");
    assert_eq!(t.counters().evicted_routes, 1);
    assert_eq!(&*t.route_at("svc", "GET", "/a", at(3701)).route, "/a");
    assert_eq!(
        &*t.route_at("svc", "GET", "/b", at(3701)).route,
        OVERFLOW_ROUTE
    );
}

/// One request through the table and, as the pipeline does, the SLO engine.
fn request(
    t: &mut RouteTable,
    slo: &mut SloEngine,
    now: SystemTime,
    path: &str,
    i: u64,
    status: u16,
    latency_ms: u64,
) {
    let k = t.route_at("shop", "GET", path, now);
    if &*k.route == UNADMITTED_ROUTE {
        return;
    }
    // ±5 % deterministic jitter, so the baseline has a non-zero MAD.
    let jitter = 95 + (i * 7919 % 11);
    slo.record(&SloSample {
        route: &k,
        gray_tag: "",
        status,
        duration_ns: latency_ms * 1_000_000 * jitter / 100,
        trace_id: None,
        retransmits: 0,
        connect_duration_ns: None,
        peer: None,
    });
}

#[test]
fn junk_flood_then_real_traffic_real_routes_are_judged_and_fuse() {
    let clock = ManualClock::default();
    let mut t = RouteTable::new(&RoutesConfig::default());
    let slo_cfg = SloConfig::default();
    let period = slo_cfg.period;
    let mut slo = SloEngine::new(slo_cfg, Arc::new(clock.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut fuse = FuseController::new(
        FuseConfig {
            mode: FuseMode::DryRun,
            state_file: dir.path().join("state.json"),
            audit_file: None,
            ..Default::default()
        },
        Arc::new(clock.clone()),
    )
    .unwrap();
    for i in 0..10_000 {
        request(&mut t, &mut slo, clock.now(), &junk(i), 0, 200, 5);
    }
    let real = ["/api/pay", "/api/cart", "/api/list", "/api/items/7"];
    let mut junk_i = 10_000;
    let mut fused = Vec::new();
    let mut pay_judged = false;
    for p in 0..14 {
        let bad = p >= 10;
        for i in 0..200u64 {
            for path in real {
                let (status, ms) = if bad && path == "/api/pay" {
                    (if i < 10 { 503 } else { 200 }, 300)
                } else {
                    (200, 50)
                };
                request(&mut t, &mut slo, clock.now(), path, i, status, ms);
            }
            // The flood goes on.
            request(&mut t, &mut slo, clock.now(), &junk(junk_i), 0, 500, 5);
            junk_i += 1;
        }
        clock.advance(period);
        let out = slo.tick();
        pay_judged |= out
            .verdicts
            .iter()
            .any(|v| &*v.route.route == "/api/pay" && v.judged);
        fuse.on_verdicts(&out.verdicts);
        for a in &out.alerts {
            fused.extend(fuse.on_alert(a));
        }
    }
    assert!(pay_judged, "the real route was judged");
    assert!(
        fused
            .iter()
            .any(|f| f.route == "/api/pay" && f.to == FuseState::Open),
        "the real route fused: {fused:?}"
    );
    assert!(t.routes_of("shop") <= 4, "{}", t.routes_of("shop"));
}
