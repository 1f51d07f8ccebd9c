//! HTTP/2 on the real kernel, checked against the peers' own records: nginx
//! serving h2c (prior knowledge) to h2load (many streams per connection) and
//! curl, counted against nginx's access log.
use std::process::Command;

use tests::agent::Agent;
use tests::env::{require_kernel, require_tool};
use tests::fidelity::{assert_counts_match_access_log, config, run};
use tests::nginx::{Nginx, NginxOptions};
use tests::prom::value;

fn ready(tools: &[&str]) -> bool {
    require_kernel() && tools.iter().all(|t| require_tool(t))
}

#[test]
fn nginx_h2c_under_h2load_and_curl_matches_the_access_log() {
    if !ready(&["nginx", "h2load", "curl"]) {
        return;
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
    let nginx = Nginx::start(&NginxOptions {
        files: vec![
            ("small.txt".into(), b"hello over h2c\n".to_vec()),
            ("big.bin".into(), big),
        ],
        listen_params: "http2".into(),
        server_extra: "location = /notfound { return 404; }\n\
                       location = /unavailable { return 503; }\n"
            .into(),
        ..Default::default()
    })
    .expect("nginx starts");
    let rules = format!(
        "    - name: web\n      process: \"nginx\"\n      port: {}\n",
        nginx.port
    );
    let agent = Agent::start(&config(&rules, "")).expect("agent starts");
    let paths = ["/small.txt", "/big.bin", "/notfound", "/unavailable"];
    // h2load: 4 connections, up to 8 concurrent streams each, HPACK tables
    // reused across requests; paced so a debug-build agent keeps up.
    let urls: Vec<String> = paths.iter().map(|p| nginx.url(p)).collect();
    let out = run(Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "8", "--rps", "100"])
        .args(&urls));
    eprintln!(
        "h2load: {}",
        out.lines()
            .filter(|l| l.starts_with("requests:") || l.starts_with("status codes:"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    // curl with prior knowledge: one request per connection (curl 7.88 fails
    // on a reused h2c connection).
    for p in paths {
        run(Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
            ])
            .arg(nginx.url(p)));
    }
    let log = assert_counts_match_access_log(&nginx, &agent, "web");
    assert!(
        log.iter().all(|e| e.request.ends_with("HTTP/2.0")),
        "h2 in the log"
    );
    let text = agent.scrape().unwrap();
    let h2 = |event: &str| value(&text, "sloguard_http2_events_total", &[("event", event)]);
    eprintln!(
        "http2 events: connections {:?} exchanges {:?} unknown {:?} desynced {:?}",
        h2("connections"),
        h2("exchanges"),
        h2("hpack_unknown_fields"),
        h2("desynced_connections")
    );
    assert_eq!(h2("desynced_connections"), Some(0.0));
    assert_eq!(h2("hpack_unknown_fields"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "sloguard_probe_events_total",
            &[("event", "http2_walk_lost")]
        ),
        Some(0.0)
    );
}
