//! `scope` selectors on Kubernetes namespace and pod labels, through the same
//! path as service names: pods from the replayed watch, each process's
//! cgroup file under a test `/proc` root, the pod cache. A process outside
//! pods never matches a pod selector.
use super::*;
use crate::kernel::scope::config::ScopeConfig;
use crate::kernel::scope::procfs::scan;
use crate::kernel::scope::select::Matcher;

fn process(root: &std::path::Path, pid: u32, comm: &str, pod_uid: Option<&str>) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    let cgroup = match pod_uid {
        Some(uid) => format!("0::/kubepods/burstable/pod{uid}/{}\n", id('c')),
        None => "0::/system.slice/nginx.service\n".into(),
    };
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
}

#[tokio::test]
async fn pod_selectors_pick_processes_by_namespace_and_labels() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (_replay, _w1, watcher) = synced_watcher().await;
        let cache = watcher.cache.clone();
        let root = tempfile::tempdir().unwrap();
        process(root.path(), 100, "checkout", Some(WEB));
        process(root.path(), 200, "postgres", Some(PG));
        process(root.path(), 300, "nginx", None);

        let in_scope = |yaml: &str| {
            let cfg: ScopeConfig = serde_yaml_ng::from_str(yaml).unwrap();
            cfg.validate().unwrap();
            let mut v: Vec<u32> = scan(root.path(), &Matcher::new(&cfg), Some(&cache), 0)
                .unwrap()
                .tgids
                .into_iter()
                .collect();
            v.sort();
            v
        };
        assert_eq!(in_scope("include:\n  - k8s_namespace: shop\n"), vec![100]);
        assert_eq!(
            in_scope("include:\n  - k8s_pod_labels:\n      app: \"post*\"\n"),
            vec![200]
        );
        assert_eq!(
            in_scope(
                "include:\n  - k8s_namespace: \"*\"\n    k8s_pod_labels:\n      app.kubernetes.io/part-of: shop\n"
            ),
            vec![100]
        );
        // Exclude a namespace: the rest of the node, pods or not, stays.
        assert_eq!(
            in_scope("exclude:\n  - k8s_namespace: data\n"),
            vec![100, 300]
        );
        // Without the pod cache (Kubernetes off) no pod selector matches.
        let cfg: ScopeConfig = serde_yaml_ng::from_str("include:\n  - k8s_namespace: shop\n").unwrap();
        assert!(scan(root.path(), &Matcher::new(&cfg), None, 0).unwrap().tgids.is_empty());
    })
    .await
    .unwrap();
}
