//! The real `sloguard` binary as a child process, configured by the test.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Path of the agent binary: `SG_AGENT_BIN` (set by `cargo xtask test`),
/// else the debug build, built with `cargo build -p agent` if missing.
/// (Not a `SLOGUARD_*` name: those are config overrides for the agent.)
pub fn sloguard_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("SG_AGENT_BIN") {
        return b.into();
    }
    let bin = crate::env::target_dir().join("debug/sloguard");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "agent"])
            .current_dir(crate::repo_root())
            .status()
            .expect("run cargo build -p agent");
        assert!(st.success(), "cargo build -p agent failed");
    }
    bin
}

/// One agent at a time per test binary: every agent sees every process on
/// the host, so concurrent agents (and their CPU use) would blur each
/// other's assertions.
static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running agent. Stopped (SIGTERM) on drop.
pub struct Agent {
    child: Option<Child>,
    pub metrics: SocketAddr,
    pub dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Agent {
    /// Start with `config_yaml` (its `metrics.listen` is set by us) and wait
    /// until `/readyz` answers 200 (probes attached).
    pub fn start(config_yaml: &str) -> anyhow::Result<Self> {
        Self::start_with_env(config_yaml, &[])
    }

    pub fn start_with_env(config_yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_bin(&sloguard_bin(), config_yaml, env)
    }

    /// Start the given binary (the benches run a release build, and a
    /// baseline build of another commit beside it).
    pub fn start_bin(
        bin: &std::path::Path,
        config_yaml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let turn = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir()?;
        let port = crate::env::free_port();
        let metrics: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let cfg = dir.path().join("sloguard.yaml");
        std::fs::write(&cfg, config_yaml)?;
        let log = std::fs::File::create(dir.path().join("agent.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&cfg)
            .env("SLOGUARD_METRICS__LISTEN", metrics.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawn sloguard")?;
        let mut agent = Self {
            child: Some(child),
            metrics,
            dir,
            _turn: turn,
        };
        agent.wait_ready(Duration::from_secs(60))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("agent exited early with {st}: {}", self.log());
            }
            if let Ok((200, _)) = http_get(self.metrics, "/readyz", None) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("agent not ready after {timeout:?}: {}", self.log())
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Prometheus text exposition.
    pub fn scrape(&self) -> anyhow::Result<String> {
        match http_get(self.metrics, "/metrics", None)? {
            (200, body) => Ok(body),
            (code, body) => bail!("/metrics answered {code}: {body}"),
        }
    }

    /// OpenMetrics exposition (with exemplars).
    pub fn scrape_openmetrics(&self) -> anyhow::Result<String> {
        match http_get(
            self.metrics,
            "/metrics",
            Some("application/openmetrics-text; version=1.0.0"),
        )? {
            (200, body) => Ok(body),
            (code, body) => bail!("/metrics answered {code}: {body}"),
        }
    }

    /// Poll `/metrics` until `pred` holds or `timeout` passes; returns the
    /// last scrape either way.
    pub fn scrape_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let text = self.scrape().unwrap_or_default();
            if pred(&text) || t0.elapsed() > timeout {
                return text;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The exit status if the agent has exited by itself (it is then not
    /// signalled on drop).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(st)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("already stopped")
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                bail!("agent did not stop within 15 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
        }
    }
}

/// Minimal HTTP/1.0 GET (the tests need nothing more): (status, body).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    http_request(addr, "GET", path, &headers, "")
}

/// Minimal HTTP/1.0 request with a body and extra headers: (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    // Generous: a bench scrapes tens of MiB of series from a busy agent.
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code: u16 = buf
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Run `sloguard ARGS` to completion: (exit code, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(sloguard_bin())
        .args(args)
        .output()
        .expect("run sloguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
