//! What a pod is, in the terms metrics and spans use: namespace, pod name,
//! workload, the `app.kubernetes.io/name` label, and its containers by id.
//! Built from the API server's Pod object; never fails on odd input, it only
//! leaves out what is missing.
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use crate::export::metrics::Escaped;

/// The kind of controller that owns a pod (after following ReplicaSet →
/// Deployment and Job → CronJob by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    /// Any other owner kind (e.g. a custom controller); its name is kept.
    Other,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Other => "Other",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

/// One container of a pod: its runtime id (without the `containerd://`
/// scheme) and its name in the pod spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub id: String,
    pub name: String,
}

/// A pod on this node, as far as identity goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub workload: Option<Workload>,
    /// `app.kubernetes.io/name`, else the `app` label.
    pub app_name: Option<String>,
    /// Running and terminated containers that have a runtime id (init and
    /// ephemeral containers included).
    pub containers: Vec<ContainerMeta>,
    /// The object's resourceVersion, for the watch's bookkeeping.
    pub resource_version: String,
    /// All the pod's labels, for `scope` selectors (never exported as is).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl PodMeta {
    /// `None` when the object has no UID (nothing to key it by).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let labels = meta.labels.as_ref();
        let label = |k: &str| {
            labels
                .and_then(|l| l.get(k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let app_name = label("app.kubernetes.io/name").or_else(|| label("app"));
        let workload = meta.owner_references.as_ref().and_then(|owners| {
            // The controller reference names the workload; else the first owner.
            let owner = owners
                .iter()
                .find(|o| o.controller == Some(true))
                .or(owners.first())?;
            Some(resolve_owner(
                &owner.kind,
                &owner.name,
                label("pod-template-hash").as_deref(),
            ))
        });
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            let all = [
                status.container_statuses.as_deref(),
                status.init_container_statuses.as_deref(),
                status.ephemeral_container_statuses.as_deref(),
            ];
            for cs in all.into_iter().flatten().flatten() {
                if let Some(c) = container_meta(cs) {
                    containers.push(c);
                }
            }
        }
        Some(Self {
            uid,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            workload,
            app_name,
            containers,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            labels: labels.cloned().unwrap_or_default(),
        })
    }

    /// The container with this runtime id, if the pod has it.
    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.id == container_id)
            .map(|c| c.name.as_str())
    }
}

fn container_meta(cs: &ContainerStatus) -> Option<ContainerMeta> {
    let raw = cs.container_id.as_deref()?;
    let id = strip_runtime_scheme(raw);
    (!id.is_empty()).then(|| ContainerMeta {
        id: id.to_string(),
        name: cs.name.clone(),
    })
}

/// `containerd://abc`, `cri-o://abc`, `docker://abc` → `abc`.
pub fn strip_runtime_scheme(id: &str) -> &str {
    match id.find("://") {
        Some(i) => &id[i + 3..],
        None => id,
    }
}

/// Owner reference → workload. A ReplicaSet named `<deployment>-<hash>`
/// whose hash is the pod's `pod-template-hash` label (or looks like one) is
/// that Deployment; a Job named `<cronjob>-<minutes since epoch>` is that
/// CronJob. Both follow the controllers' naming, so no extra API call.
pub fn resolve_owner(kind: &str, name: &str, pod_template_hash: Option<&str>) -> Workload {
    let w = |kind, name: &str| Workload {
        kind,
        name: name.to_string(),
    };
    match kind {
        "ReplicaSet" => match name.rsplit_once('-') {
            Some((base, hash))
                if !base.is_empty()
                    && (pod_template_hash == Some(hash)
                        || (pod_template_hash.is_none() && looks_like_template_hash(hash))) =>
            {
                w(WorkloadKind::Deployment, base)
            }
            _ => w(WorkloadKind::ReplicaSet, name),
        },
        "Job" => match name.rsplit_once('-') {
            Some((base, stamp))
                if !base.is_empty()
                    && stamp.len() >= 8
                    && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                w(WorkloadKind::CronJob, base)
            }
            _ => w(WorkloadKind::Job, name),
        },
        "StatefulSet" => w(WorkloadKind::StatefulSet, name),
        "DaemonSet" => w(WorkloadKind::DaemonSet, name),
        "Deployment" => w(WorkloadKind::Deployment, name),
        "CronJob" => w(WorkloadKind::CronJob, name),
        _ => w(WorkloadKind::Other, name),
    }
}

/// The Deployment controller's hash suffix: 1–10 characters of its safe
/// alphabet (`bcdfghjklmnpqrstvwxz2456789`).
fn looks_like_template_hash(s: &str) -> bool {
    (1..=10).contains(&s.len())
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// service_name of a process in this pod: the `app.kubernetes.io/name` (or
/// `app`) label, else the workload name, else the container name, else the
/// pod name.
pub fn k8s_service_name(pod: &PodMeta, container: Option<&str>) -> String {
    if let Some(app) = &pod.app_name {
        return app.clone();
    }
    if let Some(w) = &pod.workload {
        return w.name.clone();
    }
    match container {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => pod.name.clone(),
    }
}

/// The labels exported on metrics (and resource attributes on spans) for a
/// process in a pod. Values are shared strings: cloning is cheap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct K8sLabels {
    pub k8s_namespace: Arc<str>,
    pub k8s_pod: Arc<str>,
    /// Workload name; empty when the pod has no owner.
    pub k8s_workload: Arc<str>,
    /// Container name; empty when the process's container is not known.
    pub k8s_container: Arc<str>,
    /// Kind of the workload, for the kind-specific span resource attribute.
    pub workload_kind: Option<WorkloadKind>,
}

impl K8sLabels {
    pub fn new(pod: &PodMeta, container: Option<&str>) -> Self {
        Self {
            k8s_namespace: pod.namespace.as_str().into(),
            k8s_pod: pod.name.as_str().into(),
            k8s_workload: pod
                .workload
                .as_ref()
                .map(|w| w.name.as_str())
                .unwrap_or("")
                .into(),
            k8s_container: container.unwrap_or("").into(),
            workload_kind: pod.workload.as_ref().map(|w| w.kind),
        }
    }

    /// `(label name, value)` pairs in a fixed order, for metric label sets.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("k8s_namespace", &self.k8s_namespace),
            ("k8s_pod", &self.k8s_pod),
            ("k8s_workload", &self.k8s_workload),
            ("k8s_container", &self.k8s_container),
        ]
    }

    /// OpenTelemetry resource attributes (semantic conventions: the
    /// workload under its kind's key, e.g. `k8s.deployment.name`); empty
    /// values are left out.
    pub fn resource_attributes(&self) -> Vec<(&'static str, &str)> {
        let workload_key = match self.workload_kind {
            Some(WorkloadKind::Deployment) => "k8s.deployment.name",
            Some(WorkloadKind::ReplicaSet) => "k8s.replicaset.name",
            Some(WorkloadKind::StatefulSet) => "k8s.statefulset.name",
            Some(WorkloadKind::DaemonSet) => "k8s.daemonset.name",
            Some(WorkloadKind::Job) => "k8s.job.name",
            Some(WorkloadKind::CronJob) => "k8s.cronjob.name",
            Some(WorkloadKind::Other) | None => "k8s.workload.name",
        };
        [
            ("k8s.namespace.name", &*self.k8s_namespace),
            ("k8s.pod.name", &*self.k8s_pod),
            (workload_key, &*self.k8s_workload),
            ("k8s.container.name", &*self.k8s_container),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }
}

/// The metric labels of a process's pod, if it runs in one: the four
/// `k8s_*` labels (those with a value) inside Kubernetes, nothing at all
/// outside it, so hosts without pods get no empty labels. Flattened into
/// label sets with `#[prometheus(flatten)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct K8sLabelSet(pub Option<Arc<K8sLabels>>);

impl K8sLabelSet {
    pub fn of(labels: Option<&Arc<K8sLabels>>) -> Self {
        Self(labels.cloned())
    }
}

impl EncodeLabelSet for K8sLabelSet {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let Some(labels) = &self.0 else {
            return Ok(());
        };
        for (key, value) in labels.pairs() {
            // An empty value is the same as no label in Prometheus: leave it out.
            if !value.is_empty() {
                EncodeLabel::encode(&(key, Escaped(value)), encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> PodMeta {
        PodMeta::from_pod(&serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn owners_resolve_to_workloads() {
        let d = resolve_owner("ReplicaSet", "checkout-7d4b9c8f6d", Some("7d4b9c8f6d"));
        assert_eq!(
            (d.kind, d.name.as_str()),
            (WorkloadKind::Deployment, "checkout")
        );
        let d = resolve_owner("ReplicaSet", "my-app-v2-5f6c7b8d9x", None);
        assert_eq!(
            (d.kind, d.name.as_str()),
            (WorkloadKind::Deployment, "my-app-v2")
        );
        // A bare ReplicaSet whose suffix is not a template hash stays itself.
        let r = resolve_owner("ReplicaSet", "frontend-a", Some("9c8f6d"));
        assert_eq!(
            (r.kind, r.name.as_str()),
            (WorkloadKind::ReplicaSet, "frontend-a")
        );
        let c = resolve_owner("Job", "backup-29410560", None);
        assert_eq!((c.kind, c.name.as_str()), (WorkloadKind::CronJob, "backup"));
        let j = resolve_owner("Job", "migrate-db", None);
        assert_eq!((j.kind, j.name.as_str()), (WorkloadKind::Job, "migrate-db"));
        assert_eq!(
            resolve_owner("StatefulSet", "pg", None).kind,
            WorkloadKind::StatefulSet
        );
        assert_eq!(
            resolve_owner("DaemonSet", "fluent", None).kind,
            WorkloadKind::DaemonSet
        );
        assert_eq!(
            resolve_owner("Rollout", "x", None).kind,
            WorkloadKind::Other
        );
    }

    #[test]
    fn service_name_rule_order() {
        let full = pod(serde_json::json!({
            "metadata": {"uid": "u1", "name": "web-7d4b9c8f6d-x2x9q", "namespace": "shop",
                "labels": {"app.kubernetes.io/name": "storefront", "app": "legacy",
                           "pod-template-hash": "7d4b9c8f6d"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d4b9c8f6d", "uid": "r1", "controller": true}]},
            "status": {"containerStatuses": [{"name": "nginx", "containerID": "containerd://abc",
                "image": "nginx", "imageID": "", "ready": true, "restartCount": 0}]}
        }));
        assert_eq!(k8s_service_name(&full, Some("nginx")), "storefront");
        let mut p = full.clone();
        p.app_name = None;
        assert_eq!(k8s_service_name(&p, Some("nginx")), "web");
        p.workload = None;
        assert_eq!(k8s_service_name(&p, Some("nginx")), "nginx");
        assert_eq!(k8s_service_name(&p, None), "web-7d4b9c8f6d-x2x9q");
        // `app` is the fallback label.
        let legacy = pod(serde_json::json!({
            "metadata": {"uid": "u2", "name": "p", "labels": {"app": "legacy"}}
        }));
        assert_eq!(k8s_service_name(&legacy, None), "legacy");
    }

    #[test]
    fn containers_and_labels() {
        let p = pod(serde_json::json!({
            "metadata": {"uid": "u1", "name": "db-0", "namespace": "data",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "db", "uid": "s1", "controller": true}]},
            "spec": {"nodeName": "node-a", "containers": []},
            "status": {
                "containerStatuses": [
                    {"name": "pg", "containerID": "cri-o://1111", "image": "", "imageID": "",
                     "ready": true, "restartCount": 0},
                    {"name": "waiting", "image": "", "imageID": "", "ready": false, "restartCount": 0}],
                "initContainerStatuses": [{"name": "init", "containerID": "docker://2222",
                    "image": "", "imageID": "", "ready": false, "restartCount": 0}]}
        }));
        assert_eq!(p.container_name("1111"), Some("pg"));
        assert_eq!(p.container_name("2222"), Some("init"));
        assert_eq!(
            p.containers.len(),
            2,
            "a container without an id is left out"
        );
        assert_eq!(p.node, "node-a");
        let l = K8sLabels::new(&p, Some("pg"));
        assert_eq!(
            l.pairs(),
            [
                ("k8s_namespace", "data"),
                ("k8s_pod", "db-0"),
                ("k8s_workload", "db"),
                ("k8s_container", "pg")
            ]
        );
        assert_eq!(
            l.resource_attributes(),
            vec![
                ("k8s.namespace.name", "data"),
                ("k8s.pod.name", "db-0"),
                ("k8s.statefulset.name", "db"),
                ("k8s.container.name", "pg")
            ]
        );
    }

    #[test]
    fn pod_without_uid_is_skipped() {
        let p: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(PodMeta::from_pod(&p).is_none());
    }
}
