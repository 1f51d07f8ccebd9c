//! A dead hot-path thread must not go unnoticed: the real agent, with a test-
//! only fault armed (the `fault-injection` feature this crate enables), has its
//! pipeline thread panic; `/healthz` must stop answering 200 within a second
//! and the agent must exit non-zero so the kubelet restarts it.
use std::time::{Duration, Instant};

use tests::agent::{Agent, http_get};
use tests::env::require_kernel;

fn config(dir: &std::path::Path) -> String {
    format!(
        "probes:\n  capture_http: false\nfuse:\n  state_file: {}\n  audit_file: null\n",
        dir.join("fuse-state.json").display()
    )
}

#[test]
fn pipeline_panic_makes_the_agent_unhealthy_and_exit_non_zero() {
    if !require_kernel() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("panic-now");
    let mut agent = Agent::start_with_env(
        &config(dir.path()),
        &[(
            sloguard::fault::PIPELINE_PANIC_ENV,
            trigger.to_str().unwrap(),
        )],
    )
    .unwrap();
    assert_eq!(http_get(agent.metrics, "/healthz", None).unwrap().0, 200);

    std::fs::write(&trigger, "").unwrap();
    let t0 = Instant::now();
    // Unhealthy: /healthz answers something else than 200, or nothing
    // because the agent already exited.
    let mut seen = None;
    while t0.elapsed() < Duration::from_secs(10) {
        match http_get(agent.metrics, "/healthz", None) {
            Ok((200, _)) => std::thread::sleep(Duration::from_millis(10)),
            other => {
                seen = Some((t0.elapsed(), format!("{other:?}")));
                break;
            }
        }
    }
    let (after, what) = seen.unwrap_or_else(|| panic!("/healthz stayed 200: {}", agent.log()));
    assert!(
        after <= Duration::from_secs(1),
        "/healthz went non-200 ({what}) only after {after:?}"
    );

    let mut status = None;
    for _ in 0..300 {
        status = agent.try_wait();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.log();
    let status =
        status.unwrap_or_else(|| panic!("agent still running 30 s after the panic: {log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("fault injection") && log.contains("pipeline thread died"),
        "{log}"
    );
}

/// The fault can only be armed in the build the tests use: a release build
/// of the agent alone (`cargo xtask run`, the Dockerfile: `-p agent`) does
/// not turn the feature on.
#[test]
fn release_build_of_the_agent_has_no_fault_injection() {
    const { assert!(sloguard::fault::ENABLED, "this test build should have it") };
    let root = tests::tools::repo_root();
    let tree = |pkgs: &[&str]| {
        let out = tests::tools::run_ok(
            std::process::Command::new(env!("CARGO"))
                .current_dir(&root)
                .args(["tree", "--offline", "-e", "features", "-i", "agent"])
                .args(pkgs),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let feature = "agent feature \"fault-injection\"";
    assert!(!tree(&["-p", "agent"]).contains(feature));
    assert!(tree(&["-p", "agent", "-p", "tests"]).contains(feature));
    // And those builds select the agent alone, with no extra features.
    let selects_agent_alone = |line: &str| {
        !["tests", "features", "workspace", "--all"]
            .iter()
            .any(|w| line.contains(w))
    };
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build --release --locked -p agent"))
        .expect("the image's cargo build");
    assert!(selects_agent_alone(build), "{build}");
    let run = std::fs::read_to_string(root.join("xtask/src/run.rs")).unwrap();
    let build = run
        .lines()
        .find(|l| l.contains(r#"cmd.args(["build", "-p", "agent", "--bin", "sloguard"]);"#))
        .expect("xtask's cargo build of the agent");
    assert!(selects_agent_alone(build), "{build}");
}
