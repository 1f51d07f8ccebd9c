//! A real nginx for tests: own prefix and config in a temp dir, `daemon off`,
//! loopback only, an access log in a fixed tab-separated format that the tests
//! parse to compare the agent's view with nginx's own.
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The access log format: one request per line, tab-separated, in this order.
pub const LOG_FORMAT: &str = "$connection\t$connection_requests\t$remote_port\t$status\t$request_length\t$bytes_sent\t$request_time\t$msec\t$request";

/// One line of the access log.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogEntry {
    /// nginx's connection serial number.
    pub connection: u64,
    /// Position of the request on its connection, from 1.
    pub connection_requests: u64,
    /// Client port (identifies the connection from the client's side).
    pub remote_port: u16,
    pub status: u16,
    pub request_length: u64,
    pub bytes_sent: u64,
    pub request_time_s: f64,
    /// Unix time of the log write, seconds with ms resolution.
    pub msec: f64,
    /// The request line, e.g. `GET /x HTTP/1.1`.
    pub request: String,
}

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct NginxOptions {
    pub workers: u32,
    pub sendfile: bool,
    /// Files under the document root: (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// Extra directives inside `server { }` (locations with `return`, proxies...).
    pub server_extra: String,
    /// Extra directives inside `http { }`, before the server (maps...).
    pub http_extra: String,
    pub access_log: bool,
}

impl Default for NginxOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            sendfile: true,
            files: Vec::new(),
            server_extra: String::new(),
            http_extra: String::new(),
            access_log: true,
        }
    }
}

/// A running nginx; stopped (and its temp dir removed) on drop.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    pub prefix: tempfile::TempDir,
}

impl Nginx {
    pub fn start(opts: &NginxOptions) -> anyhow::Result<Self> {
        let bin = crate::env::which("nginx").context("nginx not installed")?;
        let prefix = tempfile::Builder::new()
            .prefix("sloguard-nginx")
            .tempdir()?;
        let root = prefix.path().join("www");
        std::fs::create_dir_all(&root)?;
        for (name, data) in &opts.files {
            std::fs::write(root.join(name), data)?;
        }
        let port = free_port()?;
        let conf = prefix.path().join("nginx.conf");
        std::fs::File::create(&conf)?.write_all(config(prefix.path(), port, opts).as_bytes())?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning nginx")?;
        let mut n = Self {
            child: Some(child),
            port,
            prefix,
        };
        n.wait_ready(Duration::from_secs(10))?;
        Ok(n)
    }

    fn wait_ready(&mut self, max: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < max {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                let err = std::fs::read_to_string(self.prefix.path().join("error.log"))
                    .unwrap_or_default();
                bail!("nginx exited at start ({status}): {err}");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && !self.workers().is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "nginx did not listen on 127.0.0.1:{} within {max:?}",
            self.port
        )
    }

    /// Pid of the master process.
    pub fn master_pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Pids of the worker processes (children of the master).
    pub fn workers(&self) -> Vec<u32> {
        let pid = self.master_pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.prefix.path().join("access.log")
    }

    /// Parsed access log (nginx writes each line when the request completes).
    pub fn access_log(&self) -> anyhow::Result<Vec<AccessLogEntry>> {
        let text = std::fs::read_to_string(self.access_log_path())?;
        text.lines().map(parse_log_line).collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGQUIT: graceful; the master waits for workers, then exits.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn parse_log_line(line: &str) -> anyhow::Result<AccessLogEntry> {
    let f: Vec<&str> = line.splitn(9, '\t').collect();
    if f.len() != 9 {
        bail!("access log line has {} fields: {line:?}", f.len());
    }
    let ctx = || format!("access log line {line:?}");
    Ok(AccessLogEntry {
        connection: f[0].parse().with_context(ctx)?,
        connection_requests: f[1].parse().with_context(ctx)?,
        remote_port: f[2].parse().with_context(ctx)?,
        status: f[3].parse().with_context(ctx)?,
        request_length: f[4].parse().with_context(ctx)?,
        bytes_sent: f[5].parse().with_context(ctx)?,
        request_time_s: f[6].parse().with_context(ctx)?,
        msec: f[7].parse().with_context(ctx)?,
        request: f[8].to_string(),
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(prefix: &Path, port: u16, o: &NginxOptions) -> String {
    let p = prefix.display();
    let access = if o.access_log {
        format!("access_log {p}/access.log sg;")
    } else {
        "access_log off;".to_string()
    };
    format!(
        r#"daemon off;
master_process on;
user root;
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format sg '{LOG_FORMAT}';
    {access}
    sendfile {sendfile};
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ text/plain txt; application/octet-stream bin; }}
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        root {p}/www;
        {extra}
    }}
}}
"#,
        workers = o.workers,
        sendfile = if o.sendfile { "on" } else { "off" },
        extra = o.server_extra,
        http_extra = o.http_extra,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_log_line() {
        let e = parse_log_line(
            "7\t2\t40000\t200\t83\t2097391\t0.004\t1764060000.123\tGET /big.bin?c=1 HTTP/1.1",
        )
        .unwrap();
        assert_eq!(e.connection, 7);
        assert_eq!(e.bytes_sent, 2_097_391);
        assert_eq!(e.request, "GET /big.bin?c=1 HTTP/1.1");
        assert!(parse_log_line("1\t2").is_err());
        assert!(parse_log_line("x\t2\t3\t4\t5\t6\t7\t8\tGET /").is_err());
    }
}
