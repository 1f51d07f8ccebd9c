//! The deploy files (Kubernetes, Prometheus, Alertmanager, Grafana, compose,
//! Dockerfile), each checked by the real tool that reads it. A missing tool
//! skips its test with the reason, except in CI (`CI` set), where it fails:
//! `cargo xtask setup` installs them all.
mod alertmanager;
mod docs;
mod grafana;
mod image_compose;
mod kubernetes;
mod live_prometheus;
mod prometheus;

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub fn deploy_dir() -> PathBuf {
    tests::tools::repo_root().join("deploy")
}

/// The recording and alerting rules we ship.
pub fn rules_file() -> PathBuf {
    deploy_dir().join("prometheus/rules/sloguard.rules.yml")
}

/// A real Prometheus in `tmp` evaluating our rules every second and
/// scraping `target` every second (none: an empty TSDB, so only parsing and
/// evaluation speak).
pub fn prometheus_with_rules(
    binary: &Path,
    tmp: &Path,
    target: Option<std::net::SocketAddr>,
) -> tests::loopback::Server {
    let config = tmp.join("prometheus.yml");
    let scrape = match target {
        Some(t) => format!(
            "scrape_configs:\n  - job_name: sloguard\n    static_configs:\n      - targets: ['{t}']\n"
        ),
        None => "scrape_configs: []\n".to_string(),
    };
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{:?}]\n{scrape}",
            rules_file().display().to_string()
        ),
    )
    .unwrap();
    tests::loopback::prometheus(binary, &config, &tmp.join("data"))
}

/// Every document of a (multi-document) YAML text.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

pub fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A string field, or "" when absent.
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A sequence field, or empty when absent.
pub fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(|x| x.as_slice()).unwrap_or(&[])
}

/// Every PromQL query of the dashboard (panels, then variables) and of the
/// rules file (recording and alerting rules), each with a name for messages.
pub fn dashboard_and_rule_queries(dashboard: &Path, rules: &Path) -> Vec<(String, String)> {
    let mut queries = tests::dashboard::panel_queries(dashboard).unwrap();
    queries.extend(
        tests::dashboard::variable_queries(dashboard)
            .unwrap()
            .into_iter()
            .map(|(n, q)| (format!("variable {n}"), q)),
    );
    let rule_doc = yaml_file(rules);
    for group in seq(&rule_doc["groups"]) {
        for rule in seq(&group["rules"]) {
            let name = rule["record"]
                .as_str()
                .or(rule["alert"].as_str())
                .unwrap_or("");
            queries.push((format!("rule {name}"), s(&rule["expr"]).to_string()));
        }
    }
    queries
}
