//! The tracing scope on the real kernel (`scope:` in the config): only the
//! processes it selects are traced, the others cost the probes one lookup and
//! send nothing, a process that starts matching later is traced within the
//! rescan interval, and a bad selector is an error naming its key.
use std::process::Command;
use std::time::{Duration, Instant};

use tests::agent::{Agent, run_cli};
use tests::env::{free_port, require_kernel, require_tool};
use tests::nginx::{Nginx, NginxOptions};
use tests::prom::value;
use tests::pyserver::PyServer;

fn ready(tools: &[&str]) -> bool {
    require_kernel() && tools.iter().all(|t| require_tool(t))
}

/// `n` GETs of `url` with curl (one process, keep-alive).
fn curl(url: &str, n: usize) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--fail"]);
    for _ in 0..n {
        cmd.args(["-o", "/dev/null", url]);
    }
    let st = cmd.status().expect("curl");
    assert!(st.success(), "curl {url}: {st}");
}

/// `n` GETs of `url` with Python's urllib (a new connection each).
fn python_get(url: &str, n: usize) {
    let code = format!(
        "import urllib.request\nfor _ in range({n}):\n    urllib.request.urlopen('{url}').read()\n"
    );
    let st = Command::new("python3")
        .args(["-c", &code])
        .status()
        .expect("python3");
    assert!(st.success(), "python3 urllib {url}: {st}");
}

fn served(text: &str, service: &str) -> f64 {
    value(
        text,
        "http_server_request_duration_seconds_count",
        &[("service_name", service)],
    )
    .unwrap_or(0.0)
}

fn counter(text: &str, name: &str, label: (&str, &str)) -> f64 {
    value(text, name, &[label]).unwrap_or(0.0)
}

#[test]
fn only_the_selected_nginx_is_traced_and_an_out_of_scope_server_sends_nothing() {
    if !ready(&["nginx", "curl", "python3"]) {
        return;
    }
    let nginx = Nginx::start(&NginxOptions {
        workers: 1,
        files: vec![("index.html".into(), b"in scope\n".to_vec())],
        ..NginxOptions::default()
    })
    .unwrap();
    let py = PyServer::start(&["out.txt"]);
    // Name and port: other engineers' nginx on this host stay out of scope,
    // so every socket event the agent gets is this nginx's.
    let agent = Agent::start(&format!(
        "scope:\n  include:\n    - process: nginx\n      port: {}\n  rescan_interval: 200ms\n",
        nginx.port
    ))
    .unwrap();
    let text = agent.scrape().unwrap();
    assert_eq!(value(&text, "sloguard_scope_active", &[]), Some(1.0));
    assert_eq!(
        value(&text, "sloguard_scope_processes", &[]),
        Some(2.0),
        "nginx master and its worker"
    );

    // In scope: the server side of curl's and Python's requests to nginx.
    curl(&nginx.url("/index.html"), 20);
    python_get(&nginx.url("/index.html"), 20);
    let text = agent.scrape_until(Duration::from_secs(30), |t| served(t, "nginx") >= 40.0);
    assert_eq!(served(&text, "nginx"), 40.0, "{}", agent.log());
    // The clients are out of scope: no client side of those requests.
    for client in ["curl", "python3"] {
        let c = value(
            &text,
            "http_client_request_duration_seconds_count",
            &[("service_name", client)],
        );
        assert_eq!(c, None, "{client} is out of scope");
    }

    // Out of scope: a Python server and its curl/Python clients. Not one
    // socket event, and every socket syscall of theirs ends at the scope check.
    let events = |t: &str| {
        [
            counter(t, "sloguard_events_total", ("kind", "data")),
            counter(t, "sloguard_events_total", ("kind", "sock_owner")),
        ]
    };
    let out_of_scope =
        |t: &str| counter(t, "sloguard_probe_events_total", ("event", "out_of_scope"));
    // The kernel counters are mirrored each second: settle first.
    std::thread::sleep(Duration::from_millis(1500));
    let before = agent.scrape().unwrap();
    curl(&py.url("/out.txt"), 15);
    python_get(&py.url("/out.txt"), 15);
    std::thread::sleep(Duration::from_millis(2500));
    let after = agent.scrape().unwrap();
    assert_eq!(
        events(&after),
        events(&before),
        "out-of-scope traffic sent events"
    );
    // Per request the server reads the request and writes the response, and
    // the client writes and reads: at least 4 early exits, all counted.
    let exits = out_of_scope(&after) - out_of_scope(&before);
    assert!(
        exits >= 4.0 * 30.0,
        "only {exits} out-of-scope exits for 30 requests"
    );
    assert_eq!(served(&after, "python3"), 0.0);
    assert_eq!(served(&after, "nginx"), 40.0);
    eprintln!("kernel_scope: {exits} out-of-scope early exits for 30 requests");
}

#[test]
fn a_process_that_starts_matching_later_is_traced_within_the_rescan_interval() {
    if !ready(&["curl", "python3"]) {
        return;
    }
    let interval = Duration::from_millis(500);
    let port = free_port();
    let agent = Agent::start(&format!(
        "scope:\n  include:\n    - port: {port}\n  rescan_interval: 500ms\n"
    ))
    .unwrap();
    let text = agent.scrape().unwrap();
    assert_eq!(value(&text, "sloguard_scope_processes", &[]), Some(0.0));

    let py = PyServer::on_port(port, &[("late.txt", b"late\n".to_vec())]);
    let up = Instant::now();
    // One interval plus the scan itself (milliseconds) and then some: by now
    // a rescan has put the server in scope.
    std::thread::sleep(interval * 2 + Duration::from_millis(200));
    curl(&py.url("/late.txt"), 10);
    let text = agent.scrape_until(Duration::from_secs(30), |t| served(t, "python3") >= 10.0);
    assert_eq!(served(&text, "python3"), 10.0, "{}", agent.log());
    assert_eq!(value(&text, "sloguard_scope_processes", &[]), Some(1.0));
    eprintln!(
        "kernel_scope: late server traced; all requests seen {:?} after it started",
        up.elapsed()
    );

    // And it leaves the set when it exits.
    drop(py);
    let text = agent.scrape_until(Duration::from_secs(10), |t| {
        value(t, "sloguard_scope_processes", &[]) == Some(0.0)
    });
    assert_eq!(value(&text, "sloguard_scope_processes", &[]), Some(0.0));
    assert!(value(&text, "sloguard_scope_rescans_total", &[]) >= Some(2.0));
}

#[test]
fn a_bad_scope_selector_is_an_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, key) in [
        (
            "scope:\n  include:\n    - proces: nginx\n",
            "scope.include[0]",
        ),
        (
            "scope:\n  exclude:\n    - port: 0\n",
            "scope.exclude[0].port",
        ),
        (
            "scope:\n  include:\n    - k8s_namespace: \"[\"\n",
            "scope.include[0].k8s_namespace",
        ),
    ] {
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, yaml).unwrap();
        let (code, stderr) = run_cli(&["check-config", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{yaml}: {stderr}");
        assert!(stderr.contains(key), "{yaml}: {stderr}");
    }
    if !require_kernel() {
        return;
    }
    // The agent itself refuses to start, naming the key, before loading probes.
    let err = Agent::start("scope:\n  include:\n    - proces: nginx\n")
        .err()
        .expect("agent started with a bad scope")
        .to_string();
    assert!(
        err.contains("scope.include[0]") && err.contains("proces"),
        "{err}"
    );
}
