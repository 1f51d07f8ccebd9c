//! Child processes that never outlive the test: bounded waits, killed on drop.
use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A spawned process with piped stdout, killed (by its pid) on drop.
pub struct Spawned {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Spawned {
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        Ok(Self { child, stdout })
    }

    /// Process id; `ip netns exec` execs its program, so this is also the
    /// program's tgid as the probes see it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Read one stdout line (e.g. "ready"). The child prints it promptly or
    /// exits; a child that does neither is killed by the caller's deadline.
    pub fn line(&mut self) -> anyhow::Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            bail!("child {} closed stdout", self.child.id());
        }
        Ok(l.trim_end().to_string())
    }

    /// Wait for exit within `within` (killed after that) and return the rest of
    /// stdout; an error when it failed or had to be killed.
    pub fn finish(mut self, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("child {} still running after {within:?}", self.child.id());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest)?;
        if !status.success() {
            bail!("child exited with {status}; stdout: {rest}");
        }
        Ok(rest)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
