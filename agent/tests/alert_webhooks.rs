//! Alert delivery to real HTTP webhook receivers on loopback.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Receiver, dead_port, eventually, l2_event, now_ms};
use sloguard::respond::alert::delivery::Dispatcher;
use sloguard::respond::alert::delivery_config::{AlertsConfig, BasicAuth, WebhookConfig};
use sloguard::respond::alert::labels::Alert;
use sloguard::respond::alert::metrics::DeliveryResult;
use sloguard::respond::alert::model::AlertStatus;
use sloguard::respond::alert::payload::{ZERO_TIME, rfc3339};

fn webhook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url,
        bearer_token_file: None,
        basic_auth: None,
        tls: None,
        timeout: Duration::from_secs(2),
    }
}

fn config(webhooks: Vec<WebhookConfig>) -> AlertsConfig {
    AlertsConfig {
        receiver: "ops".into(),
        external_url: "http://sloguard.test:9464".into(),
        max_retries: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        webhooks,
        ..AlertsConfig::default()
    }
}

fn strings(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn webhook_gets_v4_firing_then_resolved_once_each() {
    let rx = Receiver::start().await;
    let cfg = config(vec![webhook("chat", rx.url())]);
    let (h, task) = Dispatcher::start(&cfg, "node-7".into()).unwrap();
    let t0 = now_ms();
    let firing = l2_event("/orders/{id}", AlertStatus::Firing, t0);
    let want = Alert::from_event(&firing, "node-7", "http://sloguard.test:9464");
    assert!(h.send(firing.clone()));
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    let m = &got[0].body;
    assert_eq!(
        got[0].headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(m["version"], "4");
    assert_eq!(m["status"], "firing");
    assert_eq!(m["receiver"], "ops");
    assert_eq!(m["externalURL"], "http://sloguard.test:9464");
    assert_eq!(m["truncatedAlerts"], 0);
    assert!(
        m["groupKey"]
            .as_str()
            .unwrap()
            .starts_with("{}:{alertname=")
    );
    assert_eq!(strings(&m["groupLabels"]), want.labels);
    assert_eq!(strings(&m["commonLabels"]), want.labels);
    assert_eq!(strings(&m["commonAnnotations"]), want.annotations);
    let a = &m["alerts"][0];
    assert_eq!(a["status"], "firing");
    let labels = strings(&a["labels"]);
    assert_eq!(labels["alertname"], "SloguardP99SpikeWith5xxBurst");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["service_name"], "checkout");
    assert_eq!(labels["http_route"], "/orders/{id}");
    assert_eq!(labels["http_request_method"], "POST");
    assert_eq!(labels["node"], "node-7");
    assert_eq!(
        strings(&a["annotations"])["tcp_top_retransmit_peer"],
        "10.0.3.7:5432"
    );
    assert_eq!(a["startsAt"], rfc3339(t0));
    assert_eq!(a["endsAt"], ZERO_TIME);
    assert_eq!(a["fingerprint"], want.fingerprint.to_string());

    // The detectors re-send a firing alert: the webhook is not told twice.
    assert!(h.send(firing.clone()));
    let mut resolved = firing.clone();
    resolved.status = AlertStatus::Resolved;
    let t1 = now_ms();
    resolved.ends_at = Some(t1);
    assert!(h.send(resolved.clone()));
    let got = rx.wait_for(2, Duration::from_secs(5)).await;
    let m = &got[1].body;
    assert_eq!(m["status"], "resolved");
    assert_eq!(m["alerts"][0]["status"], "resolved");
    assert_eq!(m["alerts"][0]["endsAt"], rfc3339(t1));
    assert_eq!(m["alerts"][0]["fingerprint"], want.fingerprint.to_string());
    assert!(h.send(resolved));
    // Let a duplicate, if any, arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests(), 2, "duplicates were delivered");

    let mx = h.metrics();
    assert_eq!(mx.delivery_count("chat", DeliveryResult::Success), 2);
    assert_eq!(mx.delivery_count("chat", DeliveryResult::Failure), 0);
    assert_eq!(mx.raised_count("SloguardP99SpikeWith5xxBurst", "firing"), 2);
    assert_eq!(
        mx.raised_count("SloguardP99SpikeWith5xxBurst", "resolved"),
        2
    );
    drop(h);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("dispatcher stops once every handle is gone")
        .unwrap();
}

#[tokio::test]
async fn receiver_failing_twice_gets_the_alert_after_retries() {
    let rx = Receiver::start_with(2, Duration::ZERO).await;
    let cfg = config(vec![webhook("flaky", rx.url())]);
    let (h, _task) = Dispatcher::start(&cfg, "n".into()).unwrap();
    let t = Instant::now();
    h.send(l2_event("/a", AlertStatus::Firing, now_ms()));
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    // Backoff 20 ms then 40 ms before the third attempt.
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(got[0].body["alerts"][0]["labels"]["http_route"], "/a");
    assert_eq!(rx.requests(), 3);
    let mx = h.metrics();
    eventually("success counted", Duration::from_secs(2), || {
        mx.delivery_count("flaky", DeliveryResult::Success) == 1
    })
    .await;
    assert_eq!(mx.retry_count("flaky"), 2);
    assert_eq!(mx.delivery_count("flaky", DeliveryResult::Failure), 0);
}

#[tokio::test]
async fn dead_and_slow_receivers_do_not_hold_up_a_live_one() {
    let live = Receiver::start().await;
    let slow = Receiver::start_with(0, Duration::from_secs(5)).await;
    let mut dead = webhook("dead", format!("http://127.0.0.1:{}/hook", dead_port()));
    dead.timeout = Duration::from_millis(500);
    let mut slow_cfg = webhook("slow", slow.url());
    slow_cfg.timeout = Duration::from_millis(200);
    let mut cfg = config(vec![dead, slow_cfg, webhook("live", live.url())]);
    // Dead: attempts at 0, 300, 900, 2100 ms.
    cfg.max_retries = 3;
    cfg.initial_backoff = Duration::from_millis(300);
    cfg.max_backoff = Duration::from_secs(2);
    let (h, _task) = Dispatcher::start(&cfg, "n".into()).unwrap();
    let t = Instant::now();
    let sent = h.send(l2_event("/a", AlertStatus::Firing, now_ms()));
    assert!(sent, "send never waits for receivers");
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    live.wait_for(1, Duration::from_secs(1)).await;
    let live_after = t.elapsed();
    assert!(live_after < Duration::from_millis(300), "{live_after:?}");
    // A second alert reaches the live receiver while the others still retry.
    h.send(l2_event("/b", AlertStatus::Firing, now_ms()));
    live.wait_for(2, Duration::from_secs(1)).await;
    let mx = h.metrics().clone();
    assert_eq!(mx.delivery_count("dead", DeliveryResult::Failure), 0);
    eventually(
        "dead receiver counted as failed",
        Duration::from_secs(10),
        || mx.delivery_count("dead", DeliveryResult::Failure) == 2,
    )
    .await;
    assert_eq!(mx.retry_count("dead"), 6);
    eventually(
        "slow receiver counted as failed",
        Duration::from_secs(10),
        || mx.delivery_count("slow", DeliveryResult::Failure) == 2,
    )
    .await;
    assert_eq!(mx.delivery_count("live", DeliveryResult::Success), 2);
    assert_eq!(mx.delivery_count("dead", DeliveryResult::Success), 0);
}

/// A current-thread runtime: nothing runs between the `send` calls, so the
/// dispatcher queue (capacity 2) fills and the rest is dropped and counted.
#[tokio::test(flavor = "current_thread")]
async fn full_queue_drops_and_counts() {
    let rx = Receiver::start().await;
    let mut cfg = config(vec![webhook("chat", rx.url())]);
    cfg.queue_capacity = 2;
    let (h, _task) = Dispatcher::start(&cfg, "n".into()).unwrap();
    let accepted = (0..10)
        .filter(|i| h.send(l2_event(&format!("/r{i}"), AlertStatus::Firing, now_ms())))
        .count();
    assert_eq!(accepted, 2);
    assert_eq!(h.metrics().queue_dropped_count(), 8);
    assert_eq!(
        h.metrics()
            .raised_count("SloguardP99SpikeWith5xxBurst", "firing"),
        10
    );
    let got = rx.wait_for(2, Duration::from_secs(5)).await;
    let routes: Vec<_> = got
        .iter()
        .map(|r| {
            r.body["alerts"][0]["labels"]["http_route"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(routes, ["/r0", "/r1"]);
}

/// A receiver busy with one slow delivery: its own queue (capacity 1) fills
/// and the next alert for it is dropped and counted, per receiver.
#[tokio::test]
async fn full_receiver_queue_drops_for_that_receiver_only() {
    let slow = Receiver::start_with(0, Duration::from_secs(2)).await;
    let live = Receiver::start().await;
    let mut cfg = config(vec![
        webhook("slow", slow.url()),
        webhook("live", live.url()),
    ]);
    cfg.queue_capacity = 1;
    cfg.max_retries = 0;
    let (h, _task) = Dispatcher::start(&cfg, "n".into()).unwrap();
    let mx = h.metrics().clone();
    for i in 0..3 {
        assert!(h.send(l2_event(&format!("/r{i}"), AlertStatus::Firing, now_ms())));
        // Let the dispatcher hand it on before the next one.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    live.wait_for(3, Duration::from_secs(2)).await;
    assert_eq!(mx.delivery_count("slow", DeliveryResult::Dropped), 1);
    assert_eq!(mx.delivery_count("live", DeliveryResult::Dropped), 0);
    assert_eq!(mx.queue_dropped_count(), 0);
}

#[tokio::test]
async fn bearer_and_basic_auth_headers() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "pa55").unwrap();
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    let mut wa = webhook("bearer", a.url());
    wa.bearer_token_file = Some(token.clone());
    let mut wb = webhook("basic", b.url());
    wb.basic_auth = Some(BasicAuth {
        username: "alice".into(),
        password_file: pass,
    });
    let (h, _task) = Dispatcher::start(&config(vec![wa, wb]), "n".into()).unwrap();
    h.send(l2_event("/a", AlertStatus::Firing, now_ms()));
    let ga = a.wait_for(1, Duration::from_secs(5)).await;
    let gb = b.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(ga[0].headers["authorization"], "Bearer s3cret-token");
    // base64("alice:pa55")
    assert_eq!(gb[0].headers["authorization"], "Basic YWxpY2U6cGE1NQ==");
    // The token file is read per delivery, so a rotated token is used.
    std::fs::write(&token, "rotated").unwrap();
    h.send(l2_event("/b", AlertStatus::Firing, now_ms()));
    let ga = a.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(ga[1].headers["authorization"], "Bearer rotated");
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let rx = Receiver::start().await;
    let (h, _task) =
        Dispatcher::start(&config(vec![webhook("chat", rx.url())]), "n".into()).unwrap();
    h.send(l2_event("/a", AlertStatus::Firing, now_ms()));
    rx.wait_for(1, Duration::from_secs(5)).await;
    let mut reg = prometheus_client::registry::Registry::default();
    h.register_metrics(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for want in [
        "sloguard_alerts_total{alertname=\"SloguardP99SpikeWith5xxBurst\",status=\"firing\"} 1",
        "sloguard_alerts_deliveries_total{receiver=\"chat\",result=\"success\"}",
        "sloguard_alerts_deliveries_total{receiver=\"chat\",result=\"dropped\"} 0",
        "sloguard_alerts_delivery_retries_total{receiver=\"chat\"} 0",
        "sloguard_alerts_queue_dropped_total 0",
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    sloguard::export::metrics::lint::assert_promtool_accepts_openmetrics(&text);
}
