//! End to end on the real kernel: a loopback server whose flaky route turns
//! slow and erroring, the agent's SLO engine, its webhook alerts and fuse file.
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::agent::Agent;
use tests::env;
use tests::shop::Shop;
use tests::webhook::{firing, receiver, wait};

fn route_open(path: &Path, route: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    v["routes"].as_array().is_some_and(|rs| {
        rs.iter()
            .any(|r| r["route"] == route && r["state"] == "open")
    })
}

#[test]
fn flaky_route_alerts_fuses_and_resolves_healthy_route_never() {
    if !env::require_kernel() || !env::require(env::has_program("python3"), "python3") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Shop::flaky();
    let (port, server_addr) = (server.port(), server.addr);
    let (hook, received) = receiver();
    let fuse_file = tmp.path().join("fuses.json");
    let period = Duration::from_secs(1);
    let slo = tests::shop::flaky_slo_yaml("e2e-shop", port);
    let fuse =
        tests::shop::enforce_fuse_yaml(tmp.path(), "f", &fuse_file, "json", env::free_port());
    let yaml = format!(
        "{slo}alerts:\n  webhooks:\n    - name: e2e\n      url: http://{hook}/hook\n{fuse}"
    );
    let agent = Agent::start(&yaml).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tests::shop::flaky_traffic(server_addr, 4, &stop);
    // Warm-up: enough healthy periods for the flaky route's baseline.
    std::thread::sleep(Duration::from_secs(8));
    // Fault onset just after a period boundary (periods align to Unix time).
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(1000 - ms % 1000 + 50));
    server.fault(true);
    let onset = Instant::now();
    let bound = period * 2 + Duration::from_secs(1);
    let firing = wait(Duration::from_secs(10), || {
        // Other agents' tests on this host may run flaky servers too: only
        // this test's service counts.
        firing(&received, "SloguardP99SpikeWith5xxBurst", |a| {
            a["labels"]["service_name"] == "e2e-shop"
        })
    });
    let fused_at = wait(Duration::from_secs(10), || {
        route_open(&fuse_file, "/api/flaky/{id}").then(Instant::now)
    });
    let (t_alert, payload) = firing.unwrap_or_else(|| panic!("no L2 webhook: {}", agent.log()));
    let t_fuse = fused_at.expect("fuse file never showed the flaky route open");
    let alert_s = (t_alert - onset).as_secs_f64();
    let fuse_s = (t_fuse - onset).as_secs_f64();
    eprintln!(
        "detection latency: L2 webhook {alert_s:.3} s, fuse action {fuse_s:.3} s (period 1 s)"
    );
    assert_eq!(payload["version"], "4");
    let labels = &payload["alerts"][0]["labels"];
    assert_eq!(labels["http_route"], "/api/flaky/{id}");
    assert_eq!(labels["service_name"], "e2e-shop");
    assert!(t_alert - onset <= bound, "L2 after {alert_s} s > {bound:?}");
    assert!(t_fuse - onset <= bound, "fuse after {fuse_s} s > {bound:?}");
    // Recovery: the resolve arrives.
    server.fault(false);
    let resolved = wait(Duration::from_secs(15), || {
        received.lock().unwrap().iter().find_map(|(_, v)| {
            (v["status"] == "resolved"
                && v["alerts"][0]["labels"]["alertname"] == "SloguardP99SpikeWith5xxBurst"
                && v["alerts"][0]["labels"]["service_name"] == "e2e-shop")
                .then(|| v.clone())
        })
    })
    .expect("no resolve message after recovery");
    assert!(
        resolved["alerts"][0]["endsAt"]
            .as_str()
            .is_some_and(|s| !s.starts_with("0001"))
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // The healthy control route: never alerted, never fused.
    for (_, v) in received.lock().unwrap().iter() {
        for a in v["alerts"].as_array().into_iter().flatten() {
            assert_ne!(a["labels"]["http_route"], "/api/healthy", "{v}");
        }
    }
    assert!(!route_open(&fuse_file, "/api/healthy"));
    if let Some(out) = std::env::var_os("SG_BENCH_LATENCY_JSON") {
        let j = serde_json::json!({
            "period_seconds": 1.0,
            "l2_webhook_seconds": alert_s, "l2_webhook_periods": alert_s,
            "fuse_action_seconds": fuse_s, "fuse_action_periods": fuse_s,
        });
        std::fs::write(out, j.to_string()).unwrap();
    }
    drop(server);
    drop(agent);
}
