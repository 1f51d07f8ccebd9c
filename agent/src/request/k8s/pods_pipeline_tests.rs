//! The whole identity path: pods from the replayed watch, a process's cgroup
//! file (written under a test `/proc` root: a real process here is in no
//! pod), the resolver, then the labels on RED and TCP metrics and the span
//! resource. A process outside pods, and one whose pod reaches the cache
//! only later, fall back to its process name without error. Series of a
//! pod go when the pod is deleted.
use super::*;
use crate::config::Config;
use crate::export::metrics::SelfMetrics;
use crate::export::otlp::{SpanCounters, SpanRecord, SpanSink};
use crate::kernel::events::encode::{bytes_of, data, header, tuple_v4};
use crate::pipeline::{Outputs, Pipeline};
use agent_common::{
    Direction, EventKind, SockOwnerEvent, TcpRetransmitEvent, TcpStateEvent, tcp_state,
};
use prometheus_client::registry::Registry;

const ENVOY: u32 = 4242;
const SCRIPT: u32 = 4343;
const BACKUP: u32 = 4444;

/// A synced pod watcher and its cache, which every test reads.
async fn synced_watcher_and_cache() -> (
    Arc<Replay>,
    tokio::sync::mpsc::UnboundedSender<String>,
    PodWatcher,
    PodCache,
    tempfile::TempDir,
) {
    let (replay, w1, watcher) = synced_watcher().await;
    let cache = watcher.cache.clone();
    // Where the tests write the processes' `/proc/<pid>/cgroup`.
    let proc_root = tempfile::tempdir().unwrap();
    (replay, w1, watcher, cache, proc_root)
}

fn write_cgroup(root: &std::path::Path, pid: u32, path: &str) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cgroup"), format!("0::{path}\n")).unwrap();
}

/// A served keep-alive connection: established, owned by `tgid`, one
/// request and its response.
fn serve_one(p: &mut Pipeline, sk: u64, tgid: u32, comm: &str, path: &str) {
    let peer_port = 40_000 + sk as u16;
    p.handle_record(&bytes_of(&TcpStateEvent {
        header: header(EventKind::TcpState, 0, 1, ""),
        sk,
        tuple: tuple_v4([127, 0, 0, 1], 8080, [127, 0, 0, 2], peer_port),
        oldstate: tcp_state::SYN_RECV,
        newstate: tcp_state::ESTABLISHED,
    }));
    p.handle_record(&bytes_of(&SockOwnerEvent {
        header: header(EventKind::SockOwner, tgid, 2, comm),
        sk,
    }));
    let req = format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n");
    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (ts, dir, bytes) in [
        (10, Direction::Ingress, req.as_bytes()),
        (2_000_000, Direction::Egress, resp.as_bytes()),
    ] {
        let h = header(EventKind::Data, tgid, ts, comm);
        p.handle_record(&data(h, sk, dir as u32, bytes.len() as u32, bytes));
    }
}

fn retransmit(p: &mut Pipeline, sk: u64) {
    let mut h = header(EventKind::TcpRetransmit, 0, 5, "swapper/0");
    h.tgid = 0;
    p.handle_record(&bytes_of(&TcpRetransmitEvent {
        header: h,
        sk,
        tuple: tuple_v4([127, 0, 0, 1], 8080, [127, 0, 0, 2], 40_000 + sk as u16),
        segs: 1,
        state: tcp_state::ESTABLISHED,
        synack: 0,
        err: 0,
    }));
}

fn scrape(reg: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s
}

fn spans(rx: &mut tokio::sync::mpsc::Receiver<SpanRecord>) -> Vec<SpanRecord> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

const ROUTE: &str = "http_request_method=\"GET\",http_route=\"/items/{id}\",http_response_status_code=\"200\",gray_tag=\"\"";

#[tokio::test]
async fn metrics_and_spans_carry_the_pod_of_the_process() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (_replay, w1, _watcher, cache, proc_root) = synced_watcher_and_cache().await;

        // systemd driver, containerd: the checkout pod's envoy container.
        write_cgroup(
            proc_root.path(),
            ENVOY,
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
                WEB.replace('-', "_"),
                id('b')
            ),
        );
        write_cgroup(proc_root.path(), SCRIPT, "/user.slice/user-0.slice/session-3.scope");
        // cgroupfs driver: the CronJob pod the watch has not sent yet.
        write_cgroup(
            proc_root.path(),
            BACKUP,
            &format!("/kubepods/besteffort/pod{JOB}/{}", id('f')),
        );

        let mut cfg = Config::default();
        cfg.otlp.root_sampling_ratio = 1.0;
        // One request per route: admit at first sight.
        cfg.routes.admit_after = 1;
        let mut reg = Registry::default();
        let sm = SelfMetrics::default();
        sm.register(&mut reg);
        let counters = SpanCounters::default();
        let (sink, mut rx) = SpanSink::channel(64, &counters);
        let out = Outputs {
            spans: Some(sink),
            k8s: Some(cache.clone()),
            ..Default::default()
        };
        let mut p = Pipeline::with_outputs(&cfg, &mut reg, sm, out);
        p.set_proc_root(proc_root.path());

        serve_one(&mut p, 1, ENVOY, "envoy", "/items/17");
        retransmit(&mut p, 1);
        serve_one(&mut p, 2, SCRIPT, "python3", "/items/18");
        serve_one(&mut p, 3, BACKUP, "pg_dump", "/items/19");

        let text = scrape(&reg);
        let pod = "k8s_namespace=\"shop\",k8s_pod=\"checkout-7d4b9c8f6d-x2x9q\",k8s_workload=\"checkout\",k8s_container=\"envoy\"";
        let want = format!(
            "http_server_request_duration_seconds_count{{service_name=\"checkout\",{ROUTE},{pod}}} 1"
        );
        assert!(text.contains(&want), "{want}\n{text}");
        let want = format!(
            "sloguard_tcp_retransmits_total{{service_name=\"checkout\",remote_endpoint=\"127.0.0.2\",{pod}}} 1"
        );
        assert!(text.contains(&want), "{want}\n{text}");
        // Outside a pod, and in a pod the cache does not know yet: the
        // process name, and no k8s label at all.
        for comm in ["python3", "pg_dump"] {
            let want = format!(
                "http_server_request_duration_seconds_count{{service_name=\"{comm}\",{ROUTE}}} 1"
            );
            assert!(text.contains(&want), "{want}\n{text}");
        }
        assert_eq!(
            text.lines().filter(|l| l.contains("k8s_")).count(),
            text.lines().filter(|l| l.contains("k8s_pod=\"checkout-")).count(),
            "only the pod's own series carry k8s labels\n{text}"
        );
        // The SLO engine stays per route.
        assert!(
            !text
                .lines()
                .any(|l| (l.starts_with("sloguard_route") || l.starts_with("sloguard_slo"))
                    && l.contains("k8s_")),
            "{text}"
        );
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&text);

        let got = spans(&mut rx);
        assert_eq!(got.len(), 3, "{got:?}");
        let by = |svc: &str| got.iter().find(|s| &*s.service == svc).unwrap();
        let envoy = by("checkout").k8s.clone().expect("pod on the span");
        assert_eq!(
            envoy.resource_attributes(),
            vec![
                ("k8s.namespace.name", "shop"),
                ("k8s.pod.name", "checkout-7d4b9c8f6d-x2x9q"),
                ("k8s.deployment.name", "checkout"),
                ("k8s.container.name", "envoy"),
            ]
        );
        assert!(by("python3").k8s.is_none());
        assert!(by("pg_dump").k8s.is_none());

        // The CronJob's pod arrives: the same process, on its next
        // connection, is named and labelled by it.
        w1.send(fixture_lines("watch-1.ndjson")[0].clone()).unwrap();
        wait_until("ADDED", || cache.by_pod_uid(JOB).is_some()).await;
        serve_one(&mut p, 4, BACKUP, "pg_dump", "/items/20");
        let text = scrape(&reg);
        let want = format!(
            "http_server_request_duration_seconds_count{{service_name=\"backup\",{ROUTE},k8s_namespace=\"data\",k8s_pod=\"backup-29410560-q7w8e\",k8s_workload=\"backup\",k8s_container=\"backup\"}} 1"
        );
        assert!(text.contains(&want), "{want}\n{text}");
        let late = spans(&mut rx);
        assert_eq!(late.len(), 1);
        assert!(
            late[0]
                .k8s
                .as_ref()
                .unwrap()
                .resource_attributes()
                .contains(&("k8s.cronjob.name", "backup"))
        );
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&text);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_rule_names_the_service_and_the_pod_still_labels_it() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (_replay, w1, _watcher, cache, proc_root) = synced_watcher_and_cache().await;
        write_cgroup(
            proc_root.path(),
            ENVOY,
            &format!("/kubepods/burstable/pod{WEB}/{}", id('b')),
        );
        let cfg = crate::request::service::ServicesConfig {
            rules: vec![crate::request::service::ServiceRule {
                name: "edge".into(),
                process: Some("envoy".into()),
                ..Default::default()
            }],
        };
        let mut r = crate::request::service::ServiceResolver::new(&cfg)
            .with_k8s(Some(cache.clone()))
            .with_proc_root(proc_root.path());
        let first = r.resolve(ENVOY, "envoy", Some(8080));
        assert_eq!(&*first.name, "edge");
        let labels = first.k8s.clone().expect("pod labels");
        assert_eq!(&*labels.k8s_pod, "checkout-7d4b9c8f6d-x2x9q");
        assert_eq!(&*labels.k8s_container, "envoy");
        // Another pod changes: the same shared labels, not a copy.
        let before = cache.generation();
        w1.send(fixture_lines("watch-1.ndjson")[2].clone()).unwrap();
        wait_until("DELETED", || cache.generation() > before).await;
        let again = r.resolve(ENVOY, "envoy", Some(8080));
        assert!(Arc::ptr_eq(&labels, again.k8s.as_ref().unwrap()));
    })
    .await
    .expect("bounded");
}

/// A watch line for a pod of a churning workload (no container statuses:
/// its process is found by pod UID alone).
fn churn_event(kind: &str, i: u32) -> String {
    let pod = serde_json::json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": format!("churn-{i}"), "namespace": "churn",
            "uid": churn_uid(i), "resourceVersion": (5000 + i).to_string(),
            "labels": {"app": "churn"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app"}]}});
    format!("{}\n", serde_json::json!({"type": kind, "object": pod}))
}

fn churn_uid(i: u32) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// A second request on an open connection (its owner already known).
fn request_again(p: &mut Pipeline, sk: u64, tgid: u32, comm: &str) {
    let req = b"GET /items/21 HTTP/1.1\r\nHost: shop\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (ts, dir, bytes) in [
        (3_000_000, Direction::Ingress, &req[..]),
        (4_000_000, Direction::Egress, &resp[..]),
    ] {
        let h = header(EventKind::Data, tgid, ts, comm);
        p.handle_record(&data(h, sk, dir as u32, bytes.len() as u32, bytes));
    }
}

/// Samples in the exposition (every line that is not a comment).
fn series(reg: &Registry) -> usize {
    scrape(reg).lines().filter(|l| !l.starts_with('#')).count()
}

#[tokio::test]
async fn series_of_a_thousand_deleted_pods_go_back_to_the_baseline() {
    const PODS: u32 = 1000;
    tokio::time::timeout(Duration::from_secs(60), async {
        let (_replay, w1, _watcher, cache, proc_root) = synced_watcher_and_cache().await;
        let pid = |i: u32| 10_000 + i;
        for i in 0..PODS {
            write_cgroup(
                proc_root.path(),
                pid(i),
                &format!("/kubepods/besteffort/pod{}/{:064}", churn_uid(i), i),
            );
        }
        write_cgroup(
            proc_root.path(),
            SCRIPT,
            "/user.slice/user-0.slice/session-3.scope",
        );
        let mut cfg = Config::default();
        // No SLO period closes during the test: its gauges stay out.
        cfg.slo.period = Duration::from_secs(3600);
        // One request per route: admit at first sight.
        cfg.routes.admit_after = 1;
        let mut reg = Registry::default();
        let sm = SelfMetrics::default();
        sm.register(&mut reg);
        let out = Outputs {
            k8s: Some(cache.clone()),
            ..Default::default()
        };
        let mut p = Pipeline::with_outputs(&cfg, &mut reg, sm, out);
        p.set_proc_root(proc_root.path());
        // The same service and route outside a pod, with a retransmit:
        // every family and route the pods use exists at the baseline.
        serve_one(&mut p, 1, SCRIPT, "churn", "/items/1");
        retransmit(&mut p, 1);
        p.tick();
        let baseline = series(&reg);

        for i in 0..PODS {
            w1.send(churn_event("ADDED", i)).unwrap();
        }
        wait_until("1000 pods added", || {
            cache.snapshot().len() == 3 + PODS as usize
        })
        .await;
        for i in 0..PODS {
            let sk = 100 + u64::from(i);
            serve_one(&mut p, sk, pid(i), "app", "/items/17");
            retransmit(&mut p, sk);
        }
        p.tick();
        let text = scrape(&reg);
        let with_pods = series(&reg);
        assert!(
            text.contains("k8s_namespace=\"churn\",k8s_pod=\"churn-999\""),
            "{text}"
        );
        // One RED histogram (19 samples) and one retransmit counter per pod.
        assert_eq!(with_pods, baseline + PODS as usize * 20, "{text}");
        assert_eq!(p.pod_index_entries(), 2 * PODS as usize, "RED and TCP");

        for i in 0..PODS {
            w1.send(churn_event("DELETED", i)).unwrap();
        }
        wait_until("1000 pods deleted", || cache.snapshot().len() == 3).await;
        p.tick();
        assert_eq!(series(&reg), baseline, "{}", scrape(&reg));
        assert_eq!(p.pod_index_entries(), 0);

        // A late request on a deleted pod's open connection brings a series
        // back for a moment; the next housekeeping tick removes it again.
        request_again(&mut p, 100, pid(0), "app");
        assert!(series(&reg) > baseline);
        p.tick();
        assert_eq!(series(&reg), baseline, "{}", scrape(&reg));
        crate::export::metrics::lint::assert_promtool_accepts_openmetrics(&scrape(&reg));
    })
    .await
    .expect("bounded");
}
