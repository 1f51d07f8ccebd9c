//! A real Alertmanager (Debian `prometheus-alertmanager`) receives sloguard's
//! pushes on `/api/v2/alerts`, lists them, routes them to a webhook receiver
//! this test starts, and sends the resolve with our `endsAt`.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Receiver, dead_port, eventually, l2_event, now_ms};
use serde_json::Value;
use sloguard::respond::alert::delivery::Dispatcher;
use sloguard::respond::alert::delivery_config::{AlertmanagerConfig, AlertsConfig};
use sloguard::respond::alert::labels::Alert;
use sloguard::respond::alert::metrics::DeliveryResult;
use sloguard::respond::alert::model::AlertStatus;
use sloguard::respond::alert::payload::{ZERO_TIME, parse_rfc3339, rfc3339};

const BIN: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";

/// The binary, or None (skip) outside CI; in CI a missing binary fails.
fn alertmanager_bin() -> Option<PathBuf> {
    let p = std::env::var_os("SLOGUARD_ALERTMANAGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} missing: CI needs `apt-get install -y prometheus-alertmanager`",
        p.display()
    );
    eprintln!(
        "skipping: {} not installed (apt-get install -y prometheus-alertmanager)",
        p.display()
    );
    None
}

/// Kills Alertmanager when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_alertmanager(bin: &Path, dir: &Path, hook_url: &str) -> (Running, String) {
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: test-hook\n  group_by: ['...']\n  group_wait: 100ms\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test-hook\n    \
             webhook_configs:\n      - url: {hook_url}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = dead_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start alertmanager");
    (Running(child), format!("http://127.0.0.1:{port}"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let r = client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_receives_lists_routes_and_resolves() {
    let Some(bin) = alertmanager_bin() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    let (mut am, am_url) = start_alertmanager(&bin, dir.path(), &hook.url());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(format!("{am_url}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Some(status) = am.0.try_wait().unwrap() {
            panic!("alertmanager exited: {status}");
        }
        assert!(Instant::now() < deadline, "alertmanager not ready in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cfg = AlertsConfig {
        external_url: "http://sloguard.test:9464".into(),
        max_retries: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        alertmanager: AlertmanagerConfig {
            urls: vec![am_url.clone()],
            resend_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            ..AlertmanagerConfig::default()
        },
        ..AlertsConfig::default()
    };
    let (h, _task) = Dispatcher::start(&cfg, "node-am".into()).unwrap();
    let t0 = now_ms();
    let firing = l2_event("/orders/{id}", AlertStatus::Firing, t0);
    let ours = Alert::from_event(&firing, "node-am", "http://sloguard.test:9464");
    assert!(h.send(firing.clone()));

    // 1. Alertmanager lists it, with our labels, annotations and fingerprint.
    let url = format!("{am_url}/api/v2/alerts");
    let listed = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(Value::Array(a)) = get_json(&client, &url).await
                && let Some(x) = a
                    .into_iter()
                    .find(|x| x["labels"]["alertname"] == "SloguardP99SpikeWith5xxBurst")
            {
                break x;
            }
            assert!(
                Instant::now() < deadline,
                "alert not listed by Alertmanager"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(strings(&listed["labels"]), ours.labels);
    assert_eq!(strings(&listed["annotations"]), ours.annotations);
    assert_eq!(
        listed["fingerprint"],
        ours.fingerprint.to_string(),
        "fingerprint differs from Alertmanager's"
    );
    assert_eq!(listed["status"]["state"], "active");
    assert_eq!(listed["generatorURL"], "http://sloguard.test:9464");
    assert_eq!(
        parse_rfc3339(listed["startsAt"].as_str().unwrap()),
        Some(t0)
    );
    // endsAt = now + 4 × resend_interval.
    let ends = parse_rfc3339(listed["endsAt"].as_str().unwrap()).unwrap();
    let ahead = ends.duration_since(t0).unwrap();
    assert!(
        ahead >= Duration::from_secs(3) && ahead <= Duration::from_secs(6),
        "{ahead:?}"
    );

    // amtool, the operator's view, shows it too.
    if Path::new(AMTOOL).exists() {
        let out = testbed::tools::run_ok(Command::new(AMTOOL).args([
            "alert",
            "query",
            "--alertmanager.url",
            &am_url,
            "-o",
            "json",
        ]));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .any(|a| a["fingerprint"] == ours.fingerprint.to_string()),
            "amtool: {v}"
        );
    }

    // 2. Alertmanager routes it to our webhook: a v4 payload with our labels.
    let got = hook.wait_for(1, Duration::from_secs(5)).await;
    let m = &got[0].body;
    assert_eq!(m["version"], "4");
    assert_eq!(m["status"], "firing");
    assert_eq!(m["receiver"], "test-hook");
    let a = &m["alerts"][0];
    assert_eq!(strings(&a["labels"]), ours.labels);
    assert_eq!(strings(&a["annotations"]), ours.annotations);
    assert_eq!(a["fingerprint"], ours.fingerprint.to_string());
    assert_eq!(a["startsAt"], rfc3339(t0));
    assert_eq!(a["endsAt"], ZERO_TIME);
    // Alertmanager's own message has the shape sloguard's webhooks send.
    let own = serde_json::to_value(sloguard::respond::alert::payload::WebhookMessage::new(
        "test-hook",
        m["externalURL"].as_str().unwrap(),
        &[&ours],
    ))
    .unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let mut k_am = keys(m);
    let mut k_own = keys(&own);
    k_am.sort();
    k_own.sort();
    assert_eq!(k_am, k_own);
    assert_eq!(m["groupKey"], own["groupKey"], "groupKey");
    let mut ka = keys(a);
    let mut ko = keys(&own["alerts"][0]);
    ka.sort();
    ko.sort();
    assert_eq!(ka, ko);

    // 3. Re-sent while firing (resend_interval 1 s).
    let mx = h.metrics().clone();
    let receiver = format!("alertmanager:{}", am_url.trim_start_matches("http://"));
    eventually("re-sent to Alertmanager", Duration::from_secs(4), || {
        mx.delivery_count(&receiver, DeliveryResult::Success) >= 3
    })
    .await;

    // 4. Resolve: endsAt reaches Alertmanager, which sends the resolve on.
    let mut resolved = firing.clone();
    resolved.status = AlertStatus::Resolved;
    let t1 = now_ms();
    resolved.ends_at = Some(t1);
    assert!(h.send(resolved));
    let got = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = hook.received();
            if let Some(x) = r.iter().find(|x| x.body["status"] == "resolved") {
                break x.body.clone();
            }
            assert!(Instant::now() < deadline, "no resolved notification: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(got["alerts"][0]["status"], "resolved");
    assert_eq!(got["alerts"][0]["endsAt"], rfc3339(t1));
    assert_eq!(
        got["alerts"][0]["fingerprint"],
        ours.fingerprint.to_string()
    );
    // No longer active in the API.
    let list = get_json(&client, &url).await.unwrap();
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["fingerprint"] == ours.fingerprint.to_string()
                && x["status"]["state"] == "active"),
        "{list}"
    );
    assert_eq!(mx.delivery_count(&receiver, DeliveryResult::Failure), 0);
    eprintln!("alertmanager test took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
}
