//! A webhook receiver that records every JSON body it is sent, a keep-alive
//! HTTP/1.1 client that repeats one request at a steady rate, and a bounded
//! wait: the pieces of the end-to-end alerting tests.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bodies received, with their arrival time.
pub type Log = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A webhook receiver on 127.0.0.1 (keep-alive, one thread per connection).
pub fn receiver() -> (SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let out = log.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || serve_hook(s, log));
        }
    });
    (addr, out)
}

fn serve_hook(s: TcpStream, log: Log) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice(&body) {
            log.lock().unwrap().push((Instant::now(), v));
        }
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
}

/// The first firing alert named `alertname` that `pick` accepts.
pub fn firing(
    log: &Log,
    alertname: &str,
    pick: impl Fn(&Value) -> bool,
) -> Option<(Instant, Value)> {
    log.lock().unwrap().iter().find_map(|(t, v)| {
        let a = &v["alerts"][0];
        (v["status"] == "firing" && a["labels"]["alertname"] == alertname && pick(a))
            .then(|| (*t, v.clone()))
    })
}

/// Keep-alive GETs of `path` with `headers` (`Name: value` lines) every
/// `every` until `stop`, for 80 s at most.
pub fn client(
    addr: SocketAddr,
    path: String,
    headers: Vec<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
) {
    let deadline = Instant::now() + Duration::from_secs(80);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: e2e\r\n");
    for h in &headers {
        req += h;
        req += "\r\n";
    }
    req += "\r\n";
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok(s) = TcpStream::connect(addr) else {
            std::thread::sleep(every);
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let t = Instant::now();
            if w.write_all(req.as_bytes()).is_err() {
                break;
            }
            let mut line = String::new();
            let mut len = 0;
            let mut ok = true;
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    ok = false;
                    break;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.strip_prefix("Content-Length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if !ok || r.read_exact(&mut body).is_err() {
                break;
            }
            std::thread::sleep(every.saturating_sub(t.elapsed()));
        }
    }
}

/// Polls `f` every 20 ms until it gives a value or `timeout` passes.
pub fn wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
