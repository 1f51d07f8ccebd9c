//! The demo's traffic: a paced keep-alive load generator through the gateway,
//! the webhook receiver that hands alerts to the timeline, and a scrape of the
//! agent's fuse state. Plain std sockets: every loop is bounded by a stop flag
//! and socket timeouts.
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::peers::FUSED_BODY;

/// Responses of one path, by outcome.
#[derive(Default)]
pub struct PathCounters {
    pub ok: AtomicU64,
    /// 5xx from the service (through the gateway).
    pub failed: AtomicU64,
    /// 503 with the fused body: the gateway answered itself.
    pub fused: AtomicU64,
    /// Connection errors and other statuses.
    pub other: AtomicU64,
}

impl PathCounters {
    pub fn total(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.fused.load(Ordering::Relaxed)
            + self.other.load(Ordering::Relaxed)
    }
}

/// Threads per path, each pacing itself to `per_thread_rps`.
pub struct Load {
    pub counters: Vec<(&'static str, Arc<PathCounters>)>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(
        port: u16,
        paths: &[&'static str],
        threads_per_path: usize,
        per_thread_rps: f64,
        stop: &Arc<AtomicBool>,
    ) -> Self {
        let mut counters = Vec::new();
        let mut threads = Vec::new();
        let gap = Duration::from_secs_f64(1.0 / per_thread_rps);
        for &path in paths {
            let c = Arc::new(PathCounters::default());
            counters.push((path, c.clone()));
            for _ in 0..threads_per_path {
                let (c, stop) = (c.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    client_loop(port, path, gap, &c, &stop)
                }));
            }
        }
        Self { counters, threads }
    }

    pub fn counters_of(&self, path: &str) -> Option<&PathCounters> {
        self.counters
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, c)| &**c)
    }

    pub fn total(&self) -> u64 {
        self.counters.iter().map(|(_, c)| c.total()).sum()
    }

    /// Joins the threads; the caller has set the stop flag.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn client_loop(port: u16, path: &str, gap: Duration, c: &PathCounters, stop: &AtomicBool) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(Duration::from_millis(200)));
            continue;
        }
        // A slow response delays the next request rather than bunching them up.
        next = next.max(now - gap) + gap;
        if conn.is_none() {
            conn = connect(port).ok().map(BufReader::new);
        }
        let Some(r) = conn.as_mut() else {
            c.other.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        match exchange(r, path) {
            Ok((status, body, keep)) => {
                let counter = match status {
                    503 if body == FUSED_BODY.as_bytes() => &c.fused,
                    200..=299 => &c.ok,
                    500..=599 => &c.failed,
                    _ => &c.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                c.other.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One GET on a keep-alive connection: (status, body, connection reusable).
fn exchange(r: &mut BufReader<TcpStream>, path: &str) -> Result<(u16, Vec<u8>, bool)> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: shop.demo\r\nUser-Agent: sloguard-demo\r\n\r\n");
    r.get_mut().write_all(req.as_bytes())?;
    let head = read_head(r)?;
    let resp = parse_head(&head)?;
    let mut body = vec![0; resp.content_length];
    r.read_exact(&mut body)?;
    Ok((resp.status, body, !resp.close))
}

/// Reads header lines up to the blank line (at most 64 lines of 8 KiB).
fn read_head(r: &mut BufReader<TcpStream>) -> Result<String> {
    let mut head = String::new();
    for _ in 0..64 {
        let mut line = String::new();
        let n = r.by_ref().take(8192).read_line(&mut line)?;
        if n == 0 {
            bail!("connection closed");
        }
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
    bail!("response head too long")
}

#[derive(Debug, PartialEq)]
pub struct Head {
    pub status: u16,
    pub content_length: usize,
    pub close: bool,
}

/// Status line and the headers the demo needs; no body length means an empty body
/// (nginx and the shop always send one).
pub fn parse_head(head: &str) -> Result<Head> {
    let mut lines = head.lines();
    let status_line = lines.next().context("empty response")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut h = Head {
        status,
        content_length: 0,
        close: status_line.starts_with("HTTP/1.0"),
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            h.content_length = v.parse().with_context(|| format!("bad length {v:?}"))?;
            // The agent's /metrics is the largest body read here; on a busy
            // host (every process's HTTP is traced) it runs to megabytes.
            if h.content_length > 64 << 20 {
                bail!("body of {} bytes is not a demo response", h.content_length);
            }
        } else if k.eq_ignore_ascii_case("connection") {
            h.close = v.eq_ignore_ascii_case("close");
        }
    }
    Ok(h)
}

/// One alert as the webhook receiver saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedAlert {
    pub at: Instant,
    pub status: String,
    pub alertname: String,
    pub service: String,
    pub method: String,
    pub route: String,
    pub diagnosis: String,
    pub summary: String,
    /// The request snapshots frozen with the alert (L2, gray rollback).
    pub snapshot_id: String,
}

/// The alerts of one Alertmanager webhook v4 message.
pub fn parse_webhook(body: &[u8], at: Instant) -> Result<Vec<ReceivedAlert>> {
    let v: serde_json::Value = serde_json::from_slice(body).context("webhook body is not JSON")?;
    if v["version"] != "4" {
        bail!("webhook version {} is not \"4\"", v["version"]);
    }
    let alerts = v["alerts"].as_array().context("webhook without alerts")?;
    let s = |a: &serde_json::Value| a.as_str().unwrap_or_default().to_string();
    Ok(alerts
        .iter()
        .map(|a| ReceivedAlert {
            at,
            status: s(&a["status"]),
            alertname: s(&a["labels"]["alertname"]),
            service: s(&a["labels"]["service_name"]),
            method: s(&a["labels"]["http_request_method"]),
            route: s(&a["labels"]["http_route"]),
            diagnosis: s(&a["annotations"]["diagnosis"]),
            summary: s(&a["annotations"]["summary"]),
            snapshot_id: s(&a["annotations"]["snapshot_id"]),
        })
        .collect())
}

/// Accepts webhook POSTs until `stop`; each message's alerts go to `tx`, a bad
/// one is reported as an error line.
pub fn webhook_receiver(
    listener: TcpListener,
    tx: Sender<Result<Vec<ReceivedAlert>, String>>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = tx.send(serve_webhook(s).map_err(|e| format!("{e:#}")));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }))
}

fn serve_webhook(s: TcpStream) -> Result<Vec<ReceivedAlert>> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .context("webhook without Content-Length")?;
    if len > 1 << 20 {
        bail!("webhook body of {len} bytes");
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let at = Instant::now();
    r.get_mut()
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    parse_webhook(&body, at)
}

/// Plain GET on loopback returning (status, body), for the agent's endpoints.
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let s = connect(port)?;
    let mut r = BufReader::new(s);
    // HTTP/1.0: no chunked body, the server closes after it (a scrape has no length).
    r.get_mut()
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let head = read_head(&mut r)?;
    let status = parse_head(&head)?.status;
    let mut body = Vec::new();
    r.take(64 << 20).read_to_end(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `(service, method, route) -> state` from `sloguard_fuse_state` series with value 1.
pub fn fuse_states(metrics: &str) -> BTreeMap<(String, String, String), String> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("sloguard_fuse_state{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        if value.trim().parse::<f64>() != Ok(1.0) {
            continue;
        }
        let l = |k: &str| label(labels, k).unwrap_or_default();
        out.insert(
            (l("service_name"), l("http_request_method"), l("http_route")),
            l("state"),
        );
    }
    out
}

/// A label's value from a Prometheus label list (values without escaped quotes,
/// as the demo's are).
fn label(labels: &str, key: &str) -> Option<String> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_parse_and_bad_ones_fail() {
        let h =
            parse_head("HTTP/1.1 503 Service Temporarily Unavailable\r\nContent-Length: 14\r\n")
                .unwrap();
        assert_eq!(
            h,
            Head {
                status: 503,
                content_length: 14,
                close: false
            }
        );
        assert!(
            parse_head("HTTP/1.1 200 OK\r\nconnection: close\r\n")
                .unwrap()
                .close
        );
        assert!(parse_head("HTTP/1.1 abc\r\n").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nContent-Length: x\r\n").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n").is_err());
    }

    #[test]
    fn webhook_v4_alerts_are_read() {
        let body = br#"{"version":"4","status":"firing","alerts":[{"status":"firing",
            "labels":{"alertname":"SloguardP99SpikeWith5xxBurst","service_name":"shop",
            "http_request_method":"GET","http_route":"/api/orders"},
            "annotations":{"diagnosis":"TCP clean","summary":"P99 spike"}}]}"#;
        let at = Instant::now();
        let a = parse_webhook(body, at).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].alertname, "SloguardP99SpikeWith5xxBurst");
        assert_eq!(a[0].route, "/api/orders");
        assert_eq!(a[0].diagnosis, "TCP clean");
        assert!(parse_webhook(b"{}", at).is_err());
        assert!(parse_webhook(b"nope", at).is_err());
    }

    #[test]
    fn fuse_states_take_the_series_at_one() {
        let text = r#"# TYPE sloguard_fuse_state gauge
sloguard_fuse_state{service_name="shop",http_request_method="GET",http_route="/api/orders",state="closed"} 0
sloguard_fuse_state{service_name="shop",http_request_method="GET",http_route="/api/orders",state="open"} 1
sloguard_fuse_state{service_name="shop",http_request_method="GET",http_route="/api/orders",state="half_open"} 0
sloguard_route_requests{service_name="shop"} 1
"#;
        let s = fuse_states(text);
        let key = ("shop".into(), "GET".into(), "/api/orders".into());
        assert_eq!(s.get(&key).map(String::as_str), Some("open"));
        assert_eq!(s.len(), 1);
    }
}
