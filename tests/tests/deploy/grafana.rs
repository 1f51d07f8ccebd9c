//! deploy/grafana: the dashboard's shape (datasource and template variables,
//! every target on the datasource variable, the sections an SRE expects) and
//! every query, and every rule of the rules file, parsed and run by a real
//! Prometheus on 127.0.0.1.
use std::collections::BTreeSet;

use serde_json::Value;
use tests::{dashboard, loopback, tools};

use super::deploy_dir;

fn dashboard_path() -> std::path::PathBuf {
    deploy_dir().join("grafana/sloguard-dashboard.json")
}

fn load() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap()
}

#[test]
fn dashboard_has_variables_and_every_section() {
    let d = load();
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["service", "route"] {
        let v = vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name}"));
        assert_eq!(v["type"], "query");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{}",
            p["title"]
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }

    let queries = dashboard::panel_queries(&dashboard_path()).unwrap();
    let all: String = queries
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // Each section of the overview is backed by its metrics.
    for metric in [
        "http_server_request_duration_seconds_bucket",
        "http_server_request_duration_seconds_count",
        "http_client_request_duration_seconds_bucket",
        "sloguard_slo_target_p99_seconds",
        "sloguard_route_p99_seconds",
        "sloguard_route_baseline_p99_seconds",
        "sloguard_route_error_ratio",
        "sloguard_route_requests",
        "sloguard_slo_burn_rate",
        "sloguard_slo_alerting",
        "sloguard_alerts_total",
        "sloguard_alerts_deliveries_total",
        "sloguard_fuse_state",
        "sloguard_fuse_transitions_total",
        "sloguard_tcp_retransmits_total",
        "sloguard_tcp_connect_duration_seconds_bucket",
        "sloguard_tcp_connect_failures_total",
        "sloguard_events_total",
        "sloguard_events_lost_total",
        "sloguard_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(all.contains(metric), "no panel queries {metric}");
    }
}

#[test]
fn every_dashboard_and_rule_query_runs_in_a_real_prometheus() {
    let test = "every_dashboard_and_rule_query_runs_in_a_real_prometheus";
    let Some(binary) = tools::require(test, "prometheus", "apt-get install prometheus") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // No scrape targets: sloguard's rules are loaded and evaluated every second.
    let prom = super::prometheus_with_rules(&binary, tmp.path(), None);
    let rules = super::rules_file();

    let queries = super::dashboard_and_rule_queries(&dashboard_path(), &rules);
    assert!(queries.len() >= 40, "{} queries", queries.len());
    for (title, expr) in &queries {
        let promql = dashboard::to_promql(expr);
        let path = format!("/api/v1/query?query={}", loopback::urlencode(&promql));
        let (code, body) = loopback::http(prom.addr, "GET", &path, None).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(
            code == 200 && v["status"] == "success",
            "panel {title:?}: {promql}\n→ {code} {body}"
        );
    }
    let n_rules = queries
        .iter()
        .filter(|(t, _)| t.starts_with("rule "))
        .count();
    wait_rules_healthy(prom.addr, n_rules);
}

/// Every rule of the rules file, loaded by a real Prometheus, evaluates
/// without error (health `ok`).
fn wait_rules_healthy(addr: std::net::SocketAddr, want: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, body) = loopback::http(addr, "GET", "/api/v1/rules", None).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        for r in &rules {
            assert_ne!(
                r["health"], "err",
                "rule {} fails: {}",
                r["name"], r["lastError"]
            );
        }
        if rules.len() == want && rules.iter().all(|r| r["health"] == "ok") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rules not all evaluated: {} of {want} loaded",
            rules.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
