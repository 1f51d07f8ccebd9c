//! deploy/alertmanager: `amtool check-config`, routing by severity proven
//! with `amtool config routes test`, and the L2-inhibits-L1 rule both present
//! in the file and applied by a real Alertmanager on 127.0.0.1.
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::{loopback, tools};

use super::{deploy_dir, s, seq, yaml_file};

#[test]
fn amtool_checks_config_and_routes_by_severity() {
    let test = "amtool_checks_config_and_routes_by_severity";
    let Some(amtool) = tools::require(test, "amtool", "apt-get install prometheus-alertmanager")
    else {
        return;
    };
    let config = deploy_dir().join("alertmanager/alertmanager.yml");
    tools::run_ok(Command::new(&amtool).arg("check-config").arg(&config));
    for (labels, receiver) in [
        (
            &[
                "severity=critical",
                "alertname=SloguardP99SpikeWith5xxBurst",
            ][..],
            "sloguard-page",
        ),
        (
            &["severity=critical", "alertname=SloguardErrorBudgetBurnFast"][..],
            "sloguard-page",
        ),
        (
            &["severity=warning", "alertname=SloguardP99Breach"][..],
            "sloguard-ticket",
        ),
        (
            &["severity=warning", "alertname=SloguardGrayRollback"][..],
            "sloguard-ticket",
        ),
        (&["alertname=Unlabelled"][..], "sloguard-default"),
    ] {
        // --verify.receivers makes amtool exit non-zero on a different receiver.
        tools::run_ok(
            Command::new(&amtool)
                .args(["config", "routes", "test"])
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--verify.receivers={receiver}"))
                .args(labels),
        );
    }

    let doc = yaml_file(&config);
    let inhibit = seq(&doc["inhibit_rules"])
        .iter()
        .find(|r| {
            seq(&r["target_matchers"])
                .iter()
                .any(|m| s(m).contains("SloguardP99Breach"))
        })
        .expect("an inhibit rule for SloguardP99Breach");
    assert!(
        seq(&inhibit["source_matchers"])
            .iter()
            .any(|m| s(m) == "alertname=\"SloguardP99SpikeWith5xxBurst\"")
    );
    let equal: Vec<&str> = seq(&inhibit["equal"]).iter().map(s).collect();
    assert_eq!(equal, ["service_name", "http_route", "http_request_method"]);
}

fn alert(name: &str, severity: &str, route: &str) -> serde_json::Value {
    json!({
        "labels": {
            "alertname": name, "severity": severity, "service_name": "checkout",
            "http_route": route, "http_request_method": "POST", "node": "n1"
        },
        "annotations": {"summary": "test"},
        "generatorURL": "http://127.0.0.1/sloguard"
    })
}

#[test]
fn real_alertmanager_inhibits_l1_while_l2_fires_on_the_same_route() {
    let test = "real_alertmanager_inhibits_l1_while_l2_fires_on_the_same_route";
    let Some(binary) = tools::require(
        test,
        "prometheus-alertmanager",
        "apt-get install prometheus-alertmanager",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let am = loopback::alertmanager(
        &binary,
        &deploy_dir().join("alertmanager/alertmanager.yml"),
        tmp.path(),
    );
    let alerts = json!([
        alert("SloguardP99SpikeWith5xxBurst", "critical", "/pay"),
        alert("SloguardP99Breach", "warning", "/pay"),
        alert("SloguardP99Breach", "warning", "/cart"),
    ]);
    let (code, body) =
        loopback::http(am.addr, "POST", "/api/v2/alerts", Some(&alerts.to_string())).unwrap();
    assert_eq!(code, 200, "{body}");

    // The API computes inhibition when asked; allow the ingest a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = loopback::http(am.addr, "GET", "/api/v2/alerts", None).unwrap();
        assert_eq!(code, 200, "{body}");
        let got: serde_json::Value = serde_json::from_str(&body).unwrap();
        let state = |name: &str, route: &str| {
            got.as_array().unwrap().iter().find_map(|a| {
                (a["labels"]["alertname"] == name && a["labels"]["http_route"] == route)
                    .then(|| a["status"]["state"].as_str().unwrap_or("").to_string())
            })
        };
        let l1_pay = state("SloguardP99Breach", "/pay");
        let l1_cart = state("SloguardP99Breach", "/cart");
        let l2 = state("SloguardP99SpikeWith5xxBurst", "/pay");
        if l1_pay.as_deref() == Some("suppressed") {
            assert_eq!(
                l1_cart.as_deref(),
                Some("active"),
                "another route's L1 stays"
            );
            assert_eq!(l2.as_deref(), Some("active"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "L1 not inhibited: {l1_pay:?} {l1_cart:?} {l2:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
