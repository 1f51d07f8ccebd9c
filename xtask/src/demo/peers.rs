//! The demo's cast on loopback: the shop service (a Python script), nginx as
//! its gateway with sloguard's fuse map, and the agent's config; each a child
//! process stopped on drop.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Routes the load generator calls (paths; the agent templates the ids).
pub const PATHS: [&str; 5] = [
    "/api/users/1042",
    "/api/orders",
    "/api/search?q=lamp",
    "/api/users/7",
    CANARY_PATH,
];
/// A canary release of the search, marked by the gray query parameter. The
/// agent has no gray configuration: it learns the cohort by itself.
pub const CANARY_PATH: &str = "/api/search?q=lamp&gray=version:canary";
/// The route the fault hits, as a path and as the agent names it.
pub const FAULTY_PATH: &str = "/api/orders";
/// Body nginx answers a fused route with; the load generator counts it.
pub const FUSED_BODY: &str = r#"{"fused":true}"#;

/// The shop: Python's threading HTTP server, HTTP/1.1 keep-alive, quiet.
/// `/api/orders` sleeps 300 ms and fails 40 % of the time while the fault file exists;
/// the canary of `/api/search` sleeps 300 ms and fails half the time once the
/// `<fault>.canary` file exists.
pub const SHOP_PY: &str = r#"import http.server, json, os, random, sys, time

PORT, FAULT = int(sys.argv[1]), sys.argv[2]

class Shop(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        status, body = 200, {"ok": True}
        if path.startswith("/api/users/"):
            body = {"user": path.rsplit("/", 1)[1], "name": "Ada"}
        elif path == "/api/orders":
            body = {"orders": [{"id": 1, "total": 42}]}
            if os.path.exists(FAULT):
                time.sleep(0.3)
                if random.random() < 0.4:
                    status, body = 500, {"error": "database timeout"}
        elif path == "/api/search":
            body = {"hits": 3}
            if "gray=version:canary" in self.path and os.path.exists(FAULT + ".canary"):
                time.sleep(0.3)
                if random.random() < 0.5:
                    status, body = 500, {"error": "canary search index missing"}
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

http.server.ThreadingHTTPServer.daemon_threads = True
# The default listen backlog (5) overflows when the gateway opens its
# upstream connections at start: dropped SYNs wait out the 1 s retransmit
# timeout, a real P99 of 1 s that the agent rightly reported as an L1.
http.server.ThreadingHTTPServer.request_queue_size = 128
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Shop).serve_forever()
"#;

/// The gateway: docs/fuse.md's nginx recipe, answering fused routes with
/// [`FUSED_BODY`] and proxying the rest to the shop over keep-alive.
pub fn nginx_conf(prefix: &Path, port: u16, shop_port: u16, map: &Path) -> String {
    let p = prefix.display();
    let map = map.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_requests 100000;

    # sloguard rewrites this file and reloads nginx; 1 = fused.
    map "$request_method $uri" $sloguard_fused {{
        default 0;
        include {map};
    }}

    upstream shop {{
        server 127.0.0.1:{shop_port};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        if ($sloguard_fused) {{
            return 503 '{FUSED_BODY}';
        }}
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://shop;
        }}
    }}
}}
"#
    )
}

/// Ports and paths the agent's config refers to.
pub struct AgentSetup<'a> {
    pub dir: &'a Path,
    pub metrics_port: u16,
    pub shop_port: u16,
    pub webhook_port: u16,
    pub map: &'a Path,
    pub nginx_conf: &'a Path,
    pub admin_port: u16,
    pub token_file: &'a Path,
}

/// The demo config: 2 s periods, small volume gates, the shop named by its
/// port, a webhook, and the fuse enforcing through the nginx map.
pub fn agent_config(s: &AgentSetup<'_>) -> String {
    let d = s.dir.display();
    format!(
        r#"node_name: demo
log: {{ level: "warn,sloguard::respond::fuse=info" }}
metrics: {{ listen: "127.0.0.1:{metrics}" }}
request_logs: {{ enabled: false }}
services:
  rules:
    - name: shop
      port: {shop}
    - name: gateway
      process: nginx
alerts:
  max_retries: 2
  initial_backoff: 200ms
  webhooks:
    - name: demo
      url: "http://127.0.0.1:{webhook}/alerts"
      timeout: 2s
slo:
  period: 2s
  default_p99: 250ms
  min_requests: 10
  min_errors: 3
  min_baseline_periods: 5
  resolve_after_periods: 2
  # The canary's rollback signal: 5xx > 5 % and P99 > 250 ms for 3 periods.
  gray_p99: 250ms
fuse:
  mode: enforce
  open_for: 10s
  max_open_for: 40s
  min_requests: 10
  state_file: "{d}/fuse-state.json"
  audit_file: "{d}/fuse-audit.jsonl"
  retry_min: 500ms
  retry_max: 5s
  actions:
    - type: file
      name: nginx
      services: [shop]
      path: "{map}"
      format: nginx_map
      reload_command: [nginx, -p, "{d}/nginx/", -e, "{d}/nginx/error.log", -c, "{conf}", -s, reload]
admin:
  listen: "127.0.0.1:{admin}"
  token_file: "{token}"
"#,
        admin = s.admin_port,
        token = s.token_file.display(),
        metrics = s.metrics_port,
        shop = s.shop_port,
        webhook = s.webhook_port,
        map = s.map.display(),
        conf = s.nginx_conf.display(),
    )
}

/// A child process, stopped (signal, grace period, kill) when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Option<Child>,
    stop_signal: i32,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(
        name: &'static str,
        cmd: &mut Command,
        log: PathBuf,
        stop_signal: i32,
    ) -> Result<Self> {
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}: {}", crate::util::cmdline(cmd)))?;
        Ok(Self {
            name,
            child: Some(child),
            stop_signal,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails when the process already exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            self.child = None;
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail(20));
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `ready` holds, failing early if the process dies.
    pub fn wait_until(&mut self, max: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < max {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} not ready within {max:?}:\n{}",
            self.name,
            self.log_tail(20)
        )
    }

    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: signalling a child this process started, by its own pid.
        unsafe { libc::kill(c.id() as libc::pid_t, self.stop_signal) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_config_names_the_demo_peers() {
        let dir = Path::new("/tmp/d");
        let cfg = agent_config(&AgentSetup {
            dir,
            metrics_port: 1,
            shop_port: 2,
            webhook_port: 3,
            map: Path::new("/tmp/d/nginx/fuses.map"),
            nginx_conf: Path::new("/tmp/d/nginx/nginx.conf"),
            admin_port: 4,
            token_file: Path::new("/tmp/d/admin-token"),
        });
        assert!(cfg.contains(r#"listen: "127.0.0.1:4""#));
        assert!(cfg.contains(r#"token_file: "/tmp/d/admin-token""#));
        assert!(cfg.contains("port: 2"));
        assert!(cfg.contains("http://127.0.0.1:3/alerts"));
        assert!(cfg.contains(r#"path: "/tmp/d/nginx/fuses.map""#));
        assert!(cfg.contains("-c, \"/tmp/d/nginx/nginx.conf\", -s, reload]"));
        assert!(cfg.contains("mode: enforce"));
    }

    #[test]
    fn nginx_conf_answers_fused_routes_itself() {
        let conf = nginx_conf(Path::new("/p"), 80, 81, Path::new("/p/f.map"));
        assert!(conf.contains("include /p/f.map;"));
        assert!(conf.contains(r#"return 503 '{"fused":true}';"#));
        assert!(conf.contains("server 127.0.0.1:81;"));
        assert!(conf.contains("listen 127.0.0.1:80;"));
    }
}
