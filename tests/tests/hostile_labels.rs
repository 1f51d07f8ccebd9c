//! Hostile requests from any client to a traced server must not break the
//! node's `/metrics`: raw-socket requests whose targets hold `"`, `\`,
//! `{`/`}`, non-UTF-8 bytes, and methods with odd bytes, sent to Python's
//! http.server on the real kernel. Then the whole scrape passes
//! `promtool check metrics`, the OpenMetrics scrape is read by a real parser
//! (Python prometheus_client) with the very route values, and a real
//! Prometheus scrapes the agent (`up == 1`) and finds each hostile series by
//! an exact-match query.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::agent::Agent;
use tests::env::{require_kernel, require_tool};
use tests::loopback;
use tests::pyserver::PyServer;
use tests::tools;

/// The service is named by a config rule whose name is hostile too.
const SERVICE: &str = "py\"shop\\x";
/// Routes as the agent keeps them (the id heuristic leaves these segments).
const ROUTES: [&str; 4] = ["/a\"b", "/a\\b", "/a}b{c", "/q\"s\\t}{"];
const SERVER: &str = "http_server_request_duration_seconds_count";

/// The `http_route` the agent gives a hostile target: braces a client sent
/// are written `%7B`/`%7D`, since in a route they mean a placeholder.
fn route_label(target: &str) -> String {
    target.replace('{', "%7B").replace('}', "%7D")
}

/// One request as raw bytes; the answer is read and dropped.
fn send_raw(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(bytes);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

fn request(method: &[u8], target: &[u8]) -> Vec<u8> {
    [
        method,
        b" ",
        target,
        b" HTTP/1.1\r\nHost: hostile\r\nConnection: close\r\n\r\n",
    ]
    .concat()
}

fn hostile_traffic(port: u16) {
    for route in ROUTES {
        send_raw(port, &request(b"GET", route.as_bytes()));
    }
    // Not UTF-8, a method with a quote, a backslash and a brace, a method
    // of high bytes, an unknown method, a newline inside a header value.
    send_raw(port, &request(b"GET", b"/caf\xe9/\xff\xfe"));
    send_raw(port, &request(b"G\"T", b"/m1"));
    send_raw(port, &request(b"GE\\T{", b"/m2"));
    send_raw(port, &request(b"\xc3\x28T", b"/m3"));
    send_raw(port, &request(b"PROPFIND", b"/m4"));
    send_raw(
        port,
        b"GET /h HTTP/1.1\r\nHost: x\r\nX-Gray-Tag: a\"b\\c\r\nConnection: close\r\n\r\n",
    );
}

/// PromQL string literal (double quotes, backslash escapes).
fn promql_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn query(prom: SocketAddr, promql: &str) -> Value {
    let path = format!("/api/v1/query?query={}", loopback::urlencode(promql));
    let (code, body) = loopback::http(prom, "GET", &path, None).expect("query Prometheus");
    assert_eq!(code, 200, "{promql}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn results(v: &Value) -> usize {
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

#[test]
fn hostile_requests_leave_metrics_parseable_by_promtool_a_parser_and_prometheus() {
    let test = "hostile_requests_leave_metrics_parseable_by_promtool_a_parser_and_prometheus";
    if !require_kernel() || !require_tool("python3") || !require_tool("promtool") {
        return;
    }
    let Some(prometheus) = tools::require(test, "prometheus", "apt-get install prometheus") else {
        return;
    };
    let t0 = Instant::now();
    let srv = PyServer::start(&["ok.txt"]);
    let agent = Agent::start(&format!(
        // One request per path: admit at first sight (admission has its own tests).
        "routes:\n  admit_after: 1\nservices:\n  rules:\n    - name: '{SERVICE}'\n      process: \"python3*\"\n      port: {}\n",
        srv.port
    ))
    .expect("agent starts");
    hostile_traffic(srv.port);

    let svc = SERVICE.replace('\\', "\\\\").replace('"', "\\\"");
    let want: Vec<String> = ROUTES
        .iter()
        .map(|r| {
            let r = route_label(r);
            let r = r.replace('\\', "\\\\").replace('"', "\\\"");
            format!(
                "{SERVER}{{service_name=\"{svc}\",http_request_method=\"GET\",http_route=\"{r}\","
            )
        })
        .collect();
    let text = agent.scrape_until(Duration::from_secs(20), |t| {
        want.iter().all(|w| t.contains(w.as_str()))
    });
    for w in &want {
        assert!(text.contains(w.as_str()), "missing {w}\n{text}");
    }

    // 1. promtool on the whole Prometheus-text scrape.
    if let Some(verdict) = sloguard::export::metrics::lint::check(&text) {
        verdict.unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    }

    // 2. The OpenMetrics scrape through a real parser: the very values.
    let om = agent.scrape_openmetrics().expect("OpenMetrics scrape");
    if let Some(samples) = sloguard::export::metrics::lint::assert_openmetrics_parses(&om) {
        for route in ROUTES {
            let label = route_label(route);
            assert!(
                samples.iter().any(|s| s.name == SERVER
                    && s.labels.get("http_route") == Some(&label)
                    && s.labels.get("service_name").map(String::as_str) == Some(SERVICE)),
                "{route:?} not read back from OpenMetrics"
            );
        }
        // Methods are normalised: the odd ones are `_OTHER`, never raw.
        for s in samples.iter().filter(|s| s.name == SERVER) {
            let m = s
                .labels
                .get("http_request_method")
                .map_or("", String::as_str);
            assert!(
                m.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{m:?}"
            );
        }
    }

    // 3. A real Prometheus scrapes the agent (OpenMetrics first, as it asks).
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sloguard\n    static_configs:\n      - targets: ['{}']\n",
            agent.metrics
        ),
    )
    .unwrap();
    let prom = loopback::prometheus(&prometheus, &config, &tmp.path().join("data"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let exact = |route: &str| {
        format!(
            "{SERVER}{{service_name={},http_route={}}}",
            promql_str(SERVICE),
            promql_str(route)
        )
    };
    loop {
        let up = query(prom.addr, "up{job=\"sloguard\"} == 1");
        let found = ROUTES
            .iter()
            .filter(|r| results(&query(prom.addr, &exact(&route_label(r)))) > 0)
            .count();
        if results(&up) == 1 && found == ROUTES.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "up: {up}\n{found} of {} hostile series found\ntargets: {}",
            ROUTES.len(),
            loopback::http(prom.addr, "GET", "/api/v1/targets", None)
                .map(|r| r.1)
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("hostile labels: all checks passed in {:?}", t0.elapsed());
    drop(srv);
}
