//! The pod watch against a local HTTP server that replays recorded API
//! server responses (`agent/testdata/k8s`): a PodList, a watch stream of
//! ADDED/MODIFIED/DELETED/BOOKMARK events, a 410 Gone error event and the
//! re-list it forces. The test feeds watch lines one at a time and checks
//! the cache after each.
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::*;
use crate::request::k8s::config::K8sEnabled;
use crate::request::k8s::identity::{WorkloadKind, k8s_service_name};

const NODE: &str = "node-a";
const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/k8s/");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{TESTDATA}{name}")).expect(name)
}

fn fixture_lines(name: &str) -> Vec<String> {
    fixture(name).lines().map(|l| format!("{l}\n")).collect()
}

#[derive(Clone, Debug)]
struct Seen {
    watch: bool,
    query: HashMap<String, String>,
}

/// Scripted answers: list bodies in order; one channel per watch call whose
/// lines are streamed as they are sent (the stream ends when the sender is
/// dropped). A watch with nothing scripted stays open and silent.
#[derive(Default)]
struct Replay {
    lists: Mutex<VecDeque<(StatusCode, String)>>,
    watches: Mutex<VecDeque<mpsc::UnboundedReceiver<String>>>,
    seen: Mutex<Vec<Seen>>,
}

impl Replay {
    fn push_list(&self, status: StatusCode, body: String) {
        self.lists.lock().unwrap().push_back((status, body));
    }

    fn push_watch(&self) -> mpsc::UnboundedSender<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.watches.lock().unwrap().push_back(rx);
        tx
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code})
    .to_string()
}

async fn pods(State(r): State<Arc<Replay>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    r.seen.lock().unwrap().push(Seen {
        watch,
        query: q.clone(),
    });
    let json = [("content-type", "application/json")];
    // Like the API server with a node-scoped RBAC binding: nothing else.
    if q.get("fieldSelector").map(String::as_str) != Some("spec.nodeName=node-a") {
        let body = status_json(400, "BadRequest", "test server wants spec.nodeName=node-a");
        return (StatusCode::BAD_REQUEST, json, body).into_response();
    }
    if !watch {
        let next = r.lists.lock().unwrap().pop_front();
        let (status, body) = next.unwrap_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            status_json(500, "InternalError", "no list scripted"),
        ));
        return (status, json, body).into_response();
    }
    let rx = r.watches.lock().unwrap().pop_front();
    let body = match rx {
        Some(rx) => Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
        })),
        None => Body::from_stream(futures_util::stream::pending::<Result<Bytes, Infallible>>()),
    };
    (StatusCode::OK, json, body).into_response()
}

async fn serve(replay: Arc<Replay>) -> String {
    let app = axum::Router::new()
        .route("/api/v1/pods", axum::routing::get(pods))
        .with_state(replay);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

fn fast() -> WatchTuning {
    WatchTuning {
        resync: Duration::from_secs(3600),
        watch_timeout: Duration::from_secs(290),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    }
}

/// Poll `cond` until it holds; fail the test after 3 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn names(cache: &PodCache) -> Vec<String> {
    let mut v: Vec<_> = cache.snapshot().pods().map(|p| p.name.clone()).collect();
    v.sort();
    v
}

const WEB: &str = "3b1f6c1e-6a0e-4f57-9a53-2f7c1d7e0a01";
const PG: &str = "7c2d5e11-0d4b-4b39-8f0e-5e0a3f6b9b02";
const DS: &str = "a1e3c7f0-2222-4c8e-b5d1-0c3e9d7f4a03";
const JOB: &str = "d4c3b2a1-3333-4e5f-8a9b-1c2d3e4f5a04";

fn id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// A watcher synced to the replayed initial list (three pods), with the
/// replay (to queue more responses) and the sender of its first watch stream.
async fn synced_watcher() -> (Arc<Replay>, mpsc::UnboundedSender<String>, PodWatcher) {
    let replay = Arc::new(Replay::default());
    replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
    let w1 = replay.push_watch();
    let url = serve(replay.clone()).await;
    let watcher = spawn(client(&url), NODE.into(), fast());
    let cache = watcher.cache.clone();
    wait_until("initial list", || cache.snapshot().len() == 3).await;
    (replay, w1, watcher)
}

#[tokio::test]
async fn list_watch_and_relist_on_410() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (replay, w1, watcher) = synced_watcher().await;
        let cache = watcher.cache.clone();
        assert!(cache.is_synced());
        let web = cache.by_pod_uid(WEB).unwrap();
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("shop", "checkout-7d4b9c8f6d-x2x9q")
        );
        let w = web.workload.clone().unwrap();
        assert_eq!(
            (w.kind, w.name.as_str()),
            (WorkloadKind::Deployment, "checkout")
        );
        assert_eq!(web.app_name.as_deref(), Some("checkout"));
        assert_eq!(web.node, NODE);
        let (pod, container) = cache.by_container_id(&id('b')).unwrap();
        assert_eq!((pod.uid.as_str(), container.as_str()), (WEB, "envoy"));
        assert_eq!(
            cache.by_container_id(&id('c')).unwrap().1,
            "migrate",
            "init container"
        );
        let pg = cache.by_pod_uid(PG).unwrap();
        let w = pg.workload.clone().unwrap();
        assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::StatefulSet, "pg"));
        assert_eq!(
            k8s_service_name(&pg, Some("postgres")),
            "postgres",
            "`app` label"
        );
        let ds = cache.by_pod_uid(DS).unwrap();
        let w = ds.workload.clone().unwrap();
        assert_eq!(
            (w.kind, w.name.as_str()),
            (WorkloadKind::DaemonSet, "node-exporter")
        );
        assert_eq!(
            k8s_service_name(&ds, Some("node-exporter")),
            "node-exporter"
        );

        // The list carried the node selector; the watch starts from its
        // resourceVersion with the same selector.
        wait_until("first watch", || replay.seen().len() >= 2).await;
        let seen = replay.seen();
        assert!(!seen[0].watch);
        assert_eq!(seen[0].query["fieldSelector"], "spec.nodeName=node-a");
        assert!(seen[1].watch);
        assert_eq!(seen[1].query["resourceVersion"], "1000");
        assert_eq!(seen[1].query["fieldSelector"], "spec.nodeName=node-a");
        assert_eq!(seen[1].query["allowWatchBookmarks"], "true");
        assert!(seen[1].query["timeoutSeconds"].parse::<u32>().unwrap() <= 290);

        let events = fixture_lines("watch-1.ndjson");
        // ADDED: a CronJob's pod.
        w1.send(events[0].clone()).unwrap();
        wait_until("ADDED", || cache.by_pod_uid(JOB).is_some()).await;
        let job = cache.by_pod_uid(JOB).unwrap();
        let w = job.workload.clone().unwrap();
        assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::CronJob, "backup"));
        assert_eq!(k8s_service_name(&job, Some("backup")), "backup");
        // MODIFIED: the app container restarted under a new id.
        w1.send(events[1].clone()).unwrap();
        wait_until("MODIFIED", || cache.by_container_id(&id('1')).is_some()).await;
        assert!(
            cache.by_container_id(&id('a')).is_none(),
            "old container id dropped"
        );
        assert_eq!(cache.by_container_id(&id('1')).unwrap().1, "app");
        // DELETED.
        let before = cache.generation();
        w1.send(events[2].clone()).unwrap();
        wait_until("DELETED", || cache.by_pod_uid(PG).is_none()).await;
        assert!(cache.by_container_id(&id('d')).is_none());
        assert!(cache.generation() > before, "a change bumps the generation");
        // BOOKMARK, then the server ends this watch: the next one resumes
        // from the bookmark's resourceVersion.
        let w2 = replay.push_watch();
        w1.send(events[3].clone()).unwrap();
        drop(w1);
        wait_until("second watch", || replay.seen().len() >= 3).await;
        let seen = replay.seen();
        assert!(seen[2].watch);
        assert_eq!(seen[2].query["resourceVersion"], "1100");
        assert_eq!(cache.stats().events.get(), 4);

        // 410 Gone: re-list at once and watch from the new list.
        replay.push_list(StatusCode::OK, fixture("podlist-relist.json"));
        let _w3 = replay.push_watch();
        w2.send(fixture_lines("watch-2.ndjson")[0].clone()).unwrap();
        wait_until("re-list", || cache.stats().lists.get() == 2).await;
        assert_eq!(
            names(&cache),
            [
                "api-5f6c7b8d9x-kq2mz",
                "backup-29410560-q7w8e",
                "checkout-7d4b9c8f6d-x2x9q"
            ],
            "the cache is exactly the new list (the DaemonSet pod went while we were away)"
        );
        assert!(cache.by_pod_uid(DS).is_none());
        let api = cache
            .by_pod_uid("e5f6a7b8-4444-4c1d-9e2f-3a4b5c6d7e05")
            .unwrap();
        assert_eq!(api.workload.as_ref().unwrap().name, "api");
        assert_eq!(k8s_service_name(&api, Some("server")), "api-legacy");
        wait_until("third watch", || replay.seen().len() >= 5).await;
        let seen = replay.seen();
        assert!(!seen[3].watch, "410 is followed by a list");
        assert_eq!(seen[4].query["resourceVersion"], "2000");
        assert_eq!(cache.stats().expired.get(), 1);
        assert_eq!(cache.stats().errors.get(), 0, "410 is not an error");
        assert_eq!(cache.stats().pods.get(), 3);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn errors_are_counted_and_retried() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let replay = Arc::new(Replay::default());
        replay.push_list(
            StatusCode::INTERNAL_SERVER_ERROR,
            status_json(500, "InternalError", "etcd unavailable"),
        );
        replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
        let w1 = replay.push_watch();
        let url = serve(replay.clone()).await;
        let watcher = spawn(client(&url), NODE.into(), fast());
        let cache = watcher.cache.clone();
        wait_until("list after a failed one", || cache.snapshot().len() == 3).await;
        assert_eq!(cache.stats().lists.get(), 1, "only successful lists count");
        assert_eq!(cache.stats().errors.get(), 1);

        // A line that is not a watch event (a proxy's error page) and a
        // non-410 error event each count and re-list.
        replay.push_list(StatusCode::OK, fixture("podlist-relist.json"));
        let w2 = replay.push_watch();
        w1.send("<html>502 Bad Gateway</html>\n".into()).unwrap();
        wait_until("re-list after bad line", || cache.stats().lists.get() == 2).await;
        assert_eq!(cache.stats().errors.get(), 2);
        assert_eq!(cache.snapshot().len(), 3);
        assert!(cache.by_pod_uid(DS).is_none(), "second list applied");

        replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
        let _w3 = replay.push_watch();
        let err = status_json(500, "InternalError", "watch chan error");
        w2.send(format!("{{\"type\":\"ERROR\",\"object\":{err}}}\n"))
            .unwrap();
        wait_until("re-list after error event", || {
            cache.stats().lists.get() == 3
        })
        .await;
        assert_eq!(cache.stats().errors.get(), 3);
        assert!(cache.by_pod_uid(DS).is_some());
        assert_eq!(cache.stats().expired.get(), 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn resync_relists_even_when_the_watch_stays_silent() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let replay = Arc::new(Replay::default());
        replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
        replay.push_list(StatusCode::OK, fixture("podlist-relist.json"));
        let url = serve(replay.clone()).await;
        let tuning = WatchTuning {
            resync: Duration::from_millis(300),
            ..fast()
        };
        let started = tokio::time::Instant::now();
        let watcher = spawn(client(&url), NODE.into(), tuning);
        let cache = watcher.cache.clone();
        wait_until("first list", || cache.stats().lists.get() == 1).await;
        wait_until("resync list", || cache.stats().lists.get() == 2).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            cache.by_pod_uid(DS).is_none(),
            "resync applied the new list"
        );
        assert_eq!(cache.stats().errors.get(), 0);
        // The silent watch was asked to end by the resync deadline.
        assert_eq!(replay.seen()[1].query["timeoutSeconds"], "1");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn identity_of_a_process_by_pod_uid_and_container_id() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let replay = Arc::new(Replay::default());
        replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
        let url = serve(replay.clone()).await;
        let watcher = spawn(client(&url), NODE.into(), fast());
        let cache = watcher.cache.clone();
        wait_until("list", || cache.snapshot().len() == 3).await;
        let snap = cache.snapshot();
        let envoy = snap.identity(WEB, Some(&id('b'))).unwrap();
        assert_eq!(envoy.service_name, "checkout");
        assert_eq!(
            envoy.labels.pairs(),
            [
                ("k8s_namespace", "shop"),
                ("k8s_pod", "checkout-7d4b9c8f6d-x2x9q"),
                ("k8s_workload", "checkout"),
                ("k8s_container", "envoy")
            ]
        );
        // systemd cgroup driver spelling of the UID; container not yet known.
        let ds = snap
            .identity(&DS.replace('-', "_"), Some(&id('9')))
            .unwrap();
        assert_eq!(ds.service_name, "node-exporter");
        assert_eq!(&*ds.labels.k8s_container, "");
        assert!(snap.identity("no-such-uid", None).is_none());
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn self_metrics_follow_the_watch_and_pass_promtool() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let replay = Arc::new(Replay::default());
        replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
        let w1 = replay.push_watch();
        let url = serve(replay.clone()).await;
        let watcher = spawn(client(&url), NODE.into(), fast());
        let mut reg = prometheus_client::registry::Registry::default();
        watcher.cache.register(&mut reg);
        let cache = watcher.cache.clone();
        wait_until("list", || cache.snapshot().len() == 3).await;
        w1.send(fixture_lines("watch-1.ndjson")[2].clone()).unwrap();
        wait_until("delete", || cache.snapshot().len() == 2).await;
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        for want in [
            "sloguard_k8s_pods 2",
            "sloguard_k8s_pod_lists_total 1",
            "sloguard_k8s_watch_events_total 1",
            "sloguard_k8s_api_errors_total 0",
            "sloguard_k8s_watch_expired_total 0",
        ] {
            assert!(om.contains(want), "{want} missing:\n{om}");
        }
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&om);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn disabled_outside_kubernetes_without_error() {
    let none = |_: &str| None;
    let off = start_with_env(&K8sConfig::default(), &none).await.unwrap();
    assert!(off.is_none());
    let node_only = |k: &str| (k == "NODE_NAME").then(|| "n".to_string());
    assert!(
        start_with_env(&K8sConfig::default(), &node_only)
            .await
            .unwrap()
            .is_none()
    );
    let on = K8sConfig {
        enabled: K8sEnabled::On,
        ..Default::default()
    };
    assert!(matches!(
        start_with_env(&on, &none).await,
        Err(K8sError::MissingNodeName)
    ));
    // auto with an unreadable kubeconfig: off, not an error; true: an error.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").display().to_string();
    let env = move |k: &str| match k {
        "KUBECONFIG" => Some(missing.clone()),
        "NODE_NAME" => Some(NODE.to_string()),
        _ => None,
    };
    assert!(
        start_with_env(&K8sConfig::default(), &env)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        start_with_env(&on, &env).await,
        Err(K8sError::Config(_))
    ));
}

#[tokio::test]
async fn kubeconfig_from_env_reaches_the_server() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let replay = Arc::new(Replay::default());
        replay.push_list(StatusCode::OK, fixture("podlist-initial.json"));
        let url = serve(replay.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("config");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
                 clusters:\n- name: local\n  cluster:\n    server: {url}\n\
                 contexts:\n- name: test\n  context:\n    cluster: local\n    user: agent\n\
                 users:\n- name: agent\n  user:\n    token: not-a-secret\n"
            ),
        )
        .unwrap();
        let kc = kc.display().to_string();
        let env = move |k: &str| match k {
            "KUBECONFIG" => Some(kc.clone()),
            "NODE_NAME" => Some(NODE.to_string()),
            _ => None,
        };
        let watcher = start_with_env(&K8sConfig::default(), &env)
            .await
            .unwrap()
            .expect("enabled by KUBECONFIG");
        assert_eq!(watcher.node, NODE);
        let cache = watcher.cache.clone();
        wait_until("list through kubeconfig", || cache.snapshot().len() == 3).await;
    })
    .await
    .expect("bounded");
}

/// rustls picks its crypto provider when the HTTPS client is built; with two
/// providers compiled in (feature unification) that would panic at start.
#[tokio::test]
async fn https_client_builds() {
    let cfg = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    kube::Client::try_from(cfg).expect("HTTPS client");
}

/// Pod labels through the pipeline, and the removal of deleted pods' series.
#[path = "pods_pipeline_tests.rs"]
mod pipeline_labels;

/// `scope` selectors on namespaces and pod labels.
#[path = "pods_scope_tests.rs"]
mod scope_selectors;
