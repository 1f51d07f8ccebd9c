//! Gray cohorts on the real kernel, with no gray configuration at all: a
//! canary cohort that fails and slows raises the gray rollback alert naming
//! its dimensions while stable traffic stays healthy; the same tag written
//! two ways (header or query) is one cohort; hostile tags stay bounded and
//! leave `/metrics` parseable.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tests::agent::Agent;
use tests::env;
use tests::prom::value;
use tests::shop::{Fault, Shop};
use tests::webhook::{client, firing, receiver, wait};

/// A shop whose canary fails half its requests and takes 300 ms.
fn shop() -> Shop {
    Shop::start(Fault::GrayVersion("canary".into()))
}

fn config(port: u16, extra: &str) -> String {
    format!(
        r#"
services:
  rules:
    - name: gray-shop
      port: {port}
routes:
  patterns:
    - pattern: /api/items/{{id}}
slo:
  period: 1s
  min_requests: 5
  min_errors: 2
  gray_p99: 200ms
  gray_periods: 3
  resolve_after_periods: 2
{extra}"#
    )
}

#[test]
fn canary_cohort_trips_rollback_without_gray_configuration() {
    if !env::require_kernel() || !env::require(env::has_program("python3"), "python3") {
        return;
    }
    let shop = shop();
    let (hook, received) = receiver();
    let yaml = config(
        shop.addr.port(),
        &format!("alerts:\n  webhooks:\n    - name: e2e\n      url: http://{hook}/hook\n"),
    );
    let agent = Agent::start(&yaml).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let canary = "version:canary,zone:bj";
    let plan: Vec<(&str, Vec<String>, u64)> = vec![
        // Stable traffic, untagged.
        ("/api/items/1", vec![], 50),
        ("/api/items/2", vec![], 50),
        // The canary written three ways: one cohort.
        ("/api/items/3", vec![format!("X-Gray-Tag: {canary}")], 100),
        (
            "/api/items/4",
            vec!["x-gray-tag:  zone:bj , Version:canary".into()],
            100,
        ),
        (
            "/api/items/5?gray=zone%3Abj%2Cversion%3Acanary",
            vec![],
            100,
        ),
        // Header and query disagree on `version`: the header wins.
        (
            "/api/items/6?gray=version:canary",
            vec!["X-Gray-Tag: version:stable".into()],
            100,
        ),
    ];
    let clients: Vec<_> = plan
        .into_iter()
        .map(|(path, headers, ms)| {
            let (stop, addr) = (stop.clone(), shop.addr);
            let path = path.to_string();
            std::thread::spawn(move || client(addr, path, headers, Duration::from_millis(ms), stop))
        })
        .collect();
    let alert = wait(Duration::from_secs(30), || {
        firing(&received, "SloguardGrayRollback", |_| true)
    });
    let text = agent.scrape().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (_, payload) = alert.unwrap_or_else(|| panic!("no gray rollback alert: {}", agent.log()));
    let a = &payload["alerts"][0];
    assert_eq!(a["labels"]["gray_tag"], canary, "{payload}");
    assert_eq!(a["labels"]["service_name"], "gray-shop");
    assert_eq!(a["labels"]["http_route"], "/api/items/{id}");
    let summary = a["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("version=canary, zone=bj"), "{payload}");
    // Stable traffic and the header-won cohort never alerted.
    for (_, v) in received.lock().unwrap().iter() {
        for a in v["alerts"].as_array().into_iter().flatten() {
            assert_eq!(
                a["labels"]["gray_tag"], canary,
                "only the canary alerts: {v}"
            );
        }
    }
    // One series per cohort, whichever way it was written.
    let count = |gray: &str| {
        value(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("service_name", "gray-shop"),
                ("gray_tag", gray),
                ("http_response_status_code", "200"),
            ],
        )
        .unwrap_or(0.0)
    };
    assert!(count(canary) > 0.0, "{text}");
    assert!(
        count("version:stable") > 0.0,
        "header wins over query: {text}"
    );
    assert!(count("") > 0.0, "stable traffic: {text}");
    let series_for = |needle: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("http_server_request_duration_seconds_count")
                    && l.contains("gray-shop")
                    && l.contains(needle)
            })
            .count()
    };
    assert_eq!(
        series_for("zone:bj , "),
        0,
        "un-normalised spelling: {text}"
    );
    assert_eq!(series_for("gray_tag=\"other\""), 0, "{text}");
}

/// Sends raw requests on one keep-alive connection, reading each response.
fn send_all(addr: SocketAddr, heads: impl Iterator<Item = Vec<u8>>) -> usize {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut answered = 0;
    for head in heads {
        w.write_all(&head).unwrap();
        let mut line = String::new();
        let mut len = 0;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return answered;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        answered += 1;
    }
    answered
}

#[test]
fn hostile_gray_tags_stay_bounded_and_metrics_parse() {
    if !env::require_kernel() || !env::require(env::has_program("python3"), "python3") {
        return;
    }
    let shop = shop();
    let agent = Agent::start(&config(shop.addr.port(), "")).unwrap();
    let get = |path: &str, tag: &[u8]| {
        let mut h = format!("GET {path} HTTP/1.1\r\nHost: e2e\r\nX-Gray-Tag: ").into_bytes();
        h.extend_from_slice(tag);
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    let hostile: Vec<Vec<u8>> = vec![
        get("/api/items/1", br#"q:"quoted""#),
        get("/api/items/1", br"b:back\slash\"),
        get("/api/items/1", b"c:{braces}"),
        get(
            "/api/items/1",
            format!("big:{}", "x".repeat(10_000)).as_bytes(),
        ),
        get("/api/items/1?gray=nl%0Aline", b""),
    ];
    assert_eq!(send_all(shop.addr, hostile.into_iter()), 5);
    // 10 000 distinct tags on one route.
    let n = 10_000;
    let sent = send_all(
        shop.addr,
        (0..n).map(|i| get("/api/items/2", format!("user:{i}").as_bytes())),
    );
    assert_eq!(sent, n);
    let text = agent.scrape_until(Duration::from_secs(20), |t| {
        let other = |reason| {
            value(
                t,
                "sloguard_route_gray_other_requests_total",
                &[("reason", reason)],
            )
            .unwrap_or(0.0)
        };
        other("route_cap") + other("invalid") >= (n - 4 + 2) as f64
    });
    let other = |reason| {
        value(
            &text,
            "sloguard_route_gray_other_requests_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    // The empty header plus a query newline, and the 10 kB value: invalid.
    assert!(other("invalid") >= 2.0, "{text}");
    assert!(other("route_cap") >= (n - 4) as f64, "{text}");
    // The route keeps at most 4 learned cohorts plus `other`.
    let cohorts: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_count{") && l.contains("gray-shop")
        })
        .filter(|l| l.contains("http_route=\"/api/items/{id}\""))
        .filter_map(|l| l.split("gray_tag=\"").nth(1))
        .collect();
    assert!(
        cohorts.len() <= 4 + 1 + 1,
        "learned cohorts beyond the cap: {cohorts:?}"
    );
    match sloguard::export::metrics::lint::check(&text) {
        Some(verdict) => verdict.expect("promtool check metrics"),
        None => assert!(std::env::var_os("CI").is_none(), "promtool missing in CI"),
    }
}
