//! sloguard: the userspace half of an eBPF host agent that turns kernel-observed
//! TCP and HTTP/1.x traffic into request-level SLO figures, alerts and route
//! fuses. The modules are the stages of the data flow, in order (see
//! docs/design.md for the map from each probe to its decoder, state, metric
//! and tests); every stage can be driven by synthetic events without a kernel.

// 1. Probes and ring-buffer decoding.
pub mod kernel;

// 2. The socket table and TCP signals.
pub mod conn;

// 3. Protocol trackers: bytes on a connection to completed requests.
pub mod protocol;

// 4. The request and its route, trace and service.
pub mod request;

// 5. RED metrics and the SLO engine with its detectors.
pub mod measure;

// 6. Alerts, fuses, request snapshots.
pub mod respond;

// 7. What leaves the agent: /metrics, OTLP, request logs, status, admin API.
pub mod export;

// Wiring (the pipeline thread, the runtime) and plumbing.
pub mod cli;
pub mod clock;
pub mod config;
pub mod fault;
pub mod fuzz;
pub mod log;
pub mod malloc;
pub mod pipeline;
pub mod runtime;

#[cfg(test)]
mod module_map_tests {
    use std::path::Path;

    /// docs/design.md's module map is how a newcomer goes from a probe to its
    /// decoder, state, metric and tests: every kernel program file must have
    /// a row, and every path it names must exist.
    #[test]
    fn module_map_names_every_probe_and_real_paths() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/design.md")).unwrap();
        let start = doc.find("## Module map").expect("module map section");
        let end = doc[start..].find("\n## ").map_or(doc.len(), |i| start + i);
        let map = &doc[start..end];
        let paths: Vec<&str> = map
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| {
                ["agent/", "agent-ebpf/", "agent-common/", "tests/"]
                    .iter()
                    .any(|p| t.starts_with(p))
            })
            .collect();
        assert!(paths.len() > 20, "too few paths found: {paths:?}");
        for p in &paths {
            assert!(
                root.join(p).exists(),
                "docs/design.md names `{p}`, which does not exist"
            );
        }
        let mut programs = Vec::new();
        let mut dirs = vec![root.join("agent-ebpf/src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if !matches!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some("main.rs" | "mod.rs")
                ) {
                    programs.push(path);
                }
            }
        }
        for prog in programs {
            let rel = prog
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                paths.contains(&rel.as_str()),
                "{rel} has no row in docs/design.md's module map"
            );
        }
    }
}
