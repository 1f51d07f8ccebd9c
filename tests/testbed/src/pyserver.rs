//! Python's `http.server` as a real HTTP peer on loopback.
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::free_port;

/// Python's http.server serving a temp directory; killed on drop.
pub struct PyServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PyServer {
    /// Serves `hello from <name>` under each name.
    pub fn start(files: &[&str]) -> Self {
        let files: Vec<(&str, Vec<u8>)> = files
            .iter()
            .map(|f| (*f, format!("hello from {f}\n").into_bytes()))
            .collect();
        Self::with_files(&files)
    }

    /// Serves the given (name, contents).
    pub fn with_files(files: &[(&str, Vec<u8>)]) -> Self {
        Self::on_port(free_port(), files)
    }

    /// Serves the given (name, contents) on `port` (a test that must name the
    /// port before the server starts).
    pub fn on_port(port: u16, files: &[(&str, Vec<u8>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 -m http.server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t0 = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(15), "http.server up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
