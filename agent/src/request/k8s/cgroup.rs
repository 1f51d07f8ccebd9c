//! Pod UID and container id from a process's cgroup path, for every layout the
//! kubelet produces: the `systemd` and `cgroupfs` cgroup drivers, with
//! containerd, CRI-O or Docker (cri-dockerd) as runtime, on cgroup v2 and v1.
//!
//! ```text
//! systemd : /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//!           /kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope[/container]
//! cgroupfs: /kubepods/burstable/pod<uid>/<id>
//!           /kubepods/pod<uid>/<id>
//! ```
//! Paths read from inside a pod's cgroup namespace are relative to the reader
//! (`/../../kubepods-besteffort.slice/...`) and parse the same way.
//! A path outside `kubepods` is not an error: it is simply not a pod (`None`),
//! and the caller falls back to process rules.
use std::fmt;
use std::path::Path;

/// The pod's quality-of-service class, read from the cgroup parent the
/// kubelet put the pod under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kubelet cgroup driver laid the path out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// The container runtime, when the path names it (systemd scopes do;
/// cgroupfs paths carry a bare id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerRuntime {
    Containerd,
    CriO,
    Docker,
}

/// What a cgroup path says about the pod a process belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodCgroup {
    /// The pod's `metadata.uid`, dashed (`1b2c3d4e-...`); a static pod's
    /// config hash (32 hex digits) as the kubelet uses it.
    pub pod_uid: String,
    /// 64 lowercase hex digits; `None` for a process in the pod's own cgroup
    /// or in a runtime helper's (CRI-O's `conmon`).
    pub container_id: Option<String>,
    pub qos: QosClass,
    pub driver: CgroupDriver,
    pub runtime: Option<ContainerRuntime>,
}

/// Parse one cgroup path (the part after the second `:` of a
/// `/proc/PID/cgroup` line). `None` when it is not a Kubernetes pod's cgroup.
pub fn parse_cgroup_path(path: &str) -> Option<PodCgroup> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Where the kubelet's tree starts. Read from inside a pod's cgroup
    // namespace (the DaemonSet's case), another pod's path is relative to the
    // reader's own cgroup (`/../../kubepods-besteffort.slice/...`) and the
    // kubepods root itself is cut off: then the tree starts after the `..`s.
    let root = match segments.iter().position(|s| is_kubepods_root(s)) {
        Some(at) => at + 1,
        None if segments.first() == Some(&"..") => {
            segments.iter().take_while(|s| **s == "..").count()
        }
        None => return None,
    };
    for (i, seg) in segments.iter().enumerate().skip(root) {
        let Some((driver, uid, qos)) = pod_segment(seg, &segments[root..i]) else {
            continue;
        };
        let (container_id, runtime) = match segments.get(i + 1) {
            Some(next) => container_segment(next, driver)?,
            None => (None, None),
        };
        return Some(PodCgroup {
            pod_uid: uid,
            container_id,
            qos,
            driver,
            runtime,
        });
    }
    None
}

/// Parse the whole text of `/proc/PID/cgroup`. The unified (v2) line wins; on
/// a v1 or hybrid host the first controller line that names a pod is used.
pub fn parse_proc_cgroup(content: &str) -> Option<PodCgroup> {
    let mut v1 = None;
    for line in content.lines() {
        // hierarchy-ID:controller-list:path; the path may itself hold ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            if let Some(found) = parse_cgroup_path(path) {
                return Some(found);
            }
        } else if v1.is_none() {
            v1 = parse_cgroup_path(path);
        }
    }
    v1
}

/// Read and parse `/proc/<pid>/cgroup` under `proc_root` (normally `/proc`).
/// `Ok(None)` for a process outside Kubernetes; `Err` only when the file
/// cannot be read (the process has gone, or no permission).
pub fn read_pod_cgroup(proc_root: &Path, pid: u32) -> std::io::Result<Option<PodCgroup>> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    Ok(parse_proc_cgroup(&text))
}

fn is_kubepods_root(seg: &str) -> bool {
    // `kubepods` (cgroupfs), `kubepods.slice` (systemd),
    // `kubelet-kubepods.slice` (kind / kubelet.slice nesting).
    seg == "kubepods" || seg == "kubepods.slice" || seg == "kubelet-kubepods.slice"
}

/// `pod<uid>` (cgroupfs) or `<prefix>-pod<uid_with_underscores>.slice`
/// (systemd). `parents` are the segments between the kubepods root and this
/// one; they give the QoS class.
fn pod_segment(seg: &str, parents: &[&str]) -> Option<(CgroupDriver, String, QosClass)> {
    if let Some(uid) = seg.strip_prefix("pod") {
        let uid = normalise_uid(uid, '-')?;
        return Some((CgroupDriver::Cgroupfs, uid, qos_from_parents(parents)?));
    }
    let stem = seg.strip_suffix(".slice")?;
    let at = stem.rfind("-pod")?;
    let raw = &stem[at + 4..];
    // In a slice name `-` separates parents, so the UID's dashes became `_`.
    if raw.contains('-') {
        return None;
    }
    let uid = normalise_uid(raw, '_')?;
    // The slice's own name says its QoS: kubepods-burstable-pod…, kubepods-pod….
    let qos = match &stem[..at] {
        p if p.ends_with("kubepods-burstable") => QosClass::Burstable,
        p if p.ends_with("kubepods-besteffort") => QosClass::BestEffort,
        p if p.ends_with("kubepods") => QosClass::Guaranteed,
        _ => return None,
    };
    Some((CgroupDriver::Systemd, uid, qos))
}

fn qos_from_parents(parents: &[&str]) -> Option<QosClass> {
    match parents {
        [] => Some(QosClass::Guaranteed),
        [p] if *p == "burstable" => Some(QosClass::Burstable),
        [p] if *p == "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// A pod UID as the API shows it: a dashed UUID, or a static pod's 32-hex
/// hash. systemd slice names carry `_` where the UID has `-`.
fn normalise_uid(raw: &str, dash: char) -> Option<String> {
    let uid: String = raw
        .chars()
        .map(|c| if c == dash { '-' } else { c })
        .collect();
    let hex_only = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match uid.len() {
        32 => hex_only(&uid),
        36 => {
            let groups: Vec<&str> = uid.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && groups.iter().all(|g| hex_only(g))
        }
        _ => false,
    };
    ok.then(|| uid.to_ascii_lowercase())
}

type ContainerPart = (Option<String>, Option<ContainerRuntime>);

/// The segment below the pod: the container's cgroup. `None` (not a pod path
/// at all) when it is neither a container nor a known runtime helper.
fn container_segment(seg: &str, driver: CgroupDriver) -> Option<ContainerPart> {
    match driver {
        CgroupDriver::Cgroupfs => {
            // Bare id; CRI-O on cgroupfs prefixes it like its systemd scopes.
            if let Some(rest) = seg.strip_prefix("crio-conmon-") {
                return container_id(rest).map(|_| (None, Some(ContainerRuntime::CriO)));
            }
            if let Some(rest) = seg.strip_prefix("crio-") {
                return container_id(rest).map(|id| (Some(id), Some(ContainerRuntime::CriO)));
            }
            container_id(seg).map(|id| (Some(id), None))
        }
        CgroupDriver::Systemd => {
            let stem = seg.strip_suffix(".scope")?;
            if let Some(rest) = stem.strip_prefix("crio-conmon-") {
                return container_id(rest).map(|_| (None, Some(ContainerRuntime::CriO)));
            }
            let (runtime, rest) = [
                ("cri-containerd-", ContainerRuntime::Containerd),
                ("crio-", ContainerRuntime::CriO),
                ("docker-", ContainerRuntime::Docker),
            ]
            .into_iter()
            .find_map(|(prefix, rt)| stem.strip_prefix(prefix).map(|r| (rt, r)))?;
            container_id(rest).map(|id| (Some(id), Some(runtime)))
        }
    }
}

fn container_id(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e";
    const UID_US: &str = "1b2c3d4e_5f6a_4b7c_8d9e_0f1a2b3c4d5e";
    const CID: &str = "4f2d1b8a9c3e7f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

    fn pod(
        qos: QosClass,
        driver: CgroupDriver,
        runtime: Option<ContainerRuntime>,
        cid: Option<&str>,
    ) -> Option<PodCgroup> {
        Some(PodCgroup {
            pod_uid: UID.into(),
            container_id: cid.map(String::from),
            qos,
            driver,
            runtime,
        })
    }

    #[test]
    fn systemd_containerd_burstable() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse_cgroup_path(&p),
            pod(
                QosClass::Burstable,
                CgroupDriver::Systemd,
                Some(ContainerRuntime::Containerd),
                Some(CID)
            )
        );
    }

    #[test]
    fn systemd_guaranteed_and_besteffort() {
        let g = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope");
        assert_eq!(parse_cgroup_path(&g).unwrap().qos, QosClass::Guaranteed);
        let b = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parse_cgroup_path(&b).unwrap().qos, QosClass::BestEffort);
    }

    #[test]
    fn systemd_crio_with_crun_subcgroup_and_conmon() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{CID}.scope/container"
        );
        assert_eq!(
            parse_cgroup_path(&p),
            pod(
                QosClass::Burstable,
                CgroupDriver::Systemd,
                Some(ContainerRuntime::CriO),
                Some(CID)
            )
        );
        let conmon = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-conmon-{CID}.scope"
        );
        assert_eq!(
            parse_cgroup_path(&conmon),
            pod(
                QosClass::Burstable,
                CgroupDriver::Systemd,
                Some(ContainerRuntime::CriO),
                None
            )
        );
    }

    #[test]
    fn systemd_docker_cri_dockerd() {
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/docker-{CID}.scope"
        );
        assert_eq!(
            parse_cgroup_path(&p),
            pod(
                QosClass::BestEffort,
                CgroupDriver::Systemd,
                Some(ContainerRuntime::Docker),
                Some(CID)
            )
        );
    }

    #[test]
    fn cgroupfs_layouts() {
        let b = format!("/kubepods/burstable/pod{UID}/{CID}");
        assert_eq!(
            parse_cgroup_path(&b),
            pod(QosClass::Burstable, CgroupDriver::Cgroupfs, None, Some(CID))
        );
        let g = format!("/kubepods/pod{UID}/{CID}");
        assert_eq!(parse_cgroup_path(&g).unwrap().qos, QosClass::Guaranteed);
        let e = format!("/kubepods/besteffort/pod{UID}/crio-{CID}");
        assert_eq!(
            parse_cgroup_path(&e),
            pod(
                QosClass::BestEffort,
                CgroupDriver::Cgroupfs,
                Some(ContainerRuntime::CriO),
                Some(CID)
            )
        );
    }

    #[test]
    fn pod_level_cgroup_has_no_container() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"
        );
        assert_eq!(
            parse_cgroup_path(&p),
            pod(QosClass::Burstable, CgroupDriver::Systemd, None, None)
        );
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/"))
                .unwrap()
                .container_id,
            None
        );
    }

    #[test]
    fn kind_node_nesting_and_static_pod_hash() {
        // kind runs the kubelet under kubelet.slice inside the node container.
        let p = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        let got = parse_cgroup_path(&p).unwrap();
        assert_eq!((got.pod_uid.as_str(), got.qos), (UID, QosClass::Burstable));
        // Static (mirror) pods: the UID is the manifest hash, 32 hex digits.
        let hash = "3d3b3c6e3f9c5b2a1e0d4c8b7a6f5e4d";
        let s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parse_cgroup_path(&s).unwrap().pod_uid, hash);
    }

    #[test]
    fn paths_relative_to_the_readers_cgroup_namespace() {
        // What the DaemonSet pod reads for another pod on the node.
        let sd = format!(
            "/../../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse_cgroup_path(&sd),
            pod(
                QosClass::BestEffort,
                CgroupDriver::Systemd,
                Some(ContainerRuntime::Containerd),
                Some(CID)
            )
        );
        let sd_same_qos = format!("/../../kubepods-burstable-pod{UID_US}.slice/crio-{CID}.scope");
        assert_eq!(
            parse_cgroup_path(&sd_same_qos).unwrap().qos,
            QosClass::Burstable
        );
        let fs = format!("/../../../burstable/pod{UID}/{CID}");
        assert_eq!(
            parse_cgroup_path(&fs),
            pod(QosClass::Burstable, CgroupDriver::Cgroupfs, None, Some(CID))
        );
        let fs_guaranteed = format!("/../../pod{UID}/{CID}");
        assert_eq!(
            parse_cgroup_path(&fs_guaranteed).unwrap().qos,
            QosClass::Guaranteed
        );
        // A host service seen from inside a pod: not a pod.
        assert_eq!(
            parse_cgroup_path("/../../../../system.slice/nginx.service"),
            None
        );
        assert_eq!(
            parse_cgroup_path(&format!("/../../../system.slice/x/pod{UID}/{CID}")),
            None
        );
    }

    #[test]
    fn non_kubernetes_paths_are_none() {
        for p in [
            "/",
            "",
            "/system.slice/nginx.service",
            "/user.slice/user-0.slice/session-3.scope",
            &format!("/system.slice/docker-{CID}.scope"),
            &format!("/docker/{CID}"),
            "/process_api/79837c143101ca9847f0c231d86f3e4f",
            // Look-alikes: a pod segment outside kubepods, a bad UID, a bad id,
            // an unknown QoS parent, a non-container child.
            &format!("/system.slice/pod{UID}/{CID}"),
            "/kubepods/burstable/podnot-a-uid/abc",
            &format!("/kubepods/burstable/pod{UID}/{}", &CID[..63]),
            &format!("/kubepods/weird/pod{UID}/{CID}"),
            &format!("/kubepods.slice/kubepods-pod{UID_US}.slice/init.scope"),
            &format!("/kubepods.slice/kubepods-pod{UID}.slice/cri-containerd-{CID}.scope"),
        ] {
            assert_eq!(parse_cgroup_path(p), None, "{p}");
        }
    }

    #[test]
    fn proc_cgroup_v2_v1_and_hybrid() {
        let v2 = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope\n"
        );
        assert_eq!(
            parse_proc_cgroup(&v2).unwrap().container_id.as_deref(),
            Some(CID)
        );
        let v1 = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{CID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
        );
        assert_eq!(
            parse_proc_cgroup(&v1),
            pod(QosClass::Burstable, CgroupDriver::Cgroupfs, None, Some(CID))
        );
        // Hybrid host whose unified line is the root: the v1 lines decide.
        let hybrid = format!("1:name=systemd:/kubepods/pod{UID}/{CID}\n0::/\n");
        assert_eq!(
            parse_proc_cgroup(&hybrid).unwrap().qos,
            QosClass::Guaranteed
        );
        // Garbage lines never panic.
        assert_eq!(parse_proc_cgroup("no colons\n::\n\u{0}:x\n"), None);
    }

    #[test]
    fn this_host_process_is_not_a_pod() {
        let me = std::process::id();
        assert_eq!(read_pod_cgroup(Path::new("/proc"), me).unwrap(), None);
        assert!(read_pod_cgroup(Path::new("/proc"), u32::MAX).is_err());
    }

    #[test]
    fn arbitrary_input_never_panics() {
        use proptest::prelude::*;
        proptest!(|(s in "[/a-z0-9_.:-]{0,120}")| {
            let _ = parse_cgroup_path(&s);
            let _ = parse_proc_cgroup(&s);
        });
    }
}
