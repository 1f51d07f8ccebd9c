//! Real Prometheus and Alertmanager servers on 127.0.0.1 for the deploy
//! tests, and a minimal HTTP/1.1 client for their APIs (loopback only).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::env::free_port;

/// A server process, killed and reaped on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `cmd` (already told to listen on `addr`) and wait until `ready_path`
    /// answers 200, at most `timeout`.
    pub fn start(mut cmd: Command, addr: SocketAddr, ready_path: &str, timeout: Duration) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut server = Server { child, addr };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http(addr, "GET", ready_path, None) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("{cmd:?} exited with {status}:\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "{cmd:?} not ready after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Prometheus (Debian's `/usr/bin/prometheus`) with an empty TSDB in `dir`
/// and the given config, on a free loopback port.
pub fn prometheus(binary: &Path, config: &Path, dir: &Path) -> Server {
    std::fs::create_dir_all(dir).expect("TSDB dir");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.display()))
        .arg(format!("--web.listen-address={addr}"))
        .current_dir(dir);
    Server::start(cmd, addr, "/-/ready", Duration::from_secs(30))
}

/// Alertmanager (Debian's `prometheus-alertmanager`) alone: no cluster peers.
pub fn alertmanager(binary: &Path, config: &Path, dir: &Path) -> Server {
    std::fs::create_dir_all(dir).expect("storage dir");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .current_dir(dir);
    Server::start(cmd, addr, "/-/ready", Duration::from_secs(30))
}

/// One HTTP/1.1 request (`Connection: close`); returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = json_body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if json_body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of HTTP head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encode a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
