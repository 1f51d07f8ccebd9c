//! A loopback Python server whose `/api/flaky/...` routes turn slow (300 ms)
//! and half 5xx while a fault file exists: the demo's fault, for tests that
//! need an L2 alert and a fuse. Other paths answer 200 at once. Killed on drop.
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::webhook::wait;

const SERVER: &str = r#"
import http.server, os, random, sys, time
FAULT = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
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

pub struct FlakyServer {
    child: Child,
    pub addr: SocketAddr,
    pub port: u16,
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
            .spawn()
            .expect("spawn python3");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait(Duration::from_secs(10), || TcpStream::connect(addr).ok()).is_some(),
            "python server did not listen"
        );
        Self {
            child,
            addr,
            port,
            fault,
            _dir: dir,
        }
    }

    /// Turn the fault on or off.
    pub fn set_fault(&self, on: bool) {
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
