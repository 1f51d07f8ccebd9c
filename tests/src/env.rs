//! What a kernel test needs from the machine, and what to do when it is missing:
//! in CI (`CI` set) a missing capability fails the test, elsewhere it skips
//! with the reason.
use std::process::{Command, Stdio};

/// True when running in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `Ok(())` when running as root and every tool answers; otherwise the reason.
pub fn check(tools: &[&str]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (eBPF, network namespaces, nftables)".into());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "`{tool}` is missing (apt-get install -y nftables iproute2, or cargo xtask setup)"
            ));
        }
    }
    Ok(())
}

/// Decide whether a test can run: true to go on, false to skip (after saying
/// why). Panics in CI.
pub fn ready(test: &str, tools: &[&str]) -> bool {
    match check(tools) {
        Ok(()) => true,
        Err(reason) => skip(test, &reason),
    }
}

/// Skip `test` for `reason`, or fail in CI. Returns false for `if !ready(..) { return }`.
pub fn skip(test: &str, reason: &str) -> bool {
    assert!(!in_ci(), "{test}: {reason} (CI must provide it)");
    eprintln!("skipped {test}: {reason}");
    false
}
