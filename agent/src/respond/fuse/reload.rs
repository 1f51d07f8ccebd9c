//! Running a file action's reload command: no shell, its own process group,
//! an environment with `PATH` only, stderr drained while it runs, and the
//! whole group killed on timeout.
use std::time::Duration;

/// Most of a failed reload command's stderr that goes into the error.
const RELOAD_STDERR_KEEP: usize = 4096;

/// Run a command to completion, killing its whole process group after
/// `timeout`. It runs in a new process group with an empty environment but
/// `PATH` (the agent's environment may hold the admin token), stdin and
/// stdout closed; stderr is drained while it runs (a full pipe would block
/// it) and its first [`RELOAD_STDERR_KEEP`] bytes are kept.
pub(super) fn run_with_timeout(
    prog: &str,
    args: &[String],
    timeout: Duration,
) -> Result<std::process::Output, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let pgid = child.id() as libc::pid_t;
    let deadline = std::time::Instant::now() + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = RELOAD_STDERR_KEEP.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            let _ = tx.send(kept);
        });
    }
    let kill_group = |child: &mut std::process::Child| {
        // SAFETY: signals the process group this function created (its
        // leader is our child, not yet reaped, so the id is not reused).
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = child.wait();
    };
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                kill_group(&mut child);
                return Err(format!("timed out after {timeout:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    // A child the command left behind may still hold stderr open: wait for
    // it until the deadline, then kill what remains of the group.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let stderr = match rx.recv_timeout(left) {
        Ok(kept) => kept,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // SAFETY: as above; the leader is reaped, but the group id stays
            // ours while a member of the group lives.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            return Err(format!(
                "timed out after {timeout:?} (exited {status}, a process it started kept running)"
            ));
        }
    };
    Ok(std::process::Output {
        status,
        stdout: Vec::new(),
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> Result<std::process::Output, String> {
        run_with_timeout(
            "sh",
            &["-c".to_string(), script.to_string()],
            Duration::from_millis(timeout_ms),
        )
    }

    #[test]
    fn reload_command_with_lots_of_stderr_does_not_hang() {
        let t0 = std::time::Instant::now();
        let out = sh(
            "head -c 300000 /dev/zero | tr '\\0' x >&2; echo done >&2",
            5000,
        )
        .unwrap();
        assert!(out.status.success());
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        assert_eq!(out.stderr.len(), RELOAD_STDERR_KEEP);
    }

    #[test]
    fn reload_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let e = sh(&script, 500).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        let pid: libc::pid_t = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..200).any(|_| {
            // A reaped process is gone; one that is a zombie is dead too.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead = stat.is_empty() || stat.contains(") Z ");
            if !dead {
                std::thread::sleep(Duration::from_millis(10));
            }
            dead
        });
        if !gone {
            // SAFETY: the sleep this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert!(gone, "the command's child {pid} outlived the timeout");
    }

    #[test]
    fn reload_command_gets_only_path_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let envfile = dir.path().join("env");
        let out = sh(&format!("env > {}", envfile.display()), 5000).unwrap();
        assert!(out.status.success());
        let env = std::fs::read_to_string(&envfile).unwrap();
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"PATH"), "{env}");
        // What the shell itself sets is fine; nothing of the agent's.
        for n in &names {
            assert!(
                ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(n),
                "{n} leaked: {env}"
            );
        }
    }
}
