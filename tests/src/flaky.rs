//! A Python HTTP/1.1 backend that answers `ok` on every path; while its fault
//! file exists, `/api/flaky/...` turns slow (300 ms) and half of its answers
//! are 500: what the SLO engine's L2 alert (and so a fuse) needs.
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = r#"
import http.server, os, random, sys, time
FAULT = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle on, a keep-alive peer (HAProxy,
    # Caddy) waits out its delayed ACK, ~40 ms per request.
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        code = 200
        if self.path.startswith("/api/flaky/") and os.path.exists(FAULT):
            time.sleep(0.3)
            code = 500 if random.random() < 0.5 else 200
        body = b"ok\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// The backend; killed on drop.
pub struct FlakyServer {
    child: Child,
    pub addr: SocketAddr,
    fault: PathBuf,
    _dir: tempfile::TempDir,
}

impl FlakyServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER).unwrap();
        let fault = dir.path().join("fault");
        let port = crate::env::free_port();
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&fault)
            .stdin(Stdio::null())
            // Resets by a stopped gateway print tracebacks; not the test's news.
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t0 = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "python server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            fault,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Turns the fault on or off.
    pub fn fault(&self, on: bool) {
        if on {
            std::fs::write(&self.fault, b"1").unwrap();
        } else {
            let _ = std::fs::remove_file(&self.fault);
        }
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
