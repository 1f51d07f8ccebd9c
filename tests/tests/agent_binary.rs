//! `cargo xtask test` hands the integration tests the agent binary in `SG_AGENT_BIN`;
//! this checks that hand-over: the binary is there and starts.
use std::path::PathBuf;
use std::process::Command;

/// `SG_AGENT_BIN`, else the debug build next to this workspace (plain `cargo test -p tests`).
fn agent_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SG_AGENT_BIN") {
        return Some(PathBuf::from(bin));
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sloguard");
    fallback.is_file().then_some(fallback)
}

#[test]
fn agent_binary_starts_and_names_itself() {
    let Some(bin) = agent_bin() else {
        let why = "no sloguard binary: run `cargo xtask test` or set SG_AGENT_BIN";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} --version: {}",
        bin.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("sloguard "),
        "unexpected --version output: {stdout}"
    );
}
