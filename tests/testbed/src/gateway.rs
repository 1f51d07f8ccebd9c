//! Real gateways for the fuse action tests: HAProxy and Caddy started from
//! the recipes in docs/fuse.md (so the documented configuration is the tested
//! one), raw HTTP requests through them, and the identity of their process.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::env::free_port;

/// The first ```` ```lang ```` block after the line `heading` in docs/fuse.md.
pub fn recipe(heading: &str, lang: &str) -> String {
    let doc = std::fs::read_to_string(crate::tools::repo_root().join("docs/fuse.md"))
        .expect("read docs/fuse.md");
    let at = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/fuse.md has no {heading:?}"));
    let fence = format!("```{lang}\n");
    let start = doc[at..].find(&fence).expect("recipe block") + at + fence.len();
    let end = doc[start..].find("```").expect("end of recipe block") + start;
    doc[start..end].to_string()
}

/// Status code of `GET <raw path>` (sent as is, HTTP/1.0, new connection);
/// 0 when the gateway does not answer.
pub fn status(port: u16, raw_path: &str) -> u16 {
    let go = || -> anyhow::Result<u16> {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {raw_path} HTTP/1.0\r\nHost: gw\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(std::str::from_utf8(&head[9..12])?.parse()?)
    };
    go().unwrap_or(0)
}

/// Polls until `GET raw_path` answers `want`; the time it took.
pub fn wait_status(port: u16, raw_path: &str, want: u16, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if status(port, raw_path) == want {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// (pid, start time in clock ticks since boot): equal before and after means
/// the same process, never restarted.
pub fn identity(pid: u32) -> (u32, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the `(comm)`; starttime is field 22 of the whole line.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let start = after
        .split_whitespace()
        .nth(19)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (pid, start)
}

/// A gateway process: its command line, its output in a log file, ready
/// when its ports accept; started again the same way; killed on drop.
pub struct Supervised {
    what: &'static str,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ports: Vec<u16>,
    log: PathBuf,
    child: Option<Child>,
}

impl Supervised {
    /// Starts `what` (found on PATH) and waits for `ports`.
    fn start(
        what: &'static str,
        args: Vec<std::ffi::OsString>,
        envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        ports: Vec<u16>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let program = crate::env::which(what).with_context(|| format!("{what} missing"))?;
        let mut s = Self {
            what,
            program,
            args,
            envs,
            ports,
            log,
            child: None,
        };
        s.start_again()?;
        Ok(s)
    }

    /// Stops the process if it runs, then starts it as at first.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = std::fs::File::create(&self.log)?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.what))?;
        let t0 = Instant::now();
        for &port in &self.ports {
            loop {
                if let Some(st) = child.try_wait()? {
                    bail!(
                        "{} exited at start ({st}): {}",
                        self.what,
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("{} did not listen on 127.0.0.1:{port}", self.what);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// HAProxy (foreground, `-db`) from the docs recipe; killed on drop.
pub struct Haproxy {
    pub process: Supervised,
    pub port: u16,
    pub socket: PathBuf,
    pub map: PathBuf,
}

impl Haproxy {
    /// In `dir`, in front of `127.0.0.1:<backend>`; creates an empty map file
    /// when there is none (HAProxy needs it at start).
    pub fn start(dir: &Path, backend: u16) -> anyhow::Result<Self> {
        Self::start_with(dir, backend, "")
    }

    /// Same, with `global` lines added (more stats sockets).
    pub fn start_with(dir: &Path, backend: u16, global: &str) -> anyhow::Result<Self> {
        let socket = dir.join("haproxy-admin.sock");
        let map = dir.join("haproxy-fuses.map");
        let port = free_port();
        let cfg = recipe("## Recipe: HAProxy", "haproxy")
            .replace("/run/haproxy/admin.sock", &socket.display().to_string())
            .replace(
                "/etc/haproxy/sloguard-fuses.map",
                &map.display().to_string(),
            )
            .replace("bind :80", &format!("bind 127.0.0.1:{port}"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{backend}"))
            .replacen("global\n", &format!("global\n{global}"), 1);
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg)?;
        if !map.exists() {
            std::fs::write(&map, "")?;
        }
        let process = Supervised::start(
            "haproxy",
            vec!["-db".into(), "-f".into(), cfg_path.into()],
            Vec::new(),
            vec![port],
            dir.join("haproxy.log"),
        )?;
        Ok(Self {
            process,
            port,
            socket,
            map,
        })
    }

    /// One runtime API command; its answer.
    pub fn cli(&self, command: &str) -> anyhow::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The live map's lines (`<ref> <key> <value>`).
    pub fn live_map(&self) -> Vec<String> {
        self.cli(&format!("show map {}", self.map.display()))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect()
    }

    /// The fuse action for this HAProxy, as a YAML list item, for the
    /// backend's `service` only (the gateway's own service sees its 503s).
    pub fn action_yaml(&self, service: &str) -> String {
        format!(
            "    - type: haproxy\n      name: haproxy\n      services: [{service}]\n      socket: {}\n      map: {}\n      timeout: 1s\n      retries: 1\n      backoff: 50ms\n",
            self.socket.display(),
            self.map.display(),
        )
    }
}

/// Caddy (`caddy run`) from the docs recipe, its HOME and XDG dirs in the
/// test's directory; killed on drop.
pub struct Caddy {
    pub process: Supervised,
    pub port: u16,
    pub admin: u16,
}

impl Caddy {
    pub fn start(dir: &Path, backend: u16) -> anyhow::Result<Self> {
        let port = free_port();
        let admin = free_port();
        let cfg = recipe("## Recipe: Caddy", "json")
            .replace("127.0.0.1:2019", &format!("127.0.0.1:{admin}"))
            .replace("\":80\"", &format!("\"127.0.0.1:{port}\""))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{backend}"));
        let cfg_path = dir.join("caddy.json");
        std::fs::write(&cfg_path, cfg)?;
        let home = dir.join("caddy-home");
        std::fs::create_dir_all(&home)?;
        let process = Supervised::start(
            "caddy",
            vec!["run".into(), "--config".into(), cfg_path.into()],
            vec![
                ("HOME".into(), home.clone().into()),
                ("XDG_DATA_HOME".into(), home.join("data").into()),
                ("XDG_CONFIG_HOME".into(), home.join("config").into()),
            ],
            vec![port, admin],
            dir.join("caddy.log"),
        )?;
        Ok(Self {
            process,
            port,
            admin,
        })
    }

    pub fn admin(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        crate::agent::http_request(([127, 0, 0, 1], self.admin).into(), method, path, &[], "")
    }

    pub fn action_yaml(&self, service: &str) -> String {
        format!(
            "    - type: caddy\n      name: caddy\n      services: [{service}]\n      admin_url: http://127.0.0.1:{}\n      server: srv0\n      timeout: 1s\n      retries: 1\n      backoff: 50ms\n",
            self.admin
        )
    }
}
