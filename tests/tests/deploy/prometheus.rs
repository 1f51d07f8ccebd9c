//! deploy/prometheus: both scrape configs pass `promtool check config`, the
//! rules pass `promtool check rules`, the unit tests pass `promtool test rules`
//! and cover every alert firing and not firing, and the Operator's
//! PrometheusRule carries exactly the rules file.
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_yaml_ng::Value;
use tests::tools;

use super::{deploy_dir, s, seq, yaml_file};

const PROMTOOL_INSTALL: &str = "apt-get install prometheus";

fn promtool(test: &str) -> Option<Command> {
    tools::require(test, "promtool", PROMTOOL_INSTALL).map(Command::new)
}

#[test]
fn promtool_checks_the_scrape_configs() {
    let Some(mut cmd) = promtool("promtool_checks_the_scrape_configs") else {
        return;
    };
    let dir = deploy_dir().join("prometheus");
    tools::run_ok(
        cmd.args(["check", "config"])
            .arg(dir.join("prometheus.yml")),
    );

    // Debian's promtool is built without Kubernetes discovery: check the rest
    // of the Kubernetes config with the discovery block swapped for a static
    // target, and the discovery block itself here.
    let mut doc = yaml_file(&dir.join("prometheus-kubernetes.yml"));
    let job = &mut doc["scrape_configs"][0];
    let sd = job
        .as_mapping_mut()
        .unwrap()
        .remove("kubernetes_sd_configs")
        .expect("kubernetes_sd_configs");
    assert_eq!(s(&sd[0]["role"]), "pod");
    for sel in seq(&sd[0]["selectors"]) {
        assert_eq!(
            s(&sel["role"]),
            "pod",
            "selector role must match the discovery role"
        );
    }
    job["static_configs"] = serde_yaml_ng::from_str("[{targets: ['127.0.0.1:9464']}]").unwrap();
    let rules = dir.join("rules/*.rules.yml");
    doc["rule_files"] = Value::Sequence(vec![Value::String(rules.display().to_string())]);
    let tmp = tempfile::tempdir().unwrap();
    let swapped = tmp.path().join("prometheus-kubernetes.yml");
    std::fs::write(&swapped, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let mut cmd = promtool("promtool_checks_the_scrape_configs").unwrap();
    tools::run_ok(cmd.args(["check", "config"]).arg(&swapped));
}

#[test]
fn promtool_checks_the_rules() {
    let Some(mut cmd) = promtool("promtool_checks_the_rules") else {
        return;
    };
    let out = tools::run_ok(
        cmd.args(["check", "rules"])
            .arg(deploy_dir().join("prometheus/rules/sloguard.rules.yml")),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

/// Every alert of the rules file, by name.
fn alert_names() -> BTreeSet<String> {
    let rules = yaml_file(&deploy_dir().join("prometheus/rules/sloguard.rules.yml"));
    seq(&rules["groups"])
        .iter()
        .flat_map(|g| seq(&g["rules"]))
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

#[test]
fn promtool_unit_tests_pass_and_cover_every_alert() {
    let Some(mut cmd) = promtool("promtool_unit_tests_pass_and_cover_every_alert") else {
        return;
    };
    let dir = deploy_dir().join("prometheus/tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    tools::run_ok(cmd.args(["test", "rules"]).args(&files).current_dir(&dir));

    // (alert, fires?) cases seen across the test files.
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for f in &files {
        for t in seq(&yaml_file(f)["tests"]) {
            for case in seq(&t["alert_rule_test"]) {
                let entry = cases.entry(s(&case["alertname"]).to_string()).or_default();
                if seq(&case["exp_alerts"]).is_empty() {
                    entry.1 = true;
                } else {
                    entry.0 = true;
                }
            }
        }
    }
    let names = alert_names();
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        assert_eq!(
            cases.get(name),
            Some(&(true, true)),
            "{name} needs a firing and a not-firing unit test"
        );
    }
}

/// The PrometheusRule's text: header plus the rules file indented under `spec`.
fn prometheus_rule_text(rules: &str) -> String {
    let mut out = String::from(PROMETHEUS_RULE_HEADER);
    let mut started = false;
    for line in rules.lines() {
        // The file's own header comments stay in the file.
        if !started && (line.starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        started = true;
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

const PROMETHEUS_RULE_HEADER: &str = "\
# GENERATED from deploy/prometheus/rules/sloguard.rules.yml: do not edit.
# Regenerate: SG_BLESS=1 cargo test -p tests --test deploy
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: sloguard
  labels:
    # The Operator's default ruleSelector in kube-prometheus-stack.
    release: prometheus
spec:
";

#[test]
fn prometheus_rule_cr_is_the_rules_file() {
    let rules_path = deploy_dir().join("prometheus/rules/sloguard.rules.yml");
    let cr_path = deploy_dir().join("kubernetes/base/prometheusrule.yaml");
    let want = prometheus_rule_text(&std::fs::read_to_string(&rules_path).unwrap());
    if std::env::var_os("SG_BLESS").is_some() {
        std::fs::write(&cr_path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&cr_path).unwrap();
    assert!(
        have == want,
        "{} is stale: regenerate with SG_BLESS=1 cargo test -p tests --test deploy",
        cr_path.display()
    );
    // And the same rules once parsed, so the text copy cannot hide a difference.
    let cr: Value = serde_yaml_ng::from_str(&have).unwrap();
    assert_eq!(cr["spec"]["groups"], yaml_file(&rules_path)["groups"]);
}
