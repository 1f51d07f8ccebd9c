//! The dashboard and the rules against what the agent really exports: a real
//! agent watches HTTP load on a loopback nginx and connects to a closed port,
//! a real Prometheus scrapes it every second with sloguard's rules loaded, and
//! every panel and rule query runs through Prometheus's HTTP API: each parses,
//! and the main panels return data.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::agent::Agent;
use tests::nginx::{Nginx, NginxOptions};
use tests::{dashboard, env, loopback, tools};

use super::deploy_dir;

/// Panels that must show data once the agent has seen HTTP and TCP traffic.
const MAIN_PANELS: &[&str] = &[
    "Requests per second",
    "5xx error ratio",
    "P99 latency vs SLO target",
    "Latency percentiles",
    "Requests by status code",
    "Connect latency P99",
    "Failed connects",
    "Agents up",
    "Versions",
    "Kernel events per second",
    "Agent CPU",
    "Agent memory (RSS)",
];

/// One `GET path` on a fresh connection (so each request is also a connect).
fn get(addr: SocketAddr, path: &str) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sloguard.test\r\nConnection: close\r\n\r\n"
    );
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// Bounded load: `secs` of requests, one in ten a 5xx, plus a refused
/// connect every tenth round.
fn load(nginx: SocketAddr, closed: SocketAddr, secs: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < end && n < 100_000 {
        get(nginx, if n % 10 == 9 { "/fail" } else { "/api/items" });
        if n.is_multiple_of(10) {
            let _ = TcpStream::connect_timeout(&closed, Duration::from_millis(200));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    n
}

fn query(prom: SocketAddr, promql: &str) -> (u16, Value, String) {
    let path = format!("/api/v1/query?query={}", loopback::urlencode(promql));
    let (code, body) = loopback::http(prom, "GET", &path, None).expect("query Prometheus");
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        body,
    )
}

fn result_len(v: &Value) -> usize {
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

#[test]
fn dashboard_and_rules_return_data_from_a_live_agent() {
    let test = "dashboard_and_rules_return_data_from_a_live_agent";
    if !env::require_kernel() {
        return;
    }
    let Some(binary) = tools::require(test, "prometheus", "apt-get install prometheus") else {
        return;
    };
    if tools::require(test, "nginx", "apt-get install nginx").is_none() {
        return;
    }
    let t0 = Instant::now();
    let nginx = Nginx::start(&NginxOptions {
        access_log: false,
        server_extra: "location /api/ { return 200 \"ok\\n\"; }\n\
                       location /fail { return 503 \"down\\n\"; }"
            .into(),
        ..Default::default()
    })
    .expect("nginx starts");
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let closed: SocketAddr = ([127, 0, 0, 1], env::free_port()).into();
    // Short SLO periods so the per-period gauges appear within the test.
    let agent = Agent::start("slo:\n  period: 2s\n  min_requests: 5\n  min_errors: 1\n")
        .expect("agent starts");

    let tmp = tempfile::tempdir().unwrap();
    let prom = super::prometheus_with_rules(&binary, tmp.path(), Some(agent.metrics));
    let rules = super::rules_file();

    let sent = load(nginx_addr, closed, 8);
    assert!(sent > 100, "only {sent} requests sent");

    // Enough scrapes after the load for rate() over the load's samples.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v, _) = query(
            prom.addr,
            "count_over_time(up{job=\"sloguard\"}[1m]) >= 10 \
             and on() count(http_server_request_duration_seconds_count) > 0",
        );
        if result_len(&v) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no HTTP series from the agent; last scrape:\n{}\nagent log:\n{}",
            agent.scrape().unwrap_or_default(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let dash = deploy_dir().join("grafana/sloguard-dashboard.json");
    let queries = super::dashboard_and_rule_queries(&dash, &rules);

    let mut empty_main = Vec::new();
    let mut with_data = 0;
    for (title, expr) in &queries {
        let promql = dashboard::to_promql(expr);
        let (code, v, body) = query(prom.addr, &promql);
        assert!(
            code == 200 && v["status"] == "success",
            "{title:?}: {promql}\n→ {code} {body}"
        );
        if result_len(&v) > 0 {
            with_data += 1;
        } else if MAIN_PANELS.contains(&title.as_str()) || title.starts_with("variable ") {
            empty_main.push(format!("{title}: {promql}"));
        }
    }
    assert!(
        empty_main.is_empty(),
        "main panels without data:\n{}\nscrape:\n{}",
        empty_main.join("\n"),
        agent.scrape().unwrap_or_default()
    );
    // The route recording rules see the merged histograms too.
    let (_, v, body) = query(
        prom.addr,
        "route:http_server_request_duration_seconds:p99_5m",
    );
    assert!(result_len(&v) > 0, "no recorded route P99: {body}");
    eprintln!(
        "{with_data} of {} queries returned data; {sent} requests; {:?}",
        queries.len(),
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}
