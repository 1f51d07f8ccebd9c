//! The pods on this node, from the API server: one list, then a watch from
//! its resourceVersion, kept in a [`PodCache`] whose lookups (by pod UID or
//! container id) read an immutable snapshot and never call the API.
//!
//! The background task never ends on its own and never panics on what the
//! server sends: a 410 Gone re-lists at once, any other error is counted and
//! re-lists after a growing backoff, and a full re-list runs every `resync`.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::config::{K8sConfig, K8sDecision};
use super::identity::{K8sLabels, PodMeta, k8s_service_name};

/// An immutable view of the pods on this node.
#[derive(Debug, Default)]
pub struct PodSnapshot {
    by_uid: HashMap<String, Arc<PodMeta>>,
    /// Container id → (pod, index into `containers`).
    by_container: HashMap<String, (Arc<PodMeta>, usize)>,
}

impl PodSnapshot {
    fn build(pods: &HashMap<String, Arc<PodMeta>>) -> Self {
        let mut by_container = HashMap::new();
        for pod in pods.values() {
            for (i, c) in pod.containers.iter().enumerate() {
                by_container.insert(c.id.clone(), (pod.clone(), i));
            }
        }
        Self {
            by_uid: pods.clone(),
            by_container,
        }
    }

    /// The pod with this UID. The systemd cgroup driver writes UIDs with
    /// `_` for `-`; both spellings are found.
    pub fn pod(&self, uid: &str) -> Option<&Arc<PodMeta>> {
        match self.by_uid.get(uid) {
            Some(p) => Some(p),
            None if uid.contains('_') => self.by_uid.get(&uid.replace('_', "-")),
            None => None,
        }
    }

    /// service_name and labels of a process whose cgroup names this pod
    /// (and maybe this container). Per process, not per event: the caller
    /// keeps the result.
    pub fn identity(&self, pod_uid: &str, container_id: Option<&str>) -> Option<K8sIdentity> {
        let by_container = container_id.and_then(|id| self.container(id));
        let (pod, container) = match by_container {
            Some((pod, name)) => (pod.clone(), Some(name)),
            None => (self.pod(pod_uid)?.clone(), None),
        };
        Some(K8sIdentity {
            service_name: k8s_service_name(&pod, container),
            labels: K8sLabels::new(&pod, container),
            pod,
        })
    }

    /// The pod and container name of a container id (without scheme).
    pub fn container(&self, container_id: &str) -> Option<(&Arc<PodMeta>, &str)> {
        self.by_container
            .get(container_id)
            .map(|(p, i)| (p, p.containers[*i].name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<PodMeta>> {
        self.by_uid.values()
    }
}

/// What a process in a pod is called and labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct K8sIdentity {
    pub service_name: String,
    pub labels: K8sLabels,
    pub pod: Arc<PodMeta>,
}

/// Counters of the watch task; logs and these agree.
#[derive(Clone, Debug, Default)]
pub struct PodCacheStats {
    /// Successful full lists (initial, after errors, 410 Gone and resync).
    pub lists: Counter,
    /// Watch events applied (ADDED, MODIFIED, DELETED, BOOKMARK).
    pub events: Counter,
    /// Failed list or watch calls and error events other than 410 Gone.
    pub errors: Counter,
    /// Watches ended by 410 Gone (resourceVersion too old).
    pub expired: Counter,
    /// Pods in the cache.
    pub pods: Gauge,
}

/// Shared, cheaply cloned handle on the pods of this node.
#[derive(Clone, Debug, Default)]
pub struct PodCache {
    snapshot: Arc<RwLock<Arc<PodSnapshot>>>,
    /// Bumped on every published change, so callers that keep identities
    /// per process know when to look again.
    generation: Arc<AtomicU64>,
    stats: PodCacheStats,
}

impl PodCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current snapshot; hold it to do many lookups under no lock.
    pub fn snapshot(&self) -> Arc<PodSnapshot> {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            // A writer cannot panic while holding the lock (it only swaps an
            // Arc), but a poisoned lock still holds a whole snapshot.
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn by_pod_uid(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.snapshot().pod(uid).cloned()
    }

    /// Pod and container name for a container id as cgroup paths carry it.
    pub fn by_container_id(&self, container_id: &str) -> Option<(Arc<PodMeta>, String)> {
        let snap = self.snapshot();
        snap.container(container_id)
            .map(|(p, name)| (p.clone(), name.to_string()))
    }

    /// Changes whenever the pods change (0 before the first list).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True once a first list has succeeded.
    pub fn is_synced(&self) -> bool {
        self.stats.lists.get() > 0
    }

    pub fn stats(&self) -> &PodCacheStats {
        &self.stats
    }

    /// `sloguard_k8s_*` self metrics.
    pub fn register(&self, registry: &mut Registry) {
        let s = &self.stats;
        registry.register(
            "sloguard_k8s_pod_lists",
            "Full lists of this node's pods from the Kubernetes API",
            s.lists.clone(),
        );
        registry.register(
            "sloguard_k8s_watch_events",
            "Pod watch events applied",
            s.events.clone(),
        );
        registry.register(
            "sloguard_k8s_api_errors",
            "Failed Kubernetes API list or watch calls and watch error events",
            s.errors.clone(),
        );
        registry.register(
            "sloguard_k8s_watch_expired",
            "Pod watches ended by 410 Gone and re-listed",
            s.expired.clone(),
        );
        registry.register(
            "sloguard_k8s_pods",
            "Pods on this node known to the agent",
            s.pods.clone(),
        );
    }

    fn publish(&self, pods: &HashMap<String, Arc<PodMeta>>) {
        let snap = Arc::new(PodSnapshot::build(pods));
        self.stats.pods.set(pods.len() as i64);
        match self.snapshot.write() {
            Ok(mut g) => *g = snap,
            Err(p) => *p.into_inner() = snap,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Timing of the list/watch loop.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchTuning {
    /// Full re-list at this interval.
    pub resync: Duration,
    /// Longest single watch call (the API server caps it; kube needs < 295 s).
    pub watch_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl WatchTuning {
    pub fn from_config(cfg: &K8sConfig) -> Self {
        Self {
            resync: cfg.resync,
            watch_timeout: Duration::from_secs(290),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff with a cap; `reset` after progress.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "k8s.enabled is true but no node name: set NODE_NAME (downward API spec.nodeName) or k8s.node_name"
    )]
    MissingNodeName,
    #[error("no usable Kubernetes client config: {0}")]
    Config(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A running pod watch: the cache it fills and the task filling it (aborted
/// on drop).
#[derive(Debug)]
pub struct PodWatcher {
    pub cache: PodCache,
    pub node: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching this node's pods, if the config and the environment say
/// so. `Ok(None)`: not in Kubernetes (or disabled), logged once. Must run
/// inside a tokio runtime.
pub async fn start(cfg: &K8sConfig) -> Result<Option<PodWatcher>, K8sError> {
    start_with_env(cfg, &|k| std::env::var(k).ok()).await
}

/// [`start`] with the environment given (tests do not touch the process's).
pub async fn start_with_env(
    cfg: &K8sConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PodWatcher>, K8sError> {
    let node = match cfg.decide(env) {
        K8sDecision::Watch { node } => node,
        K8sDecision::Disabled(reason) => {
            tracing::info!(reason, "Kubernetes pod identity off");
            return Ok(None);
        }
        K8sDecision::MissingNodeName => return Err(K8sError::MissingNodeName),
    };
    let tuning = WatchTuning::from_config(cfg);
    let mut config = match client_config(env).await {
        Ok(c) => c,
        Err(e) if cfg.enabled == super::config::K8sEnabled::Auto => {
            tracing::warn!(error = %e, "Kubernetes pod identity off");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // A silent connection is dead once a whole watch period has passed.
    config.read_timeout = Some(tuning.watch_timeout + Duration::from_secs(30));
    let client = kube::Client::try_from(config)?;
    tracing::info!(node = %node, "watching this node's pods for Kubernetes identity");
    Ok(Some(spawn(client, node, tuning)))
}

/// Start the list/watch task against `client` (tests point it at a local
/// server).
pub fn spawn(client: kube::Client, node: String, tuning: WatchTuning) -> PodWatcher {
    let cache = PodCache::new();
    let task = tokio::spawn(run(client, node.clone(), tuning, cache.clone()));
    PodWatcher { cache, node, task }
}

/// KUBECONFIG (one or more files, `:`-separated) when set, else kube's
/// inference: ~/.kube/config, then the in-cluster service account.
async fn client_config(env: &dyn Fn(&str) -> Option<String>) -> Result<kube::Config, K8sError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let err = |e: &dyn std::fmt::Display| K8sError::Config(e.to_string());
    let paths = env("KUBECONFIG").unwrap_or_default();
    let mut merged: Option<Kubeconfig> = None;
    for path in paths.split(':').filter(|p| !p.is_empty()) {
        let kc = Kubeconfig::read_from(path).map_err(|e| err(&format!("{path}: {e}")))?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(|e| err(&e))?,
        });
    }
    match merged {
        Some(kc) => kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| err(&e)),
        None => kube::Config::infer().await.map_err(|e| err(&e)),
    }
}

/// Why a watch stopped.
enum WatchEnd {
    /// 410 Gone: our resourceVersion is too old; re-list now.
    Expired,
    /// The resync period is over.
    Resync,
    /// An error was counted; re-list after backoff.
    Failed,
}

async fn run(client: kube::Client, node: String, tuning: WatchTuning, cache: PodCache) {
    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={node}");
    let mut backoff = Backoff::new(tuning.backoff_initial, tuning.backoff_max);
    let mut pods: HashMap<String, Arc<PodMeta>> = HashMap::new();
    loop {
        let list = match api.list(&ListParams::default().fields(&selector)).await {
            Ok(l) => l,
            Err(e) => {
                cache.stats.errors.inc();
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?wait, "listing this node's pods failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        pods.clear();
        for pod in &list.items {
            if let Some(meta) = PodMeta::from_pod(pod) {
                pods.insert(meta.uid.clone(), Arc::new(meta));
            }
        }
        cache.publish(&pods);
        cache.stats.lists.inc();
        let mut rv = list.metadata.resource_version.unwrap_or_default();
        tracing::debug!(pods = pods.len(), resource_version = %rv, "listed pods");
        match watch(
            &api,
            &selector,
            &tuning,
            &cache,
            &mut pods,
            &mut rv,
            &mut backoff,
        )
        .await
        {
            WatchEnd::Expired => {
                cache.stats.expired.inc();
                tracing::info!("pod watch expired (410 Gone); re-listing");
            }
            WatchEnd::Resync => {}
            WatchEnd::Failed => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

/// Watch from `rv` until the resync deadline, an expiry or an error,
/// applying events to `pods` and publishing each change.
async fn watch(
    api: &Api<Pod>,
    selector: &str,
    tuning: &WatchTuning,
    cache: &PodCache,
    pods: &mut HashMap<String, Arc<PodMeta>>,
    rv: &mut String,
    backoff: &mut Backoff,
) -> WatchEnd {
    let resync_at = tokio::time::Instant::now() + tuning.resync;
    loop {
        let left = resync_at.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return WatchEnd::Resync;
        }
        let secs = left.min(tuning.watch_timeout).as_secs().max(1) as u32;
        let wp = WatchParams::default().fields(selector).timeout(secs);
        let stream = match api.watch(&wp, rv).await {
            Ok(s) => s,
            Err(e) => {
                cache.stats.errors.inc();
                tracing::warn!(error = %e, "starting the pod watch failed");
                return WatchEnd::Failed;
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut seen = 0u64;
        loop {
            // The server ends a watch after timeoutSeconds; should it not,
            // the resync deadline still does.
            let item = match tokio::time::timeout_at(resync_at, stream.next()).await {
                Err(_elapsed) => return WatchEnd::Resync,
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            let event = match item {
                Ok(ev) => ev,
                Err(e) => {
                    cache.stats.errors.inc();
                    tracing::warn!(error = %e, "pod watch stream failed");
                    return WatchEnd::Failed;
                }
            };
            seen += 1;
            match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    if let Some(meta) = PodMeta::from_pod(&p) {
                        advance(rv, &meta.resource_version);
                        pods.insert(meta.uid.clone(), Arc::new(meta));
                        cache.publish(pods);
                    }
                }
                WatchEvent::Deleted(p) => {
                    if let Some(meta) = PodMeta::from_pod(&p) {
                        advance(rv, &meta.resource_version);
                        pods.remove(&meta.uid);
                        cache.publish(pods);
                    }
                }
                WatchEvent::Bookmark(b) => advance(rv, &b.metadata.resource_version),
                WatchEvent::Error(status) if status.code == 410 => return WatchEnd::Expired,
                WatchEvent::Error(status) => {
                    cache.stats.errors.inc();
                    tracing::warn!(code = status.code, message = %status.message, "pod watch error event");
                    return WatchEnd::Failed;
                }
            }
            cache.stats.events.inc();
            backoff.reset();
        }
        // The server closed the watch (its timeout): continue from `rv`. One
        // that closes at once with nothing in it is slowed by the backoff.
        if seen == 0 {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

fn advance(rv: &mut String, next: &str) {
    if !next.is_empty() {
        rv.clear();
        rv.push_str(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}

#[cfg(test)]
#[path = "pods_replay_tests.rs"]
mod replay_tests;
