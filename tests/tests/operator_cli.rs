//! The operator CLI against the real agent on the real kernel: the status
//! endpoint and `sloguard status` agree with `/metrics`; `sloguard top` in a
//! real terminal (tmux) shows the routes, then L2 and the open fuse after a
//! fault, and `q` gives the terminal back; `sloguard fuse` changes the nginx
//! map and the audit trail, and a wrong token changes nothing.
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tests::agent::{Agent, http_get, sloguard_bin};
use tests::env;
use tests::prom;
use tests::shop::Shop;
use tests::webhook::wait;

const TOKEN: &str = "operator-cli-test-token-0123456789abcdef";

/// Keep-alive clients: `/api/healthy` every 100 ms, two flaky ids every 200 ms.
fn traffic(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    tests::shop::flaky_traffic(addr, 2, stop)
}

/// An agent judging the flaky server's routes with 1 s periods, fusing in
/// enforce mode through an nginx map file; admin token in a file.
fn start_agent(server: &Shop) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let token = tmp.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    // The shop's SLO section, plus a P99 target of its own.
    let slo = tests::shop::flaky_slo_yaml("e2e-shop", server.port());
    let fuse = tests::shop::enforce_fuse_yaml(
        tmp,
        "nginx",
        &tmp.join("fuses.map"),
        "nginx_map",
        env::free_port(),
    );
    let yaml = format!(
        "{slo}  default_p99: 250ms\n{fuse}  token_file: {}/token\n",
        tmp.display()
    );
    let agent = Agent::start(&yaml).unwrap();
    (agent, dir)
}

/// `sloguard --config <the agent's file> ARGS` with the agent's metrics URL.
fn cli(agent: &Agent, args: &[&str]) -> Output {
    let out = Command::new(sloguard_bin())
        .arg("--config")
        .arg(agent.dir.path().join("sloguard.yaml"))
        .args(args)
        .env("SG_METRICS_URL", format!("http://{}", agent.metrics))
        .env_remove("SLOGUARD_ADMIN_TOKEN")
        .output()
        .expect("run sloguard");
    // The transcript (with --nocapture) is what docs/cli.md shows.
    eprintln!(
        "$ sloguard {}\n{}{}(exit {:?})",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr),
        out.status.code()
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_endpoint(agent: &Agent) -> Value {
    let (code, body) = http_get(agent.metrics, "/api/v1/status", None).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn healthy_row(doc: &Value) -> Option<Value> {
    doc["routes"]
        .as_array()?
        .iter()
        .find(|r| r["route"] == "/api/healthy" && r["gray_tag"] == "")
        .cloned()
}

/// The figures of `/api/healthy` in a scrape, as the status document names them.
fn from_metrics(m: &str) -> Vec<(&'static str, Option<f64>)> {
    let l = [
        ("service_name", "e2e-shop"),
        ("http_route", "/api/healthy"),
        ("gray_tag", ""),
    ];
    let burn = |w| {
        let mut l = l.to_vec();
        l.push(("window", w));
        prom::value(m, "sloguard_slo_burn_rate", &l)
    };
    vec![
        ("requests", prom::value(m, "sloguard_route_requests", &l)),
        (
            "p99_seconds",
            prom::value(m, "sloguard_route_p99_seconds", &l),
        ),
        (
            "error_ratio",
            prom::value(m, "sloguard_route_error_ratio", &l),
        ),
        (
            "target_p99_seconds",
            prom::value(m, "sloguard_slo_target_p99_seconds", &l),
        ),
        ("burn_rate.5m", burn("5m")),
        ("burn_rate.1h", burn("1h")),
    ]
}

fn from_status(row: &Value) -> Vec<(&'static str, Option<f64>)> {
    [
        "requests",
        "p99_seconds",
        "error_ratio",
        "target_p99_seconds",
        "burn_rate.5m",
        "burn_rate.1h",
    ]
    .into_iter()
    .map(|k| {
        let v = match k.split_once('.') {
            Some((a, b)) => &row[a][b],
            None => &row[k],
        };
        (k, v.as_f64())
    })
    .collect()
}

#[test]
fn status_endpoint_and_status_json_equal_metrics_and_down_agent_exits_1() {
    if !env::require_kernel() || !env::require(env::has_program("python3"), "python3") {
        return;
    }
    let server = Shop::flaky();
    let (agent, _dir) = start_agent(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(server.addr, &stop);
    let seen = agent.scrape_until(Duration::from_secs(20), |t| {
        prom::value(
            t,
            "sloguard_route_requests",
            &[("http_route", "/api/healthy")],
        )
        .is_some_and(|v| v > 0.0)
    });
    assert!(seen.contains("/api/healthy"), "{}", agent.log());
    // The snapshot changes once a period: compare only when /metrics did not
    // change around the two status reads.
    let mut matched = 0;
    for _ in 0..40 {
        let before = agent.scrape().unwrap();
        let doc = status_endpoint(&agent);
        let out = cli(&agent, &["status", "-o", "json"]);
        let after = agent.scrape().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let cli_doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = from_metrics(&before);
        if want != from_metrics(&after) {
            continue;
        }
        let (Some(row), Some(cli_row)) = (healthy_row(&doc), healthy_row(&cli_doc)) else {
            continue;
        };
        // A period in which the client got no answer (a loaded machine) has
        // no P99 to compare: wait for one with traffic.
        if want.iter().any(|(_, v)| v.is_none()) {
            continue;
        }
        assert_eq!(from_status(&row), want, "status endpoint vs /metrics");
        assert_eq!(from_status(&cli_row), want, "status -o json vs /metrics");
        assert_eq!(cli_doc["schema"], "sloguard.status/v1");
        assert!(row["rate_per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["p50_seconds"].as_f64().is_some(), "{row}");
        assert_eq!(row["fuse"]["state"], "closed");
        let a = &doc["agent"];
        assert!(a["probes_attached"].as_i64().unwrap() > 0, "{a}");
        assert!(a["events_per_second"].as_f64().unwrap() > 0.0, "{a}");
        // A counter, not a period figure: it moves between any two reads
        // (and a scrape may be served from the scrape cache), so only its
        // presence is compared.
        assert!(a["events_total"].as_f64().unwrap() > 0.0, "{a}");
        assert!(prom::value(&after, "sloguard_events_total", &[]).is_some());
        assert_eq!(a["routes_per_service"]["e2e-shop"], 2, "{a}");
        matched += 1;
        break;
    }
    assert_eq!(matched, 1, "no stable window to compare in 40 tries");
    // Human outputs name the route.
    for o in [
        &["status"][..],
        &["status", "-o", "wide"],
        &["status", "-o", "yaml"],
    ] {
        let out = cli(&agent, o);
        assert!(out.status.success(), "{o:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("/api/healthy"),
            "{o:?}: {}",
            text(&out.stdout)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Nothing listens there: exit 1, one line on stderr.
    let free = env::free_port();
    let out = cli(
        &agent,
        &[
            "status",
            "--metrics-url",
            &format!("http://127.0.0.1:{free}"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach") && err.contains("connection refused"),
        "{err}"
    );
}

/// A tmux server of our own (`-L`), one 80×24 window running a plain bash;
/// killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start() -> Self {
        let t = Self {
            socket: format!("sg-top-{}", std::process::id()),
        };
        let ok = t
            .cmd(&["new-session", "-d", "-s", "t", "-x", "80", "-y", "24"])
            .args(["env", "PS1=$ ", "bash", "--norc", "--noprofile"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        c
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status().unwrap().success());
    }

    fn capture(&self) -> String {
        text(
            &self
                .cmd(&["capture-pane", "-p", "-t", "t"])
                .output()
                .unwrap()
                .stdout,
        )
    }

    fn alternate_on(&self) -> bool {
        let out = self
            .cmd(&["display-message", "-p", "-t", "t", "#{alternate_on}"])
            .output()
            .unwrap();
        text(&out.stdout).trim() == "1"
    }

    /// Polls the screen until `pred` holds; the last screen either way.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> (bool, String) {
        let mut last = String::new();
        let hit = wait(timeout, || {
            last = self.capture();
            pred(&last).then_some(())
        });
        (hit.is_some(), last)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}

fn flaky_row_fused(screen: &str) -> bool {
    screen
        .lines()
        .any(|l| l.contains("/api/flaky/{id}") && l.contains("L2") && l.contains("OPEN"))
}

#[test]
fn top_in_tmux_shows_routes_then_l2_and_open_fuse_and_q_restores_the_terminal() {
    if !env::require_kernel()
        || !env::require(env::has_program("python3"), "python3")
        || !env::require(env::has_program("tmux"), "tmux (cargo xtask setup)")
    {
        return;
    }
    let server = Shop::flaky();
    let (agent, _dir) = start_agent(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(server.addr, &stop);
    let tmux = Tmux::start();
    let line = format!(
        "{} --config {} top --metrics-url http://{}; echo TOP_EXIT=$?",
        sloguard_bin().display(),
        agent.dir.path().join("sloguard.yaml").display(),
        agent.metrics
    );
    tmux.send(&[&line, "Enter"]);
    let (shown, screen) = tmux.wait_for(Duration::from_secs(20), |s| {
        s.contains("/api/healthy") && s.contains("/api/flaky/{id}")
    });
    assert!(
        shown,
        "top never showed both routes:\n{screen}\n{}",
        agent.log()
    );
    assert!(
        tmux.alternate_on(),
        "top should draw on the alternate screen"
    );
    assert!(
        !flaky_row_fused(&screen),
        "fused before the fault:\n{screen}"
    );
    // Healthy periods for the baseline, then the demo's fault.
    std::thread::sleep(Duration::from_secs(6));
    server.fault(true);
    let (fused, screen) = tmux.wait_for(Duration::from_secs(25), flaky_row_fused);
    assert!(
        fused,
        "no L2 + OPEN row after the fault:\n{screen}\n{}",
        agent.log()
    );
    eprintln!("sloguard top after the fault:\n{screen}");
    // For the README: the screen and `sloguard status` at the same moment.
    if let Some(out) = std::env::var_os("SG_TOP_SCREEN") {
        let status = text(&cli(&agent, &["status"]).stdout);
        std::fs::write(&out, format!("{screen}\n---\n{status}")).unwrap();
    }
    // The healthy route is neither alerting nor fused.
    let healthy = screen.lines().find(|l| l.contains("/api/healthy")).unwrap();
    assert!(
        !healthy.contains("L2") && !healthy.contains("OPEN"),
        "{healthy}"
    );
    // `sloguard alerts` lists the same L2, over the admin API.
    let out = cli(&agent, &["alerts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alerts = text(&out.stdout);
    eprintln!("$ sloguard alerts\n{alerts}");
    assert!(
        alerts
            .lines()
            .any(|l| l.contains("SloguardP99SpikeWith5xxBurst")
                && l.contains("/api/flaky/{id}")
                && l.contains("open")),
        "{alerts}"
    );
    // `q`: top exits 0, the alternate screen is gone, the tty is cooked again.
    tmux.send(&["q"]);
    let (exited, screen) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("TOP_EXIT=0"));
    assert!(exited, "top did not exit on q:\n{screen}");
    assert!(!tmux.alternate_on(), "alternate screen still on:\n{screen}");
    tmux.send(&[
        "stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo)$' | tr '\\n' ' '; echo",
        "Enter",
    ]);
    let (cooked, screen) = tmux.wait_for(Duration::from_secs(10), |s| {
        s.lines().any(|l| l.trim() == "icanon echo")
    });
    assert!(cooked, "terminal left in raw mode:\n{screen}");
    server.fault(false);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
}

fn map_blocks(map: &str, route: &str) -> bool {
    map.lines()
        .any(|l| l.starts_with(&format!("\"~^GET {route}$\" 1;")))
}

#[test]
fn fuse_open_close_release_change_the_nginx_map_and_audit_wrong_token_changes_nothing() {
    if !env::require_kernel() || !env::require(env::has_program("python3"), "python3") {
        return;
    }
    let server = Shop::flaky();
    let (agent, dir) = start_agent(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(server.addr, &stop);
    let map = dir.path().join("fuses.map");
    let audit = dir.path().join("audit.jsonl");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let route = ["e2e-shop", "GET", "/api/healthy"];
    let args = |verb: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec!["fuse", verb];
        v.extend_from_slice(&route);
        v.extend_from_slice(extra);
        v
    };
    // The route is judged (in the status document) before it is fused.
    let judged = wait(Duration::from_secs(20), || {
        healthy_row(&status_endpoint(&agent))
    });
    assert!(judged.is_some(), "{}", agent.log());

    let out = cli(
        &agent,
        &args(
            "open",
            &["--reason", "INC-42 drain /api/healthy", "--ttl", "10m"],
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": open (force_open until"),
        "{}",
        text(&out.stdout)
    );
    let blocked = wait(Duration::from_secs(10), || {
        map_blocks(&read(&map), "/api/healthy").then_some(())
    });
    assert!(blocked.is_some(), "map:\n{}\n{}", read(&map), agent.log());
    let entry = read(&audit)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["why"] == "INC-42 drain /api/healthy")
        .unwrap_or_else(|| panic!("no audit entry:\n{}", read(&audit)));
    assert_eq!(
        (entry["to"].as_str(), entry["cause"].as_str()),
        (Some("open"), Some("override"))
    );
    assert!(
        entry["who"].as_str().unwrap().starts_with("cli:"),
        "{entry}"
    );
    let out = cli(&agent, &["fuse", "list", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = list["fuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["route"] == "/api/healthy")
        .unwrap();
    assert_eq!(f["override"]["kind"], "force_open", "{list}");
    let out = cli(&agent, &["fuse", "list"]);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.contains("/api/healthy") && l.contains("force_open"))
    );
    // The status endpoint shows the same fuse.
    let doc = status_endpoint(&agent);
    let row = healthy_row(&doc).unwrap_or_else(|| panic!("no healthy row: {doc}"));
    assert_eq!(
        (
            row["fuse"]["state"].as_str(),
            row["fuse"]["overridden"].as_str()
        ),
        (Some("open"), Some("force_open"))
    );

    // A wrong token: exit 3, one line, nothing changed.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-agents-token-but-long-enough-000\n").unwrap();
    let cfg = read(&agent.dir.path().join("sloguard.yaml")).replace(
        &format!("{}/token", dir.path().display()),
        &wrong.display().to_string(),
    );
    let wrong_cfg = dir.path().join("wrong.yaml");
    std::fs::write(&wrong_cfg, cfg).unwrap();
    let (map_before, audit_before) = (read(&map), read(&audit));
    let mut close = args("close", &["--reason", "should not apply"]);
    let mut cmd = vec!["--config", wrong_cfg.to_str().unwrap()];
    cmd.append(&mut close);
    let out = Command::new(sloguard_bin())
        .args(&cmd)
        .env_remove("SLOGUARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refused the token"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&map), map_before);
    assert_eq!(read(&audit), audit_before);

    // Admin API down while the agent runs: exit 1 and a hint.
    let free = format!("http://127.0.0.1:{}", env::free_port());
    let out = cli(&agent, &["fuse", "list", "--admin-url", &free]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("its admin API does not"), "{err}");

    // Close: the map no longer blocks the route; the reason is audited.
    let out = cli(
        &agent,
        &args("close", &["--reason", "INC-42 back to normal"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unblocked = wait(Duration::from_secs(10), || {
        (!map_blocks(&read(&map), "/api/healthy")).then_some(())
    });
    assert!(unblocked.is_some(), "map:\n{}", read(&map));
    assert!(
        read(&audit).contains("INC-42 back to normal"),
        "{}",
        read(&audit)
    );
    // Release, then release again: nothing to release is a refusal (exit 4).
    let out = cli(&agent, &args("release", &["--reason", "INC-42 closed"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&agent, &args("release", &["--reason", "again"]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).lines().count(), 1);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
}
