//! External tools the deploy tests drive (kubectl, promtool, amtool, yamllint,
//! hadolint, kubernetes-validate, prometheus): find them on `PATH`, and when
//! one is missing skip with the reason, or fail in CI (`CI` set).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when running in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent")
        .to_path_buf()
}

/// An executable named `name` on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The tool, or `None` after saying why the test is skipped. Panics in CI,
/// where `cargo xtask setup` must have installed it (`install` says how).
pub fn require(test: &str, name: &str, install: &str) -> Option<PathBuf> {
    match find(name) {
        Some(p) => Some(p),
        None => {
            skip(test, &format!("`{name}` is not installed ({install})"));
            None
        }
    }
}

/// Skip `test` for `reason`, or fail in CI.
pub fn skip(test: &str, reason: &str) {
    assert!(!in_ci(), "{test}: {reason}; CI must provide it");
    eprintln!("skipped {test}: {reason}");
}

/// Run to completion; panics with the command's output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The agent binary built by cargo (`target/{debug,release}/sloguard`, the
/// newer of the two), honouring `CARGO_TARGET_DIR`.
pub fn sloguard_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("sloguard"))
        .filter(|p| is_executable(p))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}
