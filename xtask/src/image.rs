//! `cargo xtask image`: build the agent's container image from deploy/Dockerfile
//! with the first container engine that answers; without one, say so and fail.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::util;

/// Engines tried in this order; each takes `build -f FILE -t TAG DIR`.
pub const ENGINES: [&str; 3] = ["docker", "podman", "nerdctl"];

/// The image the Kubernetes DaemonSet runs (deploy/kubernetes/base/daemonset.yaml).
pub fn default_tag() -> String {
    format!("sloguard:{}", env!("CARGO_PKG_VERSION"))
}

/// Why an engine on PATH cannot build.
#[derive(Debug, PartialEq)]
pub struct Unusable {
    pub engine: PathBuf,
    pub reason: String,
}

/// The first engine found in `path_dirs` whose `probe` passes, or every engine
/// found with the reason it cannot be used.
pub fn pick_engine(
    path_dirs: &[PathBuf],
    wanted: Option<&str>,
    probe: impl Fn(&Path) -> std::result::Result<(), String>,
) -> std::result::Result<PathBuf, Vec<Unusable>> {
    let names: Vec<&str> = match wanted {
        Some(w) => vec![w],
        None => ENGINES.to_vec(),
    };
    let mut unusable = Vec::new();
    for name in names {
        let Some(bin) = path_dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) else {
            continue;
        };
        match probe(&bin) {
            Ok(()) => return Ok(bin),
            Err(reason) => unusable.push(Unusable {
                engine: bin,
                reason,
            }),
        }
    }
    Err(unusable)
}

/// `ENGINE info` answers: the CLI reaches its daemon (or, for podman, its storage).
fn engine_answers(bin: &Path) -> std::result::Result<(), String> {
    let out = Command::new(bin)
        .arg("info")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no error text");
    Err(format!("`{} info` failed: {line}", bin.display()))
}

/// The build command for `engine`, run from the repository root.
pub fn build_command(engine: &Path, root: &Path, tag: &str) -> Command {
    let mut cmd = Command::new(engine);
    cmd.args(["build", "-f", "deploy/Dockerfile", "-t", tag, "."])
        .current_dir(root);
    cmd
}

pub fn image(engine: Option<&str>, tag: Option<&str>) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let tag = tag.map(str::to_string).unwrap_or_else(default_tag);
    match pick_engine(&dirs, engine, engine_answers) {
        Ok(bin) => util::run(&mut build_command(&bin, &util::repo_root(), &tag)),
        Err(unusable) => bail!("{}", no_engine_message(engine, &unusable)),
    }
}

pub fn no_engine_message(wanted: Option<&str>, unusable: &[Unusable]) -> String {
    let looked_for = wanted.map_or_else(|| ENGINES.join(", "), str::to_string);
    let mut msg = format!(
        "no container engine available to build the image (looked for {looked_for} on PATH)"
    );
    for u in unusable {
        msg.push_str(&format!(
            "\n  {} is installed but unusable: {}",
            u.engine.display(),
            u.reason
        ));
    }
    msg.push_str(
        "\nInstall and start Docker or Podman, then run `cargo xtask image` again; \
         or build elsewhere with `docker build -f deploy/Dockerfile -t sloguard:TAG .`",
    );
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        d
    }

    #[test]
    fn picks_the_first_engine_that_answers() {
        let d = dir_with(&["docker", "podman"]);
        let dirs = vec![d.path().to_path_buf()];
        // docker's daemon is down, podman works: podman is used.
        let got = pick_engine(&dirs, None, |b| {
            if b.ends_with("docker") {
                Err("daemon down".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(got, Ok(d.path().join("podman")));
        // Asked for docker only: its failure is the answer.
        let got = pick_engine(&dirs, Some("docker"), |_| Err("daemon down".into()));
        assert_eq!(
            got,
            Err(vec![Unusable {
                engine: d.path().join("docker"),
                reason: "daemon down".into()
            }])
        );
    }

    #[test]
    fn no_engine_is_a_clear_error() {
        let d = dir_with(&[]);
        let got = pick_engine(&[d.path().to_path_buf()], None, |_| Ok(()));
        let unusable = got.unwrap_err();
        assert!(unusable.is_empty());
        let msg = no_engine_message(None, &unusable);
        assert!(msg.starts_with("no container engine available"), "{msg}");
        assert!(msg.contains("docker, podman, nerdctl"), "{msg}");
    }

    #[test]
    fn a_real_engine_without_daemon_is_reported_with_its_reason() {
        // A CLI whose `info` fails like a docker CLI without a daemon.
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("docker");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let got = pick_engine(&[d.path().to_path_buf()], None, engine_answers).unwrap_err();
        assert_eq!(got.len(), 1);
        assert!(
            got[0]
                .reason
                .contains("Cannot connect to the Docker daemon"),
            "{:?}",
            got[0]
        );
    }

    #[test]
    fn builds_deploy_dockerfile_from_the_root() {
        let cmd = build_command(Path::new("/usr/bin/docker"), Path::new("/repo"), "x:1");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["build", "-f", "deploy/Dockerfile", "-t", "x:1", "."]);
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/repo")));
        assert!(util::repo_root().join("deploy/Dockerfile").is_file());
    }
}
