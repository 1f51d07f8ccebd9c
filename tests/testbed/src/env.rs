//! What a test needs from the machine. In CI (`CI` set) a missing capability
//! or tool is a failure; elsewhere the test is skipped with the reason.

/// True when running under CI.
pub fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Returns false (skip) or panics (CI) when `ok` is false.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if ci() {
        panic!("required in CI: {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Root plus kernel BTF: what loading the probes needs.
pub fn require_kernel() -> bool {
    require(
        is_root(),
        "root (CAP_BPF, CAP_PERFMON) to load eBPF programs",
    ) && require(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "kernel BTF at /sys/kernel/btf/vmlinux",
    )
}

/// Path of an executable program on PATH.
pub fn which(bin: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    // The sbin directories too: nginx lives there and a user's PATH may lack them.
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub fn require_tool(bin: &str) -> bool {
    require(
        which(bin).is_some(),
        &format!("`{bin}` on PATH (cargo xtask setup installs it)"),
    )
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workspace's target directory.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => d.into(),
        None => crate::repo_root().join("target"),
    }
}

/// `Ok(())` when running as root and every tool answers; otherwise the reason.
pub fn check(tools: &[&str]) -> Result<(), String> {
    if !is_root() {
        return Err("needs root (eBPF, network namespaces, nftables)".into());
    }
    for tool in tools {
        if which(tool).is_none() {
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
    assert!(!ci(), "{test}: {reason} (CI must provide it)");
    eprintln!("skipped {test}: {reason}");
    false
}

/// `Some(reason)` when any check fails (the test then skips); panics in CI.
pub fn missing(checks: &[(&str, bool)]) -> Option<String> {
    let absent: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    if absent.is_empty() {
        return None;
    }
    let reason = format!("missing: {}", absent.join(", "));
    assert!(!ci(), "CI must provide everything: {reason}");
    Some(reason)
}

/// An executable on PATH (or an absolute path) exists.
pub fn has_program(name: &str) -> bool {
    if name.contains('/') {
        return std::path::Path::new(name).exists();
    }
    which(name).is_some()
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(name).exists())
}
