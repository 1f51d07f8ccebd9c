//! The CLI contract: config errors name the key and exit 2; environment
//! problems give one clear line and exit 1; `--help` everywhere.
use tests::agent::{run_cli, sloguard_bin};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn check_config_accepts_a_valid_file() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        &d,
        "ok.yaml",
        "log:\n  level: debug\nmetrics:\n  listen: 127.0.0.1:9999\n",
    );
    let (code, err) = run_cli(&["check-config", &f]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn shipped_default_config_is_valid() {
    let f = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sloguard.yaml");
    let (code, err) = run_cli(&["check-config", f]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn bad_yaml_unknown_key_and_bad_value_exit_2_naming_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        ("bad.yaml", "metrics: [unclosed\n", "YAML"),
        (
            "unknown.yaml",
            "metrics:\n  listne: 127.0.0.1:1\n",
            "listne",
        ),
        (
            "value.yaml",
            "metrics:\n  listen: nowhere\n",
            "metrics.listen",
        ),
        (
            "range.yaml",
            "probes:\n  ring_buffer_bytes: 1000\n",
            "probes.ring_buffer_bytes",
        ),
        (
            "type.yaml",
            "tcp:\n  max_remote_endpoints: lots\n",
            "tcp.max_remote_endpoints",
        ),
    ];
    for (name, text, needle) in cases {
        let f = write(&d, name, text);
        for args in [
            vec!["check-config", f.as_str()],
            vec!["--config", f.as_str()],
        ] {
            let (code, err) = run_cli(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(
                err.contains(needle),
                "{args:?}: expected {needle:?} in {err:?}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        }
    }
}

#[test]
fn env_override_errors_name_the_variable() {
    let out = std::process::Command::new(sloguard_bin())
        .env("SLOGUARD_METRICS__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics.listen"), "{err}");
}

#[test]
fn help_on_everything() {
    for args in [
        vec!["--help"],
        vec!["check-config", "--help"],
        vec!["status", "--help"],
        vec!["top", "--help"],
        vec!["alerts", "--help"],
        vec!["fuse", "--help"],
        vec!["fuse", "list", "--help"],
        vec!["fuse", "open", "--help"],
        vec!["fuse", "close", "--help"],
        vec!["fuse", "release", "--help"],
    ] {
        let out = std::process::Command::new(sloguard_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

/// Without privileges the agent says what to do in one line and exits 1.
#[test]
fn missing_privileges_give_one_clear_line() {
    use std::os::unix::process::CommandExt;
    if !tests::env::require(
        tests::env::is_root(),
        "root, to drop to an unprivileged user",
    ) {
        return;
    }
    let port = tests::env::free_port();
    let (_dir, bin) = executable_by_anyone();
    let out = std::process::Command::new(&bin)
        .current_dir(bin.parent().unwrap())
        .env("SLOGUARD_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("CAP_BPF") && last.starts_with("sloguard: "),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// A copy of the agent binary that uid 65534 can reach: the clone (and so its target
/// directory) may sit under a home that other users cannot enter (mode 0700), where
/// exec as `nobody` fails with EACCES before the agent runs at all.
fn executable_by_anyone() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("sloguard-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("sloguard");
    std::fs::copy(sloguard_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// A short admin token, or a non-loopback admin address nobody approved,
/// stops the agent at start with one line naming the key (before any probe
/// is loaded), instead of running with a guessable or exposed admin API.
#[test]
fn short_admin_token_and_unapproved_admin_address_stop_the_agent() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state.json");
    let base = format!(
        "fuse:\n  state_file: {}\n  audit_file: null\n",
        state.display()
    );
    let token_file = write(&d, "token", "too-short\n");
    let cases = [
        (
            format!("{base}admin:\n  token_file: {token_file}\n"),
            None,
            "admin.token_file",
        ),
        (base.clone(), Some("0123456789"), "admin.token_env"),
        (
            format!("{base}admin:\n  listen: 0.0.0.0:0\n"),
            Some("0123456789abcdef0123456789abcdef"),
            "admin.allow_non_loopback",
        ),
    ];
    for (i, (yaml, env_token, needle)) in cases.into_iter().enumerate() {
        let cfg = write(&d, &format!("c{i}.yaml"), &yaml);
        let mut cmd = std::process::Command::new(sloguard_bin());
        cmd.args(["--config", &cfg])
            .env(
                "SLOGUARD_METRICS__LISTEN",
                format!("127.0.0.1:{}", tests::env::free_port()),
            )
            .env_remove("SLOGUARD_ADMIN_TOKEN");
        if let Some(t) = env_token {
            cmd.env("SLOGUARD_ADMIN_TOKEN", t);
        }
        let out = output_within(cmd, std::time::Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim().lines().last().unwrap_or_default();
        assert!(
            matches!(out.status.code(), Some(1 | 2)) && last.contains(needle),
            "{needle}: {:?}: {err}",
            out.status
        );
        assert!(!err.contains("probes attached"), "{needle}: {err}");
    }
}

/// Run to completion, or SIGKILL after `limit` (an agent that starts when it
/// should have refused would otherwise run forever).
fn output_within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Operator commands that cannot work say why in one line, before any
/// request: `top` without a terminal (exit 2), `fuse` without a token (3).
#[test]
fn operator_commands_without_terminal_or_token_say_so() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(sloguard_bin())
            .args(args)
            .env_remove("SLOGUARD_ADMIN_TOKEN")
            .env_remove("SLOGUARD_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["top"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs a terminal"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, err) = run(&["fuse", "list"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no admin token"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
