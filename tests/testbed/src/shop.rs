//! A Python HTTP service with a switchable fault, the peer of the SLO, gray
//! and fuse tests: a faulty request takes 300 ms and fails half the time
//! (500), every other request answers 200 at once. Which requests are faulty:
//!
//! - [`Fault::PathWhileFileExists`]: paths under a prefix, while a file
//!   exists (the test creates and removes it to start and lift the fault);
//! - [`Fault::GrayVersion`]: requests of a gray cohort, decided as the agent
//!   decides it: the `version` of the `X-Gray-Tag` header, else of the
//!   `gray` query parameter;
//! - [`Fault::HeaderWhileFileExists`]: requests carrying a header value, while
//!   a file exists, failing a given share (the snapshot test's canary).
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
import http.server, os, random, sys, time, urllib.parse
PORT, MODE, ARG, PREFIX, SHARE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
def version(tag):
    for p in tag.split(","):
        k, _, v = p.partition(":")
        if k.strip().lower() == "version":
            return v.strip()
    return ""
def faulty(h):
    if MODE == "file":
        return h.path.startswith(PREFIX) and os.path.exists(ARG)
    if MODE == "header":
        name, _, value = PREFIX.partition(":")
        return h.headers.get(name, "") == value and os.path.exists(ARG)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
    return (version(h.headers.get("X-Gray-Tag", "")) or version(q.get("gray", [""])[0])) == ARG
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in two writes: without this, Nagle holds the body
    # for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        code = 200
        if faulty(self):
            time.sleep(0.3)
            code = 500 if random.random() < SHARE else 200
        body = b"ok\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#;

/// Which requests the shop fails.
#[derive(Clone, Debug)]
pub enum Fault {
    PathWhileFileExists {
        prefix: String,
        file: PathBuf,
    },
    GrayVersion(String),
    /// `header` equal to `value` while `file` exists; `share` of them fail.
    HeaderWhileFileExists {
        header: String,
        value: String,
        file: PathBuf,
        share: f64,
    },
}

/// The running shop; killed on drop.
pub struct Shop {
    child: Child,
    pub addr: SocketAddr,
    /// The switch of [`Shop::flaky`].
    fault_file: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Shop {
    /// Starts the shop on a free loopback port and waits until it listens.
    pub fn start(fault: Fault) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("shop.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let port = crate::env::free_port();
        let (mode, arg, prefix, share) = match &fault {
            Fault::PathWhileFileExists { prefix, file } => {
                ("file", file.display().to_string(), prefix.clone(), 0.5)
            }
            Fault::GrayVersion(v) => ("gray", v.clone(), String::new(), 0.5),
            Fault::HeaderWhileFileExists {
                header,
                value,
                file,
                share,
            } => (
                "header",
                file.display().to_string(),
                format!("{header}:{value}"),
                *share,
            ),
        };
        let child = Command::new("python3")
            .arg(&script)
            .args([
                port.to_string(),
                mode.into(),
                arg,
                prefix,
                share.to_string(),
            ])
            .stdin(Stdio::null())
            // Resets by a stopped gateway print tracebacks; not the test's news.
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let t0 = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "python shop did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            fault_file: None,
            _dir: dir,
        }
    }

    /// `/api/flaky/...` faulty while [`Self::fault`] is on (off at start).
    pub fn flaky() -> Self {
        let switch = tempfile::tempdir().unwrap().keep().join("fault");
        let mut shop = Self::start(Fault::PathWhileFileExists {
            prefix: "/api/flaky/".into(),
            file: switch.clone(),
        });
        shop.fault_file = Some(switch);
        shop
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Turns the fault of a [`Self::flaky`] shop on or off.
    pub fn fault(&self, on: bool) {
        let file = self.fault_file.as_ref().expect("a flaky() shop");
        if on {
            std::fs::write(file, b"1").unwrap();
        } else {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.fault_file.as_ref().and_then(|f| f.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The agent config that watches a [`Shop::flaky`] as `service` on `port`:
/// its route template and an SLO judged every second, quick to fire and to
/// resolve. Tests append their own sections (alerts, fuse, admin).
pub fn flaky_slo_yaml(service: &str, port: u16) -> String {
    format!(
        r#"
services:
  rules:
    - name: {service}
      port: {port}
routes:
  patterns:
    - pattern: /api/flaky/{{id}}
{QUICK_SLO_YAML}"#
    )
}

/// The `slo:` section of the end-to-end tests: judged every second, quick to
/// fire (a 3-period baseline) and to resolve (2 healthy periods).
pub const QUICK_SLO_YAML: &str = "slo:
  period: 1s
  min_requests: 5
  min_errors: 2
  min_baseline_periods: 3
  resolve_after_periods: 2
";

/// The `fuse:` and `admin:` sections the end-to-end tests append: enforce
/// after 5 requests, state and audit files in `dir`, one file action named
/// `name` writing `path` in `format`, the admin API on `admin_port` with the
/// token in `dir/token`.
pub fn enforce_fuse_yaml(
    dir: &std::path::Path,
    name: &str,
    path: &std::path::Path,
    format: &str,
    admin_port: u16,
) -> String {
    format!(
        r#"fuse:
  mode: enforce
  min_requests: 5
  state_file: {dir}/state.json
  audit_file: {dir}/audit.jsonl
  actions:
    - type: file
      name: {name}
      path: {path}
      format: {format}
admin:
  listen: 127.0.0.1:{admin_port}
"#,
        dir = dir.display(),
        path = path.display(),
    )
}

/// Steady keep-alive clients for a [`Shop::flaky`] (directly or through a
/// gateway at `addr`): two on `/api/healthy` every 100 ms and `flaky` on
/// `/api/flaky/<n>` every 200 ms, until `stop`.
pub fn flaky_traffic(
    addr: SocketAddr,
    flaky: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let healthy = (0..2).map(|_| ("/api/healthy".to_string(), 100));
    let failing = (0..flaky).map(|i| (format!("/api/flaky/{}", 102 + i), 200));
    healthy
        .chain(failing)
        .map(|(path, ms)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                crate::webhook::client(addr, path, Vec::new(), Duration::from_millis(ms), stop)
            })
        })
        .collect()
}
