//! Comparing the agent's HTTP view with the peers' own records (nginx's
//! access log, clients' timings): the agent's request logs and server
//! counts, nearest-rank percentiles, and the max(1 ms, 5 %) agreement rule.
//! Shared by the plain-HTTP and the HTTPS fidelity tests.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::prom::value;

pub const SERVER: &str = "http_server_request_duration_seconds_count";

/// Config: every request logged as JSON; `rules` name the services. The
/// reader-to-pipeline channel is deep so that a debug-build agent sharing two
/// cores with other test jobs absorbs a burst instead of dropping it (drops
/// would still show in `sloguard_events_lost_total`, printed by `losses`).
/// The service rule the nginx fidelity tests use: nginx on `port` is "web".
pub fn web_rules(port: u16) -> String {
    format!("    - name: web\n      process: \"nginx\"\n      port: {port}\n")
}

pub fn config(rules: &str, extra: &str) -> String {
    format!(
        "log:\n  format: json\nrequest_logs:\n  rest: 1.0\n  slow: 1.0\n  errors: 1.0\n  max_per_second: 1000000\nprobes:\n  channel_capacity: 1048576\nservices:\n  rules:\n{rules}{extra}"
    )
}

/// The agent's request-log lines (target `sloguard::request`).
/// Only lines naming `service` are parsed: the agent logs every request on
/// the host, and other jobs may flood it.
pub fn request_logs(agent: &Agent, service: &str) -> Vec<serde_json::Value> {
    let tag = format!("\"service_name\":\"{service}\"");
    agent
        .log()
        .lines()
        .filter(|l| l.contains("sloguard::request") && l.contains(&tag))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sloguard::request")
        .collect()
}

/// Print what the agent says it dropped or could not frame.
pub fn losses(text: &str) {
    for l in text.lines().filter(|l| {
        l.starts_with("sloguard_events_lost")
            || l.starts_with("sloguard_http_events")
            || l.starts_with("sloguard_http2_events")
            || (l.starts_with("sloguard_probe_events") && l.contains("http2"))
    }) {
        eprintln!("  {l}");
    }
}

pub fn field<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Nearest-rank percentile of unsorted `v` (q in 0..=1).
pub fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

pub fn agree(a: f64, b: f64) -> bool {
    (a - b).abs() <= f64::max(1.0, 0.05 * a.max(b))
}

/// Sum of the server `_count` series of `service`, per status code.
pub fn server_counts(text: &str, service: &str) -> BTreeMap<u16, f64> {
    let mut out = BTreeMap::new();
    for code in 100..600u16 {
        let c = code.to_string();
        if let Some(v) = value(
            text,
            SERVER,
            &[("service_name", service), ("http_response_status_code", &c)],
        ) {
            out.insert(code, v);
        }
    }
    out
}

/// Poll until the server count of `service` reaches `want` and then stays
/// put for a second (late events), or `max` passes.
pub fn settle(agent: &Agent, service: &str, want: f64, max: Duration) -> String {
    let t0 = Instant::now();
    let mut last = -1.0;
    let mut stable_since = Instant::now();
    loop {
        let text = agent.scrape().unwrap_or_default();
        let n = value(&text, SERVER, &[("service_name", service)]).unwrap_or(0.0);
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
        let stable = stable_since.elapsed() > Duration::from_secs(1);
        if (n >= want && stable) || t0.elapsed() > max {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a tool to completion (stderr passed through); its stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run tool");
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// wrk on `url`: 8 connections for 3 s, each pausing 4 ms between requests
/// (wrk's `delay` hook): at full speed (~18 k req/s here) the debug-build
/// agent on two shared cores drops events at its channel (counted in
/// `sloguard_events_lost_total`); raw capacity is the benchmark's job.
pub fn paced_wrk(dir: &std::path::Path, url: &str) {
    let script = dir.join("pace.lua");
    std::fs::write(&script, "function delay()\n  return 4\nend\n").unwrap();
    let wrk = run(std::process::Command::new("wrk")
        .args(["-t1", "-c8", "-d3s", "-s"])
        .arg(&script)
        .arg(url));
    eprintln!(
        "wrk: {}",
        wrk.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
}

/// The agent saw at least 99.9 % of the requests in nginx's access log as
/// server requests of `service`, with the same count per status. Returns the
/// access log.
pub fn assert_counts_match_access_log(
    nginx: &crate::nginx::Nginx,
    agent: &Agent,
    service: &str,
) -> Vec<crate::nginx::AccessLogEntry> {
    // nginx writes the log line as each request completes; wait for the last.
    std::thread::sleep(Duration::from_millis(300));
    let log = nginx.access_log().expect("access log");
    let mut want: BTreeMap<u16, f64> = BTreeMap::new();
    for e in &log {
        *want.entry(e.status).or_default() += 1.0;
    }
    let total = log.len() as f64;
    let text = settle(agent, service, total, Duration::from_secs(30));
    let got = server_counts(&text, service);
    let seen: f64 = got.values().sum();
    eprintln!("access log {total} lines {want:?}; agent {seen} {got:?}");
    losses(&text);
    assert!(
        seen >= 0.999 * total,
        "agent saw {seen} of {total} requests: {got:?} vs {want:?}"
    );
    assert_eq!(got, want, "per-status counts");
    log
}
