//! External tools the deploy tests drive (kubectl, promtool, amtool, yamllint,
//! hadolint, kubernetes-validate, prometheus): find them on `PATH`, and when
//! one is missing skip with the reason, or fail in CI (`CI` set).
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    crate::repo_root()
}

/// An executable named `name` on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    crate::env::which(name)
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
    crate::env::skip(test, reason);
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

/// The agent binary the other integration tests run (see `agent::sloguard_bin`).
pub fn sloguard_binary() -> Option<PathBuf> {
    Some(crate::agent::sloguard_bin())
}
