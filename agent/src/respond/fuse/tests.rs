//! Controller tests on a ManualClock with a recording action.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use super::action::{ActionError, ActionFuture, ActionJob, FuseAction};
use super::*;
use crate::clock::{Clock, ManualClock};
use crate::request::route::RouteKey;
use crate::respond::alert::model::{AlertEvent, AlertKind, AlertStatus, RouteVerdict};

#[derive(Clone, Debug, PartialEq)]
struct Call {
    route: Option<RouteKey>,
    state: FuseState,
    seq: u64,
    key: String,
}

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    fail: Arc<AtomicBool>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl FuseAction for Recorder {
    fn ident(&self) -> (&str, &[String]) {
        ("rec", &[])
    }
    fn is_snapshot(&self) -> bool {
        false
    }
    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(Call {
                route: job.route.clone(),
                state: job.state,
                seq: job.seq,
                key: job.idempotency_key.clone(),
            });
            if self.fail.load(Ordering::SeqCst) {
                Err(ActionError::Status(500))
            } else {
                Ok(())
            }
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    cfg: FuseConfig,
    clock: ManualClock,
    rec: Recorder,
}

fn fixture(mode: FuseMode) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FuseConfig {
        mode,
        state_file: dir.path().join("state.json"),
        audit_file: Some(dir.path().join("audit.jsonl")),
        max_fused_share: 1.0,
        ..Default::default()
    };
    Fixture {
        _dir: dir,
        cfg,
        clock: ManualClock::default(),
        rec: Recorder::default(),
    }
}

impl Fixture {
    fn controller(&self) -> FuseController {
        FuseController::with_actions(
            self.cfg.clone(),
            Arc::new(self.clock.clone()),
            vec![Arc::new(self.rec.clone())],
        )
        .unwrap()
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.cfg.audit_file.as_ref().unwrap())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn route(r: &str) -> RouteKey {
    RouteKey::new("shop", "GET", r)
}

fn l2(r: &RouteKey, requests: u64) -> AlertEvent {
    let mut ev = AlertEvent::example_l2(&r.route, AlertStatus::Firing, UNIX_EPOCH);
    ev.route = r.clone();
    ev.figures.requests = requests;
    ev.figures.errors_5xx = 9;
    ev
}

fn verdict(r: &RouteKey, c: &ManualClock, healthy: bool) -> RouteVerdict {
    RouteVerdict {
        route: r.clone(),
        period_end: c.now(),
        requests: 100,
        judged: true,
        healthy,
    }
}

/// Ticks (real time passes for the worker tasks) until `cond` holds; bounded
/// generously because CI machines are loaded (this is a liveness bound, not
/// a timing assertion).
async fn wait_for(c: &mut FuseController, cond: impl Fn(&mut FuseController) -> bool) {
    for _ in 0..3000 {
        c.tick();
        if cond(c) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 30 s; routes: {:#?}", c.states());
}

fn state(c: &FuseController, r: &RouteKey) -> Option<FuseState> {
    c.status(r).map(|s| s.state)
}

#[tokio::test]
async fn half_open_route_ignores_periods_under_the_volume_gate() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let r = route("/slow");
    c.on_alert(&l2(&r, 100));
    f.clock.advance(Duration::from_secs(30));
    assert_eq!(c.tick()[0].to, FuseState::HalfOpen);
    f.clock.advance(Duration::from_secs(10));
    let quiet = RouteVerdict {
        requests: 6,
        judged: false,
        ..verdict(&r, &f.clock, true)
    };
    assert!(c.on_verdicts(&[quiet]).is_empty());
    assert_eq!(state(&c, &r), Some(FuseState::HalfOpen));
    f.clock.advance(Duration::from_secs(2));
    c.on_verdicts(&[verdict(&r, &f.clock, true)]);
    assert_eq!(state(&c, &r), Some(FuseState::Closed));
}

#[tokio::test]
async fn full_cycle_with_escalation_calls_the_action_per_transition() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let r = route("/slow");
    let mut alert = l2(&r, 100);
    alert.snapshot_id = Some("snap-1765000000-7".into());
    let t = c.on_alert(&alert);
    assert_eq!(
        (t[0].from, t[0].to, t[0].cause),
        (FuseState::Closed, FuseState::Open, Cause::Alert)
    );
    f.clock.advance(Duration::from_secs(29));
    assert!(c.tick().is_empty());
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(c.tick()[0].to, FuseState::HalfOpen);
    f.clock.advance(Duration::from_secs(10));
    let t = c.on_verdicts(&[verdict(&r, &f.clock, false)]);
    assert_eq!((t[0].to, t[0].cause), (FuseState::Open, Cause::Verdict));
    // Doubled: still open after 59 s, half open at 60 s.
    f.clock.advance(Duration::from_secs(59));
    c.tick();
    assert_eq!(state(&c, &r), Some(FuseState::Open));
    f.clock.advance(Duration::from_secs(1));
    c.tick();
    assert_eq!(state(&c, &r), Some(FuseState::HalfOpen));
    f.clock.advance(Duration::from_secs(10));
    c.on_verdicts(&[verdict(&r, &f.clock, true)]);
    assert_eq!(state(&c, &r), Some(FuseState::Closed));

    wait_for(&mut c, |c| c.status(&r).unwrap().pending_actions.is_empty()).await;
    let calls = f.rec.calls();
    let last = calls.last().unwrap();
    assert_eq!((last.state, last.seq), (FuseState::Closed, 5));
    assert_eq!(calls[0].state, FuseState::Open);
    assert_eq!(calls[0].key, action::idempotency_key(&r, 1));
    let causes: Vec<_> = f
        .audit_lines()
        .iter()
        .map(|l| l["cause"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(causes, ["alert", "timer", "verdict", "timer", "verdict"]);
    assert_eq!(f.audit_lines()[0]["who"], "sloguard");
    // What tripped the fuse stays answerable: the alert's request snapshots;
    // later transitions (timer, verdict) have none.
    let ids: Vec<_> = f
        .audit_lines()
        .iter()
        .map(|l| l["snapshot_id"].clone())
        .collect();
    assert_eq!(ids[0], "snap-1765000000-7");
    assert!(ids[1..].iter().all(|v| v.is_null()), "{ids:?}");
}

#[tokio::test]
async fn low_volume_alert_does_not_fuse() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let r = route("/quiet");
    assert!(c.on_alert(&l2(&r, 19)).is_empty());
    assert_eq!(state(&c, &r), None);
    assert_eq!(c.on_alert(&l2(&r, 20)).len(), 1);
}

#[tokio::test]
async fn non_l2_resolved_and_gray_alerts_do_not_fuse() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let r = route("/x");
    let mut a = l2(&r, 100);
    a.kind = AlertKind::P99Breach;
    assert!(c.on_alert(&a).is_empty());
    let mut a = l2(&r, 100);
    a.status = AlertStatus::Resolved;
    assert!(c.on_alert(&a).is_empty());
    let mut a = l2(&r, 100);
    a.gray_tag = "canary".into();
    assert!(c.on_alert(&a).is_empty());
    assert!(
        c.on_alert(&l2(&RouteKey::new("shop", "GET", "/{overflow}"), 1000))
            .is_empty()
    );
}

#[tokio::test]
async fn max_fused_share_holds_per_service() {
    let mut f = fixture(FuseMode::Enforce);
    f.cfg.max_fused_share = 0.5;
    let mut c = f.controller();
    let routes: Vec<_> = (0..4).map(|i| route(&format!("/r{i}"))).collect();
    let other = RouteKey::new("billing", "GET", "/r0");
    let mut vs: Vec<_> = routes.iter().map(|r| verdict(r, &f.clock, true)).collect();
    vs.push(verdict(&other, &f.clock, true));
    vs.push(verdict(
        &RouteKey::new("billing", "GET", "/r1"),
        &f.clock,
        true,
    ));
    c.on_verdicts(&vs);
    assert_eq!(c.on_alert(&l2(&routes[0], 100)).len(), 1);
    assert_eq!(c.on_alert(&l2(&routes[1], 100)).len(), 1);
    // 3 of 4 would exceed 0.5.
    assert!(c.on_alert(&l2(&routes[2], 100)).is_empty());
    assert_eq!(state(&c, &routes[2]), None);
    // Another service has its own share.
    assert_eq!(c.on_alert(&l2(&other, 100)).len(), 1);
    // A half-open route re-opening is not a new fuse: allowed.
    f.clock.advance(Duration::from_secs(30));
    c.tick();
    assert_eq!(c.on_alert(&l2(&routes[0], 100))[0].to, FuseState::Open);
}

#[tokio::test]
async fn max_fused_share_counts_only_judged_routes() {
    let mut f = fixture(FuseMode::Enforce);
    f.cfg.max_fused_share = 0.5;
    let mut c = f.controller();
    let (a, b) = (route("/a"), route("/b"));
    // One real route and a hundred junk routes that never had the volume.
    let mut vs = vec![verdict(&a, &f.clock, true)];
    for i in 0..100 {
        let mut v = verdict(&route(&format!("/junk{i}")), &f.clock, true);
        v.requests = 1;
        v.judged = false;
        vs.push(v);
    }
    c.on_verdicts(&vs);
    // The service has one judged route: fusing it is fusing the service.
    assert!(c.on_alert(&l2(&a, 100)).is_empty());
    // A second judged route: one of two is within 0.5.
    c.on_verdicts(&[verdict(&b, &f.clock, true)]);
    assert_eq!(c.on_alert(&l2(&a, 100)).len(), 1);
    // Routes not judged for an hour stop counting: with /c and /d known,
    // a second fuse would be 2 of 4; once they went quiet, 2 of 2.
    let (cc, d) = (route("/c"), route("/d"));
    c.on_verdicts(&[verdict(&cc, &f.clock, true), verdict(&d, &f.clock, true)]);
    f.clock.advance(Duration::from_secs(3601));
    c.tick();
    c.on_verdicts(&[verdict(&a, &f.clock, true), verdict(&b, &f.clock, true)]);
    assert!(
        c.on_alert(&l2(&b, 100)).is_empty(),
        "/c and /d are forgotten"
    );
}

#[tokio::test]
async fn dry_run_never_calls_the_action_but_records_would_fuse() {
    let f = fixture(FuseMode::DryRun);
    let mut c = f.controller();
    let mut reg = prometheus_client::registry::Registry::default();
    c.register_metrics(&mut reg);
    let r = route("/slow");
    let t = c.on_alert(&l2(&r, 100));
    assert_eq!((t[0].to, t[0].mode), (FuseState::Open, FuseMode::DryRun));
    f.clock.advance(Duration::from_secs(30));
    c.tick();
    for _ in 0..20 {
        c.tick();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f.rec.calls().is_empty());
    let audit = f.audit_lines();
    assert_eq!(audit[0]["mode"], "dry_run");
    assert_eq!(audit[0]["to"], "open");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains(r#"sloguard_fuse_actions_total{action="rec",result="dry_run"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn restart_restores_state_and_retries_a_failed_action() {
    let f = fixture(FuseMode::Enforce);
    f.rec.fail.store(true, Ordering::SeqCst);
    let r = route("/slow");
    {
        let mut c = f.controller();
        c.on_alert(&l2(&r, 100));
        wait_for(&mut c, |c| {
            c.status(&r).unwrap().pending_actions[0].failures >= 1
        })
        .await;
        let p = &c.status(&r).unwrap().pending_actions[0];
        assert_eq!(p.last_error.as_deref(), Some("gateway answered HTTP 500"));
        // Backoff: no new try before retry_min passes on the clock.
        let n = f.rec.calls().len();
        for _ in 0..10 {
            c.tick();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(f.rec.calls().len(), n);
    }
    // The agent restarts; the gateway works again.
    f.rec.fail.store(false, Ordering::SeqCst);
    let before = f.rec.calls().len();
    let mut c = f.controller();
    let s = c.status(&r).unwrap();
    assert_eq!((s.state, s.seq), (FuseState::Open, 1));
    assert_eq!(s.pending_actions.len(), 1);
    wait_for(&mut c, |c| c.status(&r).unwrap().pending_actions.is_empty()).await;
    let calls = f.rec.calls();
    assert_eq!(calls.len(), before + 1);
    let last = calls.last().unwrap();
    assert_eq!((last.state, last.seq), (FuseState::Open, 1));
    assert_eq!(
        last.key, calls[0].key,
        "same transition, same idempotency key"
    );
    // And the success is persisted: a third start owes nothing.
    drop(c);
    let c = f.controller();
    assert!(
        c.status(&r).unwrap().pending_actions.is_empty(),
        "{:#?}\n{}",
        c.status(&r),
        std::fs::read_to_string(&f.cfg.state_file).unwrap_or_default()
    );
}

#[tokio::test]
async fn failed_action_is_retried_after_backoff_on_the_clock() {
    let f = fixture(FuseMode::Enforce);
    f.rec.fail.store(true, Ordering::SeqCst);
    let mut c = f.controller();
    let r = route("/slow");
    c.on_alert(&l2(&r, 100));
    wait_for(&mut c, |c| {
        c.status(&r).unwrap().pending_actions[0].failures == 1
    })
    .await;
    f.rec.fail.store(false, Ordering::SeqCst);
    f.clock.advance(Duration::from_secs(1));
    wait_for(&mut c, |c| c.status(&r).unwrap().pending_actions.is_empty()).await;
    assert_eq!(f.rec.calls().len(), 2);
}

#[tokio::test]
async fn override_with_ttl_expires_and_is_audited() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let r = route("/manual");
    let req = |action, ttl| OverrideRequest {
        route: r.clone(),
        action,
        ttl,
        who: "alice".into(),
        why: "db migration".into(),
    };
    let s = c
        .override_route(req(
            OverrideAction::ForceOpen,
            Some(Duration::from_secs(600)),
        ))
        .unwrap();
    assert_eq!(s.state, FuseState::Open);
    assert_eq!(s.overridden.as_ref().unwrap().who, "alice");
    // L2 and verdicts cannot move it.
    c.on_verdicts(&[verdict(&r, &f.clock, true)]);
    f.clock.advance(Duration::from_secs(599));
    assert!(c.tick().is_empty());
    f.clock.advance(Duration::from_secs(1));
    let t = c.tick();
    assert_eq!(
        (t[0].to, t[0].cause, t[0].who.as_str()),
        (FuseState::HalfOpen, Cause::Ttl, "alice")
    );
    assert!(c.status(&r).unwrap().overridden.is_none());
    assert!(matches!(
        c.override_route(req(OverrideAction::Release, None)),
        Err(FuseError::NotOverridden)
    ));
    assert!(matches!(
        c.override_route(req(
            OverrideAction::ForceClosed,
            Some(Duration::from_secs(8 * 24 * 3600))
        )),
        Err(FuseError::BadOverride(_))
    ));
    // force_closed: an L2 changes nothing until released.
    c.override_route(req(OverrideAction::ForceClosed, None))
        .unwrap();
    assert!(c.on_alert(&l2(&r, 100)).is_empty());
    c.override_route(req(OverrideAction::Release, None))
        .unwrap();
    assert_eq!(c.on_alert(&l2(&r, 100))[0].to, FuseState::Open);
    let audit = f.audit_lines();
    assert_eq!(audit[0]["cause"], "override");
    assert_eq!(audit[0]["who"], "alice");
    assert_eq!(audit[0]["why"], "db migration");
    assert_eq!(audit[1]["cause"], "ttl");
}

#[tokio::test]
async fn rested_closed_routes_are_forgotten() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let r = route("/slow");
    c.on_alert(&l2(&r, 100));
    f.clock.advance(Duration::from_secs(30));
    c.tick();
    f.clock.advance(Duration::from_secs(10));
    c.on_verdicts(&[verdict(&r, &f.clock, true)]);
    wait_for(&mut c, |c| c.status(&r).unwrap().pending_actions.is_empty()).await;
    f.clock.advance(Duration::from_secs(600));
    c.tick();
    assert!(c.states().is_empty());
}

#[tokio::test]
async fn metrics_show_current_state() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let mut reg = prometheus_client::registry::Registry::default();
    c.register_metrics(&mut reg);
    c.on_alert(&l2(&route("/slow"), 100));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for want in [
        r#"sloguard_fuse_state{service_name="shop",http_request_method="GET",http_route="/slow",state="open"} 1"#,
        r#"sloguard_fuse_state{service_name="shop",http_request_method="GET",http_route="/slow",state="closed"} 0"#,
        r#"sloguard_fuse_transitions_total{to="open"} 1"#,
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}

#[tokio::test]
async fn dry_run_state_never_becomes_a_real_fuse_after_a_mode_change() {
    let mut f = fixture(FuseMode::DryRun);
    let r = route("/slow");
    f.controller().on_alert(&l2(&r, 100));
    f.cfg.mode = FuseMode::Enforce;
    let mut c = f.controller();
    assert!(c.states().is_empty());
    for _ in 0..10 {
        c.tick();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(f.rec.calls().is_empty());
}

#[tokio::test]
async fn switch_to_dry_run_first_closes_what_enforce_fused() {
    let mut f = fixture(FuseMode::Enforce);
    let (a, b) = (route("/a"), route("/b"));
    let mut c = f.controller();
    c.on_verdicts(&[verdict(&a, &f.clock, true), verdict(&b, &f.clock, true)]);
    c.on_alert(&l2(&a, 100));
    wait_for(&mut c, |c| c.status(&a).unwrap().pending_actions.is_empty()).await;
    drop(c);

    // The switch; the gateway fails at first, and the agent restarts.
    f.cfg.mode = FuseMode::DryRun;
    f.rec.fail.store(true, Ordering::SeqCst);
    let mut c = f.controller();
    assert_eq!(c.releasing(), vec![a.clone()]);
    assert!(c.states().is_empty(), "dry run starts with nothing fused");
    let closing = |rec: &Recorder| {
        rec.calls()
            .iter()
            .filter(|k| k.route.as_ref() == Some(&a) && k.state == FuseState::Closed)
            .count()
    };
    wait_for(&mut c, |_| closing(&f.rec) >= 1).await;
    drop(c);
    f.rec.fail.store(false, Ordering::SeqCst);
    let mut c = f.controller();
    assert_eq!(c.releasing(), vec![a.clone()], "kept across the restart");
    wait_for(&mut c, |c| c.releasing().is_empty()).await;
    let calls = f.rec.calls();
    let last = calls.last().unwrap();
    assert_eq!(
        (last.route.as_ref(), last.state, last.seq),
        (Some(&a), FuseState::Closed, 2)
    );
    assert_eq!(last.key, super::action::idempotency_key(&a, 2));
    drop(c);
    // Done: another start owes nothing, and dry run calls no action again.
    let n = f.rec.calls().len();
    let mut c = f.controller();
    assert!(c.releasing().is_empty());
    c.on_alert(&l2(&b, 100));
    for _ in 0..10 {
        c.tick();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.rec.calls().len(), n);
}

#[tokio::test]
async fn bad_state_file_stops_by_default_or_resets_to_dry_run_with_an_alert() {
    let corrupt = "{not json";
    let newer = r#"{"version": 2, "mode": "enforce", "routes": []}"#;
    for bad in [corrupt, newer] {
        let mut f = fixture(FuseMode::Enforce);
        std::fs::write(&f.cfg.state_file, bad).unwrap();
        let start = |cfg: &FuseConfig| {
            FuseController::with_actions(
                cfg.clone(),
                Arc::new(f.clock.clone()),
                vec![Arc::new(f.rec.clone())],
            )
        };
        let e = start(&f.cfg)
            .err()
            .expect("stop is the default")
            .to_string();
        assert!(e.contains("state.json"), "{e}");
        assert_eq!(std::fs::read_to_string(&f.cfg.state_file).unwrap(), bad);

        f.cfg.on_bad_state_file = BadStateFile::Reset;
        let mut c = start(&f.cfg).unwrap();
        assert_eq!(c.mode(), FuseMode::DryRun);
        let ev = c.take_reset_alert().expect("an alert");
        assert!(c.take_reset_alert().is_none(), "raised once");
        let alert = crate::respond::alert::labels::Alert::from_event(&ev, "node-1", "");
        let labels: Vec<_> = alert
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            labels,
            [
                "alertname=SloguardFuseStateReset",
                "node=node-1",
                "severity=critical"
            ]
        );
        assert!(
            alert.annotations["description"].contains(".bad-"),
            "{alert:?}"
        );
        let aside: Vec<_> = std::fs::read_dir(f._dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("state.json.bad-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), bad);
        // Dry run: an L2 calls no action.
        c.on_alert(&l2(&route("/a"), 100));
        for _ in 0..10 {
            c.tick();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(f.rec.calls().is_empty());
    }
}

#[tokio::test]
async fn l2_on_a_force_closed_route_is_not_a_guard_skip() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let mut reg = prometheus_client::registry::Registry::default();
    c.register_metrics(&mut reg);
    let r = route("/x");
    c.override_route(OverrideRequest {
        route: r.clone(),
        action: OverrideAction::ForceClosed,
        ttl: None,
        who: "a".into(),
        why: "b".into(),
    })
    .unwrap();
    assert!(c.on_alert(&l2(&r, 1)).is_empty());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(!text.contains("sloguard_fuse_skipped_total{"), "{text}");
}

/// The exposition passes `promtool check metrics` (skipped without promtool,
/// except in CI).
#[tokio::test]
async fn metrics_pass_promtool() {
    let f = fixture(FuseMode::Enforce);
    let mut c = f.controller();
    let mut reg = prometheus_client::registry::Registry::default();
    c.register_metrics(&mut reg);
    let r = route("/slow");
    c.on_alert(&l2(&r, 100));
    c.on_alert(&l2(&route("/quiet"), 1));
    c.override_route(OverrideRequest {
        route: route("/m"),
        action: OverrideAction::ForceOpen,
        ttl: None,
        who: "a".into(),
        why: "b".into(),
    })
    .unwrap();
    wait_for(&mut c, |c| c.status(&r).unwrap().pending_actions.is_empty()).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for name in [
        "sloguard_fuse_state{",
        "sloguard_fuse_transitions_total{",
        "sloguard_fuse_actions_total{",
        "sloguard_fuse_action_duration_seconds_bucket{",
        "sloguard_fuse_overrides_total{",
        "sloguard_fuse_skipped_total{",
    ] {
        assert!(text.contains(name), "{name}\n{text}");
    }
    crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&text);
}

#[tokio::test]
async fn restart_rewrites_the_file_and_retries_a_failed_reload() {
    let mut f = fixture(FuseMode::Enforce);
    let r = route("/slow");
    // First run, no actions: the route is fused and persisted.
    FuseController::with_actions(f.cfg.clone(), Arc::new(f.clock.clone()), vec![])
        .unwrap()
        .on_alert(&l2(&r, 100));
    let dir = f.cfg.state_file.parent().unwrap().to_path_buf();
    let file = dir.join("fuses.json");
    let applied = dir.join("applied.json");
    let block = dir.join("block");
    std::fs::write(&block, "").unwrap();
    // Copied then renamed: `applied` appears only whole, so the waits that
    // poll for it never read a half-written copy.
    let script = format!(
        "test ! -e {b} && cp {f} {a}.tmp && mv {a}.tmp {a}",
        b = block.display(),
        f = file.display(),
        a = applied.display()
    );
    f.cfg.actions = vec![ActionConfig::File(FileActionConfig {
        name: "file".into(),
        path: file.clone(),
        reload_command: vec!["sh".into(), "-c".into(), script],
        ..Default::default()
    })];
    let mut reg = prometheus_client::registry::Registry::default();
    let mut c = FuseController::new(f.cfg.clone(), Arc::new(f.clock.clone())).unwrap();
    c.register_metrics(&mut reg);
    let errors = |reg: &prometheus_client::registry::Registry| {
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, reg).unwrap();
        t.contains(r#"sloguard_fuse_actions_total{action="file",result="error"}"#)
    };
    // Two jobs are queued: the start-up sync and the route's owed write. Both
    // must have failed before the clock moves, or a failure drained after the
    // advance backs off past it and the ManualClock never reaches that retry.
    wait_for(&mut c, |c| {
        errors(&reg) && c.status(&r).unwrap().pending_actions[0].failures >= 1
    })
    .await;
    assert!(!applied.exists());
    // The gateway comes back; after the backoff the sync runs again.
    std::fs::remove_file(&block).unwrap();
    f.clock.advance(Duration::from_secs(1));
    wait_for(&mut c, |_| applied.exists()).await;
    wait_for(&mut c, |c| c.status(&r).unwrap().pending_actions.is_empty()).await;
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&applied).unwrap()).unwrap();
    assert_eq!(v["routes"][0]["route"], "/slow");
    assert_eq!(v["routes"][0]["state"], "open");

    // Next start: nothing pending, but the file is gone. The start-up sync
    // alone rewrites it, and is retried too.
    drop(c);
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(&applied).unwrap();
    std::fs::write(&block, "").unwrap();
    let mut reg = prometheus_client::registry::Registry::default();
    let mut c = FuseController::new(f.cfg.clone(), Arc::new(f.clock.clone())).unwrap();
    c.register_metrics(&mut reg);
    assert!(c.status(&r).unwrap().pending_actions.is_empty());
    wait_for(&mut c, |_| errors(&reg)).await;
    std::fs::remove_file(&block).unwrap();
    f.clock.advance(Duration::from_secs(1));
    wait_for(&mut c, |_| applied.exists()).await;
    assert!(std::fs::read_to_string(&applied).unwrap().contains("/slow"));
}
