//! What the machine offers; a test that lacks something skips with the reason,
//! except in CI, where a missing capability is a failure.

/// True when running in CI (`CI` set): missing capabilities fail there.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `Some(reason)` when the test cannot run here: panics in CI instead.
pub fn require(checks: &[(&str, bool)]) -> Option<String> {
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    if missing.is_empty() {
        return None;
    }
    let reason = format!("missing: {}", missing.join(", "));
    assert!(!in_ci(), "CI must provide everything: {reason}");
    Some(reason)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An executable on PATH (or an absolute path) exists.
pub fn has_program(name: &str) -> bool {
    which(name).is_some()
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        let p = std::path::PathBuf::from(name);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.exists())
}
