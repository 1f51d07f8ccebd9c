//! End to end on the real kernel: curl talks to Python's http.server, the
//! agent (the real binary) captures both sides and exports spans to an OTLP
//! receiver the test starts. Trace context from W3C and B3 headers is joined,
//! requests without it start traces, invalid headers are counted, and the
//! OpenMetrics exemplars lead to spans that were exported.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::agent::Agent;
use tests::env::{has_program, is_root, missing};
use tests::otlp::{OtlpReceiver, ReceivedSpan};
use tests::pyserver::PyServer;

const WAIT: Duration = Duration::from_secs(20);
const SERVICE: &str = "pyshop";

/// `curl` with extra headers; asserts a 200.
fn curl(url: &str, headers: &[&str]) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ready_or_skip() -> bool {
    let checks = [
        ("root", is_root()),
        ("kernel BTF", Path::new("/sys/kernel/btf/vmlinux").exists()),
        ("python3", has_program("python3")),
        ("curl", has_program("curl")),
    ];
    if let Some(reason) = missing(&checks) {
        eprintln!("skipped: {reason}");
        return false;
    }
    true
}

fn config(port: u16, otlp: &str) -> String {
    format!("services:\n  rules:\n    - name: {SERVICE}\n      port: {port}\n{otlp}")
}

fn server_span(rx: &OtlpReceiver, path: &str, agent: &Agent) -> ReceivedSpan {
    rx.wait_for(WAIT, |s| {
        s.kind == 2 && s.attributes.get("url.path").map(String::as_str) == Some(path)
    })
    .unwrap_or_else(|| {
        panic!(
            "no SERVER span for {path}; got {:#?}\nagent log: {}",
            rx.spans(),
            agent.log()
        )
    })
}

fn assert_server_attributes(s: &ReceivedSpan, port: u16) {
    assert_eq!(s.service, SERVICE, "service.name from the rule");
    for key in [
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "url.path",
        "server.port",
        "tcp.retransmits",
    ] {
        assert!(s.attributes.contains_key(key), "{key} missing: {s:#?}");
    }
    assert_eq!(s.attributes["http.request.method"], "GET");
    assert_eq!(s.attributes["http.response.status_code"], "200");
    assert_eq!(s.attributes["server.port"], port.to_string());
    assert!(s.end_unix_nano >= s.start_unix_nano);
}

/// Every `trace_id="..."` exemplar on server duration buckets.
fn bucket_exemplars(openmetrics: &str) -> Vec<String> {
    openmetrics
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_bucket"))
        .filter_map(|l| {
            let (_, ex) = l.split_once("# {")?;
            let (_, rest) = ex.split_once("trace_id=\"")?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn trace_context_spans_and_exemplars_over_grpc() {
    if !ready_or_skip() {
        return;
    }
    let rx = OtlpReceiver::start();
    let files = ["tp.txt", "b3s.txt", "b3m.txt", "none.txt", "bad.txt"];
    let srv = PyServer::start(&files);
    let otlp = format!(
        "otlp:\n  endpoint: {}\n  protocol: grpc\n  root_sampling_ratio: 1.0\n",
        rx.endpoint()
    );
    let agent = Agent::start(&config(srv.port, &otlp)).expect("agent starts");

    // (a) W3C traceparent.
    let (tp_trace, tp_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    curl(
        &srv.url("/tp.txt"),
        &[&format!("traceparent: 00-{tp_trace}-{tp_span}-01")],
    );
    // (b) B3 single and multi header.
    let (b3s_trace, b3s_span) = ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1");
    curl(
        &srv.url("/b3s.txt"),
        &[&format!("b3: {b3s_trace}-{b3s_span}-1")],
    );
    let (b3m_trace, b3m_span) = ("463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312");
    curl(
        &srv.url("/b3m.txt"),
        &[
            &format!("X-B3-TraceId: {b3m_trace}"),
            &format!("X-B3-SpanId: {b3m_span}"),
            "X-B3-Sampled: 1",
        ],
    );
    // (c) no context.
    curl(&srv.url("/none.txt"), &[]);
    // (f) invalid traceparent: the parent id is not hex.
    let bad_trace = "0af7651916cd43dd8448eb211c80319c";
    curl(
        &srv.url("/bad.txt"),
        &[&format!("traceparent: 00-{bad_trace}-zzzzzzzzzzzzzzzz-01")],
    );

    let tp = server_span(&rx, "/tp.txt", &agent);
    assert_eq!(tp.trace_id, tp_trace, "joins the incoming trace");
    assert_eq!(tp.parent_span_id, tp_span, "parent = incoming span id");
    assert_ne!(tp.span_id, tp_span, "a span of its own");
    assert_server_attributes(&tp, srv.port);

    let b3s = server_span(&rx, "/b3s.txt", &agent);
    assert_eq!(b3s.trace_id, b3s_trace);
    assert_eq!(b3s.parent_span_id, b3s_span);
    assert_server_attributes(&b3s, srv.port);

    let b3m = server_span(&rx, "/b3m.txt", &agent);
    assert_eq!(b3m.trace_id, b3m_trace);
    assert_eq!(b3m.parent_span_id, b3m_span);
    assert_server_attributes(&b3m, srv.port);

    let none = server_span(&rx, "/none.txt", &agent);
    assert_eq!(none.parent_span_id, "", "no context: a root span");
    assert_eq!(none.trace_id.len(), 32);
    assert_ne!(none.trace_id, "0".repeat(32));
    for other in [tp_trace, b3s_trace, b3m_trace] {
        assert_ne!(none.trace_id, other, "a new trace");
    }
    assert_server_attributes(&none, srv.port);

    let bad = server_span(&rx, "/bad.txt", &agent);
    assert_eq!(
        bad.parent_span_id, "",
        "invalid context is treated as absent"
    );
    assert_ne!(bad.trace_id, bad_trace, "a fresh trace");
    let text = agent.scrape_until(WAIT, |t| {
        counter_sum(t, "sloguard_trace_context_invalid_total") >= 1.0
    });
    assert!(
        counter_sum(&text, "sloguard_trace_context_invalid_total") >= 1.0,
        "invalid traceparent counted: {}",
        text.lines()
            .filter(|l| l.contains("trace_context_invalid"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // (d) curl's own side of the request is a CLIENT span.
    let client = rx
        .wait_for(WAIT, |s| {
            s.kind == 3 && s.attributes.get("url.path").map(String::as_str) == Some("/none.txt")
        })
        .unwrap_or_else(|| panic!("no CLIENT span from curl: {:#?}", rx.spans()));
    assert_eq!(
        client.service, "curl",
        "the client process names the service"
    );
    assert_eq!(
        client.attributes.get("server.port").map(String::as_str),
        Some(srv.port.to_string().as_str())
    );
    assert_eq!(
        client
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );

    // (e) an exemplar on the server histogram leads to an exported span.
    let t0 = Instant::now();
    let matched = loop {
        let om = agent.scrape_openmetrics().unwrap_or_default();
        let exported: Vec<String> = rx.spans().into_iter().map(|s| s.trace_id).collect();
        let ex = bucket_exemplars(&om);
        if let Some(hit) = ex.iter().find(|t| exported.contains(t)) {
            break hit.clone();
        }
        assert!(
            t0.elapsed() < WAIT,
            "no exemplar matches an exported span; exemplars {ex:?}, exported {exported:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(matched.len(), 32);
    drop(agent);
}

#[test]
fn spans_over_http_protobuf_from_the_standard_variables() {
    if !ready_or_skip() {
        return;
    }
    let rx = OtlpReceiver::start();
    let srv = PyServer::start(&["env.txt"]);
    let endpoint = rx.http_endpoint();
    let agent = Agent::start_with_env(
        &config(
            srv.port,
            "otlp:\n  endpoint: \"\"\n  root_sampling_ratio: 1.0\n",
        ),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )
    .expect("agent starts");
    let (trace, span) = ("5b8aa5a2d2c872e8321cf37308d69df2", "051581bf3cb55c13");
    curl(
        &srv.url("/env.txt"),
        &[&format!("traceparent: 00-{trace}-{span}-01")],
    );
    let s = server_span(&rx, "/env.txt", &agent);
    assert_eq!(s.trace_id, trace);
    assert_eq!(s.parent_span_id, span);
    assert_server_attributes(&s, srv.port);
}

/// Spans leave the node: query values are withheld unless allowlisted and a
/// long X-Request-Id is cut, as the collector receives them.
#[test]
fn exported_spans_redact_query_values_and_cap_attributes() {
    if !ready_or_skip() {
        return;
    }
    let rx = OtlpReceiver::start();
    let srv = PyServer::start(&["private.txt"]);
    let agent = Agent::start(&config(
        srv.port,
        &format!(
            "otlp:\n  endpoint: {}\n  root_sampling_ratio: 1.0\n  query_allowlist: [page]\n  max_attribute_bytes: 64\n",
            rx.endpoint()
        ),
    ))
    .expect("agent starts");
    let request_id = "r".repeat(500);
    curl(
        &srv.url("/private.txt?email=alice%40example.com&token=s3cret&page=2"),
        &[&format!("X-Request-Id: {request_id}")],
    );
    let s = server_span(&rx, "/private.txt", &agent);
    assert_eq!(
        s.attributes.get("url.query").map(String::as_str),
        Some("email=REDACTED&token=REDACTED&page=2"),
        "{s:#?}"
    );
    assert_eq!(
        s.attributes
            .get("http.request.header.x-request-id")
            .map(String::len),
        Some(64),
        "{s:#?}"
    );
    for (k, v) in &s.attributes {
        assert!(v.len() <= 64, "{k} is {} bytes", v.len());
    }
}
