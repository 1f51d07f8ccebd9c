//! HTTPS on the real kernel: the agent reads TLS plaintext with uprobes on
//! OpenSSL (the system `libssl.so.3` of nginx, curl, wrk and Python; the
//! OpenSSL inside `/usr/bin/node`) and must see what the peers' own records
//! say happened: nginx's access log, the clients' counts and timings.
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::agent::Agent;
use tests::child::Spawned;
use tests::env::{require_kernel, require_tool};
use tests::fidelity::{
    agree, assert_counts_match_access_log, config, field, losses, paced_wrk, pct, request_logs,
    run, server_counts, settle, web_rules,
};
use tests::nginx::{Nginx, NginxOptions};
use tests::otlp::OtlpReceiver;
use tests::prom::value;

const CLIENT: &str = "http_client_request_duration_seconds_count";

fn ready(tools: &[&str]) -> bool {
    require_kernel()
        && ["openssl", "nginx"]
            .iter()
            .chain(tools)
            .all(|t| require_tool(t))
}

/// A certificate and key for 127.0.0.1 (signed by a test CA).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (_ca, cert, key) = tests::certs::make_certs(dir);
    (cert, key)
}

/// nginx with `listen … ssl`, a small file and fixed-status locations.
fn https_nginx(certs: &Path, extra: &str) -> Nginx {
    https_nginx_with(certs, extra, "")
}

fn https_nginx_with(certs: &Path, extra: &str, http_extra: &str) -> Nginx {
    let (cert, key) = self_signed(certs);
    Nginx::start(&NginxOptions {
        files: vec![("small.txt".into(), b"hello over tls\n".to_vec())],
        listen_params: "ssl".into(),
        http_extra: http_extra.into(),
        server_extra: format!(
            "ssl_certificate {};\nssl_certificate_key {};\n\
             location = /notfound {{ return 404; }}\n\
             location = /unavailable {{ return 503; }}\n{extra}",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    })
    .expect("nginx with ssl starts")
}

fn https(nginx: &Nginx, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", nginx.port)
}

/// A Python `http.client` over TLS: `n` keep-alive GETs of each path on one
/// connection; prints each status.
const PY_CLIENT: &str = r#"
import http.client, ssl, sys
port, n, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context(), timeout=10)
for _ in range(n):
    for p in paths:
        c.request("GET", p)
        r = c.getresponse(); r.read()
        print(r.status)
"#;

fn py_client(port: u16, n: usize, paths: &[&str]) -> Vec<u16> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_CLIENT, &port.to_string(), &n.to_string()])
        .args(paths);
    run(&mut cmd)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Client-side durations (ms) of `service`'s requests for `path`, waiting
/// until `want` are logged (or 10 s).
fn client_ms(agent: &Agent, service: &str, path: &str, want: usize) -> Vec<f64> {
    let t0 = Instant::now();
    loop {
        let v: Vec<f64> = request_logs(agent, service)
            .iter()
            .filter(|v| field(v, "side") == "client" && field(v, "url_path") == path)
            .filter_map(|v| v["duration_ms"].as_f64())
            .collect();
        if v.len() >= want || t0.elapsed() > Duration::from_secs(10) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn https_nginx_access_log_and_clients_agree_with_the_agent() {
    if !ready(&["curl", "wrk", "python3"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let nginx = https_nginx(certs.path(), "");
    let agent = Agent::start(&config(&web_rules(nginx.port), "")).expect("agent starts");
    let t0 = Instant::now();

    // curl: keep-alive, every path several times per connection; curl's own
    // timing of each transfer (`-w` prints one line per URL).
    let paths = ["/small.txt", "/notfound", "/unavailable"];
    let mut curl_ms = Vec::new();
    for _ in 0..4 {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "--max-time", "20", "-w"])
            .arg("%{http_code} %{time_total} %{time_pretransfer}\\n");
        for _ in 0..5 {
            for p in paths {
                cmd.args(["-o", "/dev/null", &https(&nginx, p)]);
            }
        }
        for line in run(&mut cmd).lines() {
            let f: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            if f[0] == 200.0 {
                curl_ms.push((f[1] - f[2]) * 1e3);
            }
        }
    }
    // Python's ssl client, keep-alive.
    let py = py_client(nginx.port, 20, &["/small.txt", "/notfound"]);
    assert_eq!(py.len(), 40);
    // wrk paced (see tests::fidelity::paced_wrk), then the access log.
    paced_wrk(agent.dir.path(), &https(&nginx, "/small.txt"));
    let log = assert_counts_match_access_log(&nginx, &agent, "web");
    let total = log.len() as f64;

    // Server durations against nginx's $request_time, and the scheme.
    let web_logs: Vec<_> = request_logs(&agent, "web")
        .into_iter()
        .filter(|v| field(v, "side") == "server")
        .collect();
    assert!(
        web_logs.iter().all(|v| field(v, "url_scheme") == "https"),
        "every server request log says url_scheme=https"
    );
    let agent_ms: Vec<f64> = web_logs
        .iter()
        .filter_map(|v| v["duration_ms"].as_f64())
        .collect();
    let nginx_ms: Vec<f64> = log.iter().map(|e| e.request_time_s * 1e3).collect();
    assert!(agent_ms.len() as f64 >= 0.999 * total);
    let (a50, a99) = (pct(&agent_ms, 0.5), pct(&agent_ms, 0.99));
    let (n50, n99) = (pct(&nginx_ms, 0.5), pct(&nginx_ms, 0.99));
    eprintln!("server ms: agent p50 {a50:.3} p99 {a99:.3}; nginx p50 {n50:.3} p99 {n99:.3}");
    assert!(agree(a50, n50), "p50 agent {a50} vs nginx {n50}");
    assert!(agree(a99, n99), "p99 agent {a99} vs nginx {n99}");

    // Client side: curl's requests as curl timed them, Python's by count.
    let agent_curl = client_ms(&agent, "curl", "/small.txt", curl_ms.len());
    assert_eq!(
        agent_curl.len(),
        curl_ms.len(),
        "curl's 200s as client spans"
    );
    let (c50, c99) = (pct(&curl_ms, 0.5), pct(&curl_ms, 0.99));
    let (g50, g99) = (pct(&agent_curl, 0.5), pct(&agent_curl, 0.99));
    eprintln!("client ms: agent p50 {g50:.3} p99 {g99:.3}; curl p50 {c50:.3} p99 {c99:.3}");
    assert!(agree(g50, c50), "client p50 agent {g50} vs curl {c50}");
    assert!(
        g99 <= c99 + f64::max(1.0, 0.05 * c99),
        "client p99 agent {g99} vs curl {c99}"
    );
    let py_seen = client_ms(&agent, "python3", "/notfound", 20).len();
    assert_eq!(py_seen, 20, "Python's 404s as client spans");
    assert!(t0.elapsed() < Duration::from_secs(90));
}

/// Node's `https` server and client (OpenSSL linked into /usr/bin/node).
const NODE_SERVER: &str = r#"
const https = require('https'), fs = require('fs');
const [port, cert, key] = process.argv.slice(1);
const codes = { '/tlsnode/ok': 200, '/tlsnode/missing': 404, '/tlsnode/fail': 503 };
https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
  req.resume();
  req.on('end', () => { res.writeHead(codes[req.url] || 400); res.end('x'.repeat(100)); });
}).listen(+port, '127.0.0.1', () => console.log('ready'));
"#;

const NODE_CLIENT: &str = r#"
const https = require('https');
const port = +process.argv[1], n = +process.argv[2];
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
const paths = ['/tlsnode/ok', '/tlsnode/missing', '/tlsnode/fail'];
const counts = {};
let i = 0;
function next() {
  if (i === n) { console.log(JSON.stringify(counts)); agent.destroy(); return; }
  const path = paths[i++ % paths.length];
  https.get({ host: '127.0.0.1', port, path, agent, rejectUnauthorized: false }, (res) => {
    res.resume();
    res.on('end', () => { counts[res.statusCode] = (counts[res.statusCode] || 0) + 1; next(); });
  }).on('error', (e) => { console.error(e); process.exit(1); });
}
next();
"#;

#[test]
fn node_https_server_and_client_with_static_openssl() {
    if !ready(&["node"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let port = tests::env::free_port();
    let mut server = Spawned::spawn({
        let mut c = Command::new("node");
        c.args(["-e", NODE_SERVER, &port.to_string()])
            .arg(&cert)
            .arg(&key);
        c
    })
    .expect("node server");
    assert_eq!(server.line().unwrap(), "ready");
    let rules = format!("    - name: nodeweb\n      port: {port}\n");
    let agent = Agent::start(&config(&rules, "")).expect("agent starts");
    let text = agent.scrape().unwrap();
    assert!(
        value(&text, "sloguard_tls_attached", &[("kind", "openssl")]).unwrap_or(0.0) >= 1.0,
        "node's OpenSSL attached: {}",
        agent.log()
    );
    let n = 90;
    let out =
        run(Command::new("node").args(["-e", NODE_CLIENT, &port.to_string(), &n.to_string()]));
    let counts: BTreeMap<String, f64> = serde_json::from_str(out.trim()).unwrap();
    let want: BTreeMap<u16, f64> = counts
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), *v))
        .collect();
    assert_eq!(
        want,
        BTreeMap::from([(200, 30.0), (404, 30.0), (503, 30.0)])
    );
    let text = settle(&agent, "nodeweb", n as f64, Duration::from_secs(20));
    losses(&text);
    let got = server_counts(&text, "nodeweb");
    eprintln!("node server: agent {got:?}, client saw {want:?}");
    assert_eq!(got, want, "server side per status");
    // The client side: node's requests, by status, on the routes used here.
    let mut client: BTreeMap<u16, f64> = BTreeMap::new();
    for code in [200u16, 404, 503] {
        // A path counts under /{unadmitted} until it earned its route.
        for route in [
            "/tlsnode/ok",
            "/tlsnode/missing",
            "/tlsnode/fail",
            "/{unadmitted}",
        ] {
            if let Some(v) = value(
                &text,
                CLIENT,
                &[
                    ("service_name", "node"),
                    ("http_route", route),
                    ("http_response_status_code", &code.to_string()),
                ],
            ) {
                *client.entry(code).or_default() += v;
            }
        }
    }
    assert_eq!(client, want, "client side per status");
}

#[test]
fn trace_context_sent_over_https_links_the_server_span() {
    if !ready(&["curl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let nginx = https_nginx(certs.path(), "");
    let rx = OtlpReceiver::start();
    let otlp = format!(
        "otlp:\n  endpoint: {}\n  protocol: grpc\n  root_sampling_ratio: 1.0\n",
        rx.endpoint()
    );
    let agent = Agent::start(&config(&web_rules(nginx.port), &otlp)).expect("agent starts");
    let cases = [
        (
            "/small.txt?tp",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
        (
            "/small.txt?b3",
            "80f198ee56343ba864fe8b2a57d3eff7",
            "e457b5a2e4d86bd1",
            "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".to_string(),
        ),
    ];
    for (path, _, _, header) in &cases {
        run(Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-H", header])
            .arg(https(&nginx, path)));
    }
    for (path, trace, parent, _) in &cases {
        let query = path.split_once('?').unwrap().1;
        let span = rx
            .wait_for(Duration::from_secs(20), |s| {
                s.kind == 2
                    && s.service == "web"
                    && s.attributes.get("url.query").map(String::as_str) == Some(query)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no server span for {path}: {:#?}\n{}",
                    rx.spans(),
                    agent.log()
                )
            });
        assert_eq!(&span.trace_id, trace, "{path}");
        assert_eq!(&span.parent_span_id, parent, "{path}");
        assert_eq!(span.attributes["url.scheme"], "https");
    }
}

/// One request, then "ready", then `n` more on the same connection after a
/// line on stdin.
const PY_LATE: &str = r#"
import http.client, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context(), timeout=10)
c.request("GET", "/late/before"); r = c.getresponse(); r.read()
print("ready", flush=True)
sys.stdin.readline()
for _ in range(n):
    c.request("GET", "/late/after"); r = c.getresponse(); r.read()
print("done", flush=True)
"#;

#[test]
fn keep_alive_tls_connection_opened_before_the_agent_is_seen() {
    if !ready(&["python3"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let nginx = https_nginx(
        certs.path(),
        "location /late/ { return 200 \"late\\n\"; }\nkeepalive_timeout 120s;\n",
    );
    let mut py = Command::new("python3")
        .args(["-c", PY_LATE, &nginx.port.to_string(), "25"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let agent = Agent::start(&config(&web_rules(nginx.port), "")).expect("agent starts");
    py.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(py.wait().unwrap().success());
    // The connection predates the agent, so its ports (and the port rule)
    // are unknown: nginx's side is found by its process name and the path.
    let t0 = Instant::now();
    let server = loop {
        let n = request_logs(&agent, "nginx")
            .iter()
            .filter(|v| field(v, "side") == "server" && field(v, "url_path") == "/late/after")
            .count();
        if n >= 25 || t0.elapsed() > Duration::from_secs(10) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(server, 25, "server side of the old connection");
    let client = client_ms(&agent, "python3", "/late/after", 25).len();
    assert_eq!(client, 25, "client side of the old connection");
}

/// The agent's uprobe and BPF link descriptors.
fn probe_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| {
                    let t = t.to_string_lossy();
                    t.contains("perf_event") || t.contains("bpf_link")
                })
                .count()
        })
        .unwrap_or(0)
}

fn attached(agent: &Agent) -> f64 {
    value(
        &agent.scrape().unwrap_or_default(),
        "sloguard_tls_attached",
        &[("kind", "openssl")],
    )
    .unwrap_or(-1.0)
}

/// Python with its own copy of libssl (a distinct inode, so its attachment
/// comes and goes with these processes only): import ssl, check the copy is
/// the one mapped, sleep, then `n` GETs on one connection.
const PY_COPY: &str = r#"
import http.client, ssl, sys, time
port, n, path, pause, lib = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
assert lib in open("/proc/self/maps").read(), "the libssl copy is not mapped"
time.sleep(pause)
c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context(), timeout=10)
for _ in range(n):
    c.request("GET", path); r = c.getresponse(); r.read()
"#;

#[test]
fn processes_started_later_are_attached_and_released_without_leaks() {
    if !ready(&["python3"]) {
        return;
    }
    let system = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    let certs = tempfile::tempdir().unwrap();
    let lib = certs.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(system, lib.join("libssl.so.3")).expect("copy libssl");
    let nginx = https_nginx(certs.path(), "location /life/ { return 200; }\n");
    let agent = Agent::start(&config(&web_rules(nginx.port), "")).expect("agent starts");
    let (base_attached, base_fds) = (attached(&agent), probe_fds(agent.pid()));
    let lib_path = lib.join("libssl.so.3").display().to_string();
    let py = |n: usize, path: &str, pause: &str| {
        let mut c = Command::new("python3");
        c.env("LD_LIBRARY_PATH", &lib)
            .args([
                "-c",
                PY_COPY,
                &nginx.port.to_string(),
                &n.to_string(),
                path,
                pause,
            ])
            .arg(&lib_path)
            .stdout(Stdio::null());
        c
    };
    // Started after the agent: its requests a second after start are seen.
    let st = py(10, "/life/first", "1.0").status().unwrap();
    assert!(st.success());
    let first = client_ms(&agent, "python3", "/life/first", 10).len();
    assert_eq!(first, 10, "client requests of a process started later");

    // 100 short-lived processes, 20 at a time, each sending its request a
    // second after it mapped libssl (the attach promise), then exiting.
    for _ in 0..5 {
        let mut kids: Vec<_> = (0..20)
            .map(|_| py(1, "/life/many", "1.0").spawn().unwrap())
            .collect();
        for k in &mut kids {
            assert!(k.wait().unwrap().success());
        }
    }
    let t0 = Instant::now();
    let (mut a, mut fds) = (attached(&agent), probe_fds(agent.pid()));
    // At most the baseline: a process that had libssl mapped when the agent
    // started (another test's peer on a shared host) may exit meanwhile; a
    // leak of this copy's attachment shows as more.
    while (a > base_attached || fds > base_fds) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        (a, fds) = (attached(&agent), probe_fds(agent.pid()));
    }
    let many = client_ms(&agent, "python3", "/life/many", 100).len();
    eprintln!(
        "attached {base_attached} -> {a}, probe fds {base_fds} -> {fds}, short-lived requests seen {many}/100"
    );
    assert!(
        a <= base_attached,
        "attachments released: {base_attached} -> {a}"
    );
    assert!(
        fds <= base_fds,
        "no uprobe link left behind: {base_fds} -> {fds}"
    );
    assert!(agent.log().contains("TLS uprobes detached"));
    assert!(many >= 99, "requests of short-lived processes: {many}/100");
}

/// Bytes sent inside a TLS connection as they are (no HTTP framing).
const PY_RAW: &str = r#"
import socket, ssl, sys
port, kind = int(sys.argv[1]), sys.argv[2]
ctx = ssl._create_unverified_context()
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
if kind == "h2":
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
else:
    import random
    random.seed(7)
    s.sendall(bytes(random.randrange(256) for _ in range(4096)))
try:
    while s.recv(4096): pass
except Exception:
    pass
"#;

#[test]
fn garbage_http2_and_a_large_body_inside_tls() {
    if !ready(&["python3", "curl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    // The upload is proxied to a plain server, so nginx reads the whole
    // body before it answers (a bare `return` answers first and discards
    // the body afterwards).
    let sink = tests::env::free_port();
    let nginx = https_nginx_with(
        certs.path(),
        &format!(
            "location = /upload {{ client_max_body_size 4m; client_body_buffer_size 2m; proxy_pass http://127.0.0.1:{sink}/sink; }}\n"
        ),
        &format!(
            "server {{ listen 127.0.0.1:{sink}; location / {{ return 200 \"stored\\n\"; }} }}"
        ),
    );
    let mut agent = Agent::start(&config(&web_rules(nginx.port), "")).expect("agent starts");
    let before = agent.scrape().unwrap();
    let not_http = |t: &str| {
        value(
            t,
            "sloguard_probe_events_total",
            &[("event", "tls_not_http_connections")],
        )
        .unwrap_or(0.0)
    };
    for kind in ["garbage", "h2"] {
        run(Command::new("python3").args(["-c", PY_RAW, &nginx.port.to_string(), kind]));
    }
    // 1 MiB request body over TLS.
    let body = certs.path().join("body.bin");
    std::fs::write(&body, vec![b'b'; 1 << 20]).unwrap();
    let code = run(Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(https(&nginx, "/upload")));
    assert_eq!(code, "200");
    let t0 = Instant::now();
    let upload = loop {
        let u: Vec<_> = request_logs(&agent, "web")
            .into_iter()
            .filter(|v| field(v, "side") == "server" && field(v, "url_path") == "/upload")
            .collect();
        if !u.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break u;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(upload.len(), 1, "the 1 MiB upload: {}", agent.log());
    assert_eq!(upload[0]["http_response_status_code"], 200);
    let req_bytes = upload[0]["request_bytes"].as_u64().unwrap_or(0);
    let logged = nginx
        .access_log()
        .unwrap()
        .into_iter()
        .find(|e| e.request.starts_with("POST /upload "))
        .expect("nginx logged the upload");
    assert_eq!(logged.status, 200);
    assert!(req_bytes > 1 << 20, "request bytes {req_bytes}");
    assert_eq!(
        req_bytes, logged.request_length,
        "request bytes as nginx counted them"
    );
    // Kernel counters reach /metrics once a second. The garbage connection
    // is not HTTP; the one starting with the HTTP/2 preface is HTTP/2 (ALPN
    // h2), each seen from the client and from nginx.
    let h2 = |t: &str| {
        value(
            t,
            "sloguard_probe_events_total",
            &[("event", "http2_connections")],
        )
        .unwrap_or(0.0)
    };
    let text = agent.scrape_until(Duration::from_secs(5), |t| {
        not_http(t) - not_http(&before) >= 2.0 && h2(t) - h2(&before) >= 2.0
    });
    let after = text;
    let d = not_http(&after) - not_http(&before);
    let d2 = h2(&after) - h2(&before);
    eprintln!("TLS connections whose plaintext is not HTTP: +{d}, HTTP/2 connections: +{d2}");
    assert!(d >= 2.0, "garbage inside TLS counted: +{d}");
    assert!(d2 >= 2.0, "HTTP/2 inside TLS recognised: +{d2}");
    assert!(agent.try_wait().is_none(), "agent alive: {}", agent.log());
    let ok = py_client(nginx.port, 1, &["/small.txt"]);
    assert_eq!(ok, [200]);
}

/// One or two garbage TLS connections (nginx answers 400 and closes them),
/// then a fresh HTTPS connection carrying one GET, `n` times.
const PY_REUSE: &str = r#"
import http.client, socket, ssl, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl._create_unverified_context()
def garbage():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
    try:
        while s.recv(4096): pass
    except Exception:
        pass
    s.close()
    # Let nginx free the old socket first, so the next one may get its address.
    time.sleep(0.02)
for i in range(n):
    # One or two: nginx cycles through freed addresses, and the good
    # connection must land on the garbage one's pair now and then.
    for _ in range(1 + i % 2):
        garbage()
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    c.request("GET", "/small.txt")
    r = c.getresponse(); r.read()
    print(r.status)
    c.close()
"#;

/// nginx frees a connection's `SSL*` and socket and hands the same addresses
/// to the next connection: a not-HTTP verdict of the old connection must not
/// silence the new one (seen in CI: a whole HTTPS request went unseen).
#[test]
fn a_not_http_tls_connection_does_not_silence_the_next_one_at_its_addresses() {
    if !ready(&["python3"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let nginx = https_nginx(certs.path(), "");
    let mut agent = Agent::start(&config(&web_rules(nginx.port), "")).expect("agent starts");
    let n = 30;
    let out = run(Command::new("python3").args([
        "-c",
        PY_REUSE,
        &nginx.port.to_string(),
        &n.to_string(),
    ]));
    assert_eq!(
        out.lines().filter(|l| l.trim() == "200").count(),
        n,
        "{out}"
    );
    let logged = nginx
        .access_log()
        .unwrap()
        .iter()
        .filter(|e| e.request.starts_with("GET /small.txt "))
        .count();
    assert_eq!(logged, n, "nginx's own count");
    let t0 = Instant::now();
    let seen = loop {
        let seen = request_logs(&agent, "web")
            .iter()
            .filter(|v| field(v, "side") == "server" && field(v, "url_path") == "/small.txt")
            .count();
        if seen >= n || t0.elapsed() > Duration::from_secs(10) {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        seen,
        n,
        "server-side requests the agent saw: {}",
        agent.log()
    );
    assert!(agent.try_wait().is_none(), "agent alive");
}
