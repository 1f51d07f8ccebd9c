//! `cargo xtask build` and `cargo xtask run`: build the agent (its build.rs builds the
//! eBPF object) and start it on this host.
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::setup::{self, Scope};
use crate::util::{self, is_root, repo_root, run};

/// The default config the agent starts with, relative to the repository root.
pub const DEFAULT_CONFIG: &str = "config/sloguard.yaml";
/// Where the agent serves metrics with the default config.
pub const METRICS_URL: &str = "http://127.0.0.1:9464/metrics";

/// Builds the `sloguard` binary and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "agent", "--bin", "sloguard"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("sloguard"))
}

/// The agent's arguments: the default config when the repository has one and `extra`
/// names none, then `extra`.
pub fn agent_args(config_present: bool, extra: &[OsString]) -> Vec<OsString> {
    let mut args = Vec::with_capacity(extra.len() + 2);
    let user_config = extra.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--config" || a == "-c" || a.starts_with("--config=")
    });
    if config_present && !user_config {
        args.push("--config".into());
        args.push(repo_root().join(DEFAULT_CONFIG).into_os_string());
    }
    args.extend(extra.iter().cloned());
    args
}

pub fn run_agent(extra: &[OsString]) -> Result<()> {
    setup::setup(Scope::Build)?;
    let bin = build(true)?;
    let config_present = repo_root().join(DEFAULT_CONFIG).is_file();
    let args = agent_args(config_present, extra);
    if !is_root() {
        println!(
            "note: the agent loads eBPF programs: it needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_RESOURCE)"
        );
    }
    println!();
    println!("sloguard metrics: {METRICS_URL} (also /healthz, /readyz)");
    println!("try:  curl -s localhost:9464/metrics | grep sloguard_tcp");
    println!("stop: Ctrl-C");
    println!();
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(&args).current_dir(repo_root());
    println!("+ {}", util::cmdline(&cmd));
    // exec: the agent gets Ctrl-C and SIGTERM itself and shuts down cleanly.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot start {}", bin.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_comes_first_then_user_args() {
        let extra: Vec<OsString> = vec!["--log-format".into(), "json".into()];
        let args = agent_args(true, &extra);
        assert_eq!(args[0], "--config");
        assert!(PathBuf::from(&args[1]).ends_with("config/sloguard.yaml"));
        assert_eq!(&args[2..], &extra[..]);
        assert_eq!(agent_args(false, &extra), extra);
        let own: Vec<OsString> = vec!["--config=/etc/sloguard.yaml".into()];
        assert_eq!(agent_args(true, &own), own);
    }
}
