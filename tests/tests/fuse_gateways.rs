//! Fuse actions through real gateways with runtime APIs (HAProxy's stats
//! socket, Caddy's admin API), configured from the recipes in docs/fuse.md,
//! in front of a Python backend, driven by the real agent in enforce mode on
//! the real kernel: an L2 on one route makes the gateway answer 503 with no
//! reload, half_open/closed put the traffic back, a restarted agent restores
//! the fuse, hostile routes stay inside the gateway's syntax, and a gateway
//! that is down is retried until it converges. Also the latency bench's
//! figures (fuse decision → first 503) beside nginx's reload path.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tests::agent::{Agent, http_request};
use tests::env;
use tests::gateway::{Caddy, Haproxy, identity, status, wait_status};
use tests::nginx::{Nginx, NginxOptions};
use tests::shop::Shop;

const TOKEN: &str = "gateway-test-token-0123456789abcdef0123";
const SERVICE: &str = "gw-shop";
/// A route from traffic with every character the gateways' syntax cares
/// about: quote, backslash, blank, braces (a placeholder), `;`, `#`, and
/// encoded newline and percent.
const HOSTILE: &str = "/evil/a\"b\\c d{x}e%0A;#%25";
/// A request the hostile route matches (the placeholder takes `ZZ`), and a
/// sibling it must not.
const HOSTILE_HIT: &str = "/evil/a%22b%5Cc%20dZZe%0A%3B%23%25";
const HOSTILE_MISS: &str = "/evil/a%22b%5Cc%20d/e";

/// A gateway under test.
trait Gateway {
    fn name(&self) -> &'static str;
    fn port(&self) -> u16;
    fn pid(&self) -> u32;
    fn action_yaml(&self) -> String;
    /// Loses what sloguard told it, keeping its process (the state an agent
    /// restart must put back).
    fn forget(&mut self);
    fn stop(&mut self);
    /// Up again, with none of sloguard's state.
    fn start_empty(&mut self);
    /// The gateway's own view of its configuration still parses and holds
    /// `fused` lines/matchers.
    fn check_config(&self, fused: usize);
}

impl Gateway for Haproxy {
    fn name(&self) -> &'static str {
        "haproxy"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pid(&self) -> u32 {
        self.process.pid()
    }
    fn action_yaml(&self) -> String {
        Haproxy::action_yaml(self, SERVICE)
    }
    fn forget(&mut self) {
        let a = self
            .cli(&format!("clear map {}", self.map.display()))
            .unwrap();
        assert_eq!(a.trim(), "", "clear map: {a}");
        std::fs::write(&self.map, "").unwrap();
    }
    fn stop(&mut self) {
        self.process.stop()
    }
    fn start_empty(&mut self) {
        std::fs::write(&self.map, "").unwrap();
        self.process.start_again().unwrap();
    }
    fn check_config(&self, fused: usize) {
        let lines = self.live_map();
        assert_eq!(lines.len(), fused, "{lines:?}");
        for l in &lines {
            // `<ref> <key> 1`: the key stayed one word.
            assert_eq!(l.split(' ').count(), 3, "{l:?}");
            assert!(l.ends_with(" 1"), "{l:?}");
        }
        let file = std::fs::read_to_string(&self.map).unwrap();
        assert_eq!(file.lines().filter(|l| !l.starts_with('#')).count(), fused);
    }
}

impl Gateway for Caddy {
    fn name(&self) -> &'static str {
        "caddy"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pid(&self) -> u32 {
        self.process.pid()
    }
    fn action_yaml(&self) -> String {
        Caddy::action_yaml(self, SERVICE)
    }
    fn forget(&mut self) {
        let (code, body) = self.admin("DELETE", "/id/sloguard-fuses").unwrap();
        assert_eq!(code, 200, "{body}");
    }
    fn stop(&mut self) {
        self.process.stop()
    }
    fn start_empty(&mut self) {
        self.process.start_again().unwrap();
    }
    fn check_config(&self, fused: usize) {
        let (code, body) = self
            .admin("GET", "/config/apps/http/servers/srv0/routes")
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
        let routes = routes.as_array().unwrap();
        assert_eq!(routes.len(), 2, "{body}");
        assert_eq!(routes[0]["@id"], "sloguard-fuses", "{body}");
        assert_eq!(
            routes[0]["match"].as_array().unwrap().len(),
            fused,
            "{body}"
        );
        assert_eq!(routes[0]["handle"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(routes[1]["handle"][0]["handler"], "reverse_proxy", "{body}");
    }
}

fn ready(test: &str, gateway: &str) -> bool {
    env::require_kernel()
        && env::require(env::has_program("python3"), "python3")
        && env::require_tool(gateway)
        || {
            eprintln!("skipped {test}");
            false
        }
}

fn agent_yaml(dir: &Path, backend: u16, admin: u16, actions: &str) -> String {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let slo = tests::shop::flaky_slo_yaml(SERVICE, backend);
    format!(
        r#"{slo}fuse:
  mode: enforce
  min_requests: 5
  open_for: 3s
  retry_min: 200ms
  retry_max: 1s
  state_file: {dir}/state.json
  audit_file: {dir}/audit.jsonl
  actions:
{actions}
admin:
  listen: 127.0.0.1:{admin}
  token_file: {token}
"#,
        dir = dir.display(),
        token = token.display(),
    )
}

/// An operator override through the agent's admin API.
fn override_route(admin: u16, what: &str, route: &str) {
    let mut body = serde_json::json!({
        "service": SERVICE, "method": "GET", "route": route,
        "reason": "gateway test", "who": "test",
    });
    if what == "force-open" {
        body["ttl"] = "10m".into();
    }
    let auth = format!("Bearer {TOKEN}");
    let (code, text) = http_request(
        SocketAddr::from(([127, 0, 0, 1], admin)),
        "POST",
        &format!("/api/v1/fuses/{what}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(code, 200, "{what} {route}: {text}");
}

/// The value of the first sample line starting with `line_start`, else 0.
fn metric_in(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

const SECOND: Duration = Duration::from_secs(1);

/// L2 on one route → 503 at the gateway within one period of the alert,
/// the other route untouched, same gateway process; healthy again →
/// half_open/closed put traffic back; fused and the agent restarted while the
/// gateway lost the state → restored.
fn l2_fuses_one_route_without_reload_and_recovers(gw: &mut dyn Gateway, backend: &Shop) {
    let tmp = tempfile::tempdir().unwrap();
    let admin = env::free_port();
    let yaml = agent_yaml(tmp.path(), backend.port(), admin, &gw.action_yaml());
    let agent = Agent::start(&yaml).unwrap();
    let port = gw.port();
    let before = identity(gw.pid());
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tests::shop::flaky_traffic(gw_addr, 4, &stop);
    // Warm-up: the flaky route's baseline; then the fault just after a
    // period boundary.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(status(port, "/api/flaky/7"), 200);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(1000 - ms % 1000 + 50));
    backend.fault(true);
    let onset = Instant::now();
    let fused = wait_status(port, "/api/flaky/7", 503, Duration::from_secs(10));
    let fused =
        fused.unwrap_or_else(|| panic!("{}: no 503 after the L2: {}", gw.name(), agent.log()));
    eprintln!("{}: fault onset → 503 at the gateway {fused:?}", gw.name());
    // The L2 fires at the end of the first faulty period; the fuse is then
    // at the gateway within the next period.
    assert!(fused <= 2 * SECOND + SECOND, "{fused:?}");
    assert!(onset.elapsed() < Duration::from_secs(10));
    assert_eq!(
        status(port, "/api/healthy"),
        200,
        "{}: healthy route",
        gw.name()
    );
    assert_eq!(
        status(port, "/api/flaky"),
        200,
        "{}: sibling path",
        gw.name()
    );
    assert_eq!(
        identity(gw.pid()),
        before,
        "{}: gateway restarted",
        gw.name()
    );
    gw.check_config(1);
    // Healthy again: after open_for (3 s) half_open lets traffic through and
    // the first healthy period closes the route.
    backend.fault(false);
    let back = wait_status(port, "/api/flaky/7", 200, Duration::from_secs(15));
    assert!(
        back.is_some(),
        "{}: traffic never came back: {}",
        gw.name(),
        agent.log()
    );
    let closed = format!(
        "sloguard_fuse_state{{service_name=\"{SERVICE}\",http_request_method=\"GET\",http_route=\"/api/flaky/{{id}}\",state=\"closed\"}} 1"
    );
    let text = agent.scrape_until(Duration::from_secs(15), |t| t.contains(&closed));
    assert!(text.contains(&closed), "{}: not closed:\n{text}", gw.name());
    let audit = std::fs::read_to_string(tmp.path().join("audit.jsonl")).unwrap_or_default();
    assert_eq!(status(port, "/api/flaky/7"), 200, "{audit}");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Restart recovery: fused, agent stopped, gateway loses the state; the
    // agent's next start puts it back from its state file.
    override_route(admin, "force-open", "/api/flaky/{id}");
    assert!(wait_status(port, "/api/flaky/7", 503, 5 * SECOND).is_some());
    agent.stop().unwrap();
    gw.forget();
    assert_eq!(
        status(port, "/api/flaky/7"),
        200,
        "{}: state kept",
        gw.name()
    );
    let agent = Agent::start(&yaml).unwrap();
    let restored = wait_status(port, "/api/flaky/7", 503, 10 * SECOND);
    assert!(
        restored.is_some(),
        "{}: not restored: {}",
        gw.name(),
        agent.log()
    );
    assert_eq!(status(port, "/api/healthy"), 200);
    assert_eq!(
        identity(gw.pid()),
        before,
        "{}: gateway restarted",
        gw.name()
    );
}

/// A hostile route fused through the gateway: its configuration stays valid
/// and only that route answers 503. Then the gateway goes down: the action
/// fails, is counted and retried, and converges once the gateway is back.
fn hostile_route_and_gateway_outage(gw: &mut dyn Gateway, backend: &Shop) {
    let tmp = tempfile::tempdir().unwrap();
    let admin = env::free_port();
    let yaml = agent_yaml(tmp.path(), backend.port(), admin, &gw.action_yaml());
    let agent = Agent::start(&yaml).unwrap();
    let port = gw.port();
    override_route(admin, "force-open", HOSTILE);
    let hit = wait_status(port, HOSTILE_HIT, 503, 5 * SECOND);
    assert!(
        hit.is_some(),
        "{}: hostile route not fused: {}",
        gw.name(),
        agent.log()
    );
    gw.check_config(1);
    for path in [
        HOSTILE_MISS,
        "/evil/a",
        "/api/healthy",
        "/evil/a%22b%5Cc%20dZZe",
    ] {
        assert_eq!(status(port, path), 200, "{}: {path}", gw.name());
    }
    // Down: the next fuse fails and is retried with backoff, counted.
    let name = gw.name();
    let errors = format!("sloguard_fuse_actions_total{{action=\"{name}\",result=\"error\"}}");
    let oks = format!("sloguard_fuse_actions_total{{action=\"{name}\",result=\"ok\"}}");
    gw.stop();
    override_route(admin, "force-open", "/api/down");
    let text = agent.scrape_until(10 * SECOND, |t| metric_in(t, &errors) >= 2.0);
    assert!(
        metric_in(&text, &errors) >= 2.0,
        "{name}: retries not counted:\n{text}"
    );
    let ok_before = metric_in(&text, &oks);
    // Back, with none of the state: the retry converges it.
    gw.start_empty();
    let conv = wait_status(port, "/api/down", 503, 10 * SECOND);
    assert!(conv.is_some(), "{name}: never converged: {}", agent.log());
    assert_eq!(status(port, HOSTILE_HIT), 503);
    assert_eq!(status(port, "/api/healthy"), 200);
    gw.check_config(2);
    let text = agent.scrape_until(5 * SECOND, |t| metric_in(t, &oks) > ok_before);
    assert!(metric_in(&text, &oks) > ok_before, "{text}");
    let (code, fuses) = http_request(
        SocketAddr::from(([127, 0, 0, 1], admin)),
        "GET",
        "/api/v1/fuses",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&fuses).unwrap();
    for f in v["fuses"].as_array().unwrap() {
        let pending = f["pending_actions"].as_array().map_or(0, |p| p.len());
        assert_eq!(pending, 0, "{name}: still pending: {f}");
    }
}

#[test]
fn haproxy_l2_fuses_one_route_without_reload_and_recovers() {
    if !ready(
        "haproxy_l2_fuses_one_route_without_reload_and_recovers",
        "haproxy",
    ) {
        return;
    }
    let backend = Shop::flaky();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Haproxy::start(dir.path(), backend.port()).unwrap();
    l2_fuses_one_route_without_reload_and_recovers(&mut gw, &backend);
}

#[test]
fn caddy_l2_fuses_one_route_without_reload_and_recovers() {
    if !ready(
        "caddy_l2_fuses_one_route_without_reload_and_recovers",
        "caddy",
    ) {
        return;
    }
    let backend = Shop::flaky();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Caddy::start(dir.path(), backend.port()).unwrap();
    l2_fuses_one_route_without_reload_and_recovers(&mut gw, &backend);
}

#[test]
fn haproxy_hostile_route_and_outage() {
    if !ready("haproxy_hostile_route_and_outage", "haproxy") {
        return;
    }
    let backend = Shop::flaky();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Haproxy::start(dir.path(), backend.port()).unwrap();
    hostile_route_and_gateway_outage(&mut gw, &backend);
}

#[test]
fn caddy_hostile_route_and_outage() {
    if !ready("caddy_hostile_route_and_outage", "caddy") {
        return;
    }
    let backend = Shop::flaky();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Caddy::start(dir.path(), backend.port()).unwrap();
    hostile_route_and_gateway_outage(&mut gw, &backend);
}

/// When the first request that got a 503 was sent, from `t0`: the gateway
/// had the fuse by then. A request through a gateway to the backend takes
/// tens of ms here, so one poller would add up to that much; eight staggered
/// pollers bound the error to a few ms.
fn first_503_sent(port: u16, path: &'static str, t0: Instant) -> Option<Duration> {
    let pollers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(700 * i));
                while t0.elapsed() < 10 * SECOND {
                    let sent = t0.elapsed();
                    if status(port, path) == 503 {
                        return Some(sent);
                    }
                }
                None
            })
        })
        .collect();
    pollers.into_iter().filter_map(|p| p.join().unwrap()).min()
}

/// Fuse decision (the operator's force-open, answered) → first 503 at each
/// gateway, nginx's map + reload beside the two runtime APIs, each driven by
/// an agent with only that action. `cargo xtask bench --only latency` runs this with
/// `SG_BENCH_FUSE_LATENCY_DIR` set and shows the figures; as a test it checks
/// that every gateway fuses and unfuses each round.
#[test]
fn fuse_decision_to_first_503_per_gateway() {
    let test = "fuse_decision_to_first_503_per_gateway";
    if !ready(test, "haproxy") || !ready(test, "caddy") || !ready(test, "nginx") {
        return;
    }
    let backend = Shop::flaky();
    let dir = tempfile::tempdir().unwrap();
    let haproxy = Haproxy::start(dir.path(), backend.port()).unwrap();
    let caddy = Caddy::start(dir.path(), backend.port()).unwrap();
    // nginx with the docs' map recipe; the map must exist before it starts.
    let map = dir.path().join("nginx-fuses.map");
    std::fs::write(&map, "").unwrap();
    let nginx = Nginx::start(&NginxOptions {
        http_extra: format!(
            "map \"$request_method $uri\" $sloguard_fused {{ default 0; include {}; }}",
            map.display()
        ),
        server_extra: format!(
            "if ($sloguard_fused) {{ return 503 \"route fused by sloguard\\n\"; }}\n\
             location / {{ proxy_pass http://127.0.0.1:{}; }}",
            backend.port()
        ),
        access_log: false,
        ..Default::default()
    })
    .unwrap();
    let nginx_bin = env::which("nginx").unwrap();
    let prefix = nginx.prefix.path();
    let nginx_action = format!(
        "    - type: file\n      name: nginx\n      services: [{SERVICE}]\n      path: {}\n      format: nginx_map\n      reload_command: [{}, -p, {}, -c, {}, -s, reload]\n",
        map.display(),
        nginx_bin.display(),
        prefix.display(),
        prefix.join("nginx.conf").display()
    );
    let gateways = [
        ("nginx_reload", nginx.port, nginx_action),
        (
            "haproxy_runtime_api",
            haproxy.port,
            haproxy.action_yaml(SERVICE),
        ),
        ("caddy_admin_api", caddy.port, caddy.action_yaml(SERVICE)),
    ];
    let route = "/api/latency";
    let rounds = 7;
    let mut took: Vec<Vec<Duration>> = vec![Vec::new(); gateways.len()];
    let mut action_mean = vec![0.0; gateways.len()];
    // One agent per action, so no action's file writes or reloads slow
    // another's.
    for (i, (name, port, action)) in gateways.iter().enumerate() {
        let state = tempfile::tempdir().unwrap();
        let admin = env::free_port();
        let agent = Agent::start(&agent_yaml(state.path(), backend.port(), admin, action)).unwrap();
        for round in 0..rounds {
            // A reload leaves workers of the previous generation serving for a
            // moment: start each round once the gateway settled on 200.
            std::thread::sleep(SECOND / 2);
            let settled = wait_status(*port, route, 200, 10 * SECOND);
            assert!(settled.is_some(), "{name} before round {round}");
            let t0 = Instant::now();
            override_route(admin, "force-open", route);
            let seen = first_503_sent(*port, route, t0);
            let seen = seen.unwrap_or_else(|| panic!("{name}: no 503: {}", agent.log()));
            took[i].push(seen);
            override_route(admin, "release", route);
        }
        let settled = wait_status(*port, route, 200, 10 * SECOND);
        assert!(settled.is_some(), "{name}: not released");
        // The action's own time, from its duration histogram.
        let text = agent.scrape().unwrap();
        let action = name.split('_').next().unwrap();
        let m = |suffix: &str| {
            metric_in(
                &text,
                &format!("sloguard_fuse_action_duration_seconds_{suffix}{{action=\"{action}\"}}"),
            )
        };
        action_mean[i] = m("sum") / m("count").max(1.0);
        agent.stop().unwrap();
    }
    let out = std::env::var_os("SG_BENCH_FUSE_LATENCY_DIR");
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let nginx_median = median(&mut took[0].clone());
    for (i, (name, _, _)) in gateways.iter().enumerate() {
        let v = &mut took[i];
        let med = median(v);
        let mean = v.iter().sum::<Duration>() / v.len() as u32;
        let ratio = med.as_secs_f64() / nginx_median.as_secs_f64();
        eprintln!(
            "fuse decision → first 503, {name}: median {med:?}, mean {mean:?}, min {:?}, max {:?} ({ratio:.2}× nginx reload), {rounds} rounds; the action call itself: mean {:.1} ms",
            v[0],
            v[v.len() - 1],
            action_mean[i] * 1e3
        );
        if let Some(d) = &out {
            let j = serde_json::json!({
                "name": format!("fuse_latency/{name}"),
                "mean_ns": mean.as_nanos() as f64,
                "median_ns": med.as_nanos() as f64,
                "min_ns": v[0].as_nanos() as f64,
                "max_ns": v[v.len() - 1].as_nanos() as f64,
                "median_ratio_to_nginx_reload": ratio,
                "action_call_mean_seconds": action_mean[i],
                "rounds": rounds,
            });
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(
                Path::new(d).join(format!("fuse_latency_{name}.json")),
                j.to_string(),
            )
            .unwrap();
        }
    }
}

/// The action itself against a real HAProxy over a TCP stats socket; a
/// command HAProxy refuses (a map it did not load) fails the call with
/// HAProxy's reason and changes nothing.
#[test]
fn haproxy_action_over_tcp_and_refused_commands() {
    use sloguard::request::route::RouteKey;
    use sloguard::respond::fuse::action::{ActionJob, FuseAction, HaproxyAction, SnapshotEntry};
    use sloguard::respond::fuse::{FuseState, HaproxyActionConfig};
    if !env::require_tool("haproxy") {
        return;
    }
    let backend = Shop::flaky();
    let dir = tempfile::tempdir().unwrap();
    let admin_tcp = env::free_port();
    let gw = Haproxy::start_with(
        dir.path(),
        backend.port(),
        &format!("    stats socket ipv4@127.0.0.1:{admin_tcp} level admin\n"),
    )
    .unwrap();
    let route = RouteKey::new(SERVICE, "GET", "/api/tcp");
    let job = ActionJob {
        route: Some(route.clone()),
        state: FuseState::Open,
        seq: 1,
        idempotency_key: "k".into(),
        snapshot: Arc::new(vec![SnapshotEntry {
            route,
            state: FuseState::Open,
        }]),
        covers: Vec::new(),
        release: false,
    };
    let action = |map: &std::path::Path| {
        HaproxyAction::new(HaproxyActionConfig {
            socket: format!("127.0.0.1:{admin_tcp}"),
            map: map.to_path_buf(),
            retries: 0,
            ..Default::default()
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let unknown = dir.path().join("not-loaded.map");
    let err = rt.block_on(action(&unknown).apply(&job)).unwrap_err();
    assert!(err.to_string().contains("Unknown map identifier"), "{err}");
    assert!(gw.live_map().is_empty(), "{:?}", gw.live_map());
    assert_eq!(status(gw.port, "/api/tcp"), 200);
    rt.block_on(action(&gw.map).apply(&job)).unwrap();
    assert_eq!(gw.live_map().len(), 1, "{:?}", gw.live_map());
    assert_eq!(status(gw.port, "/api/tcp"), 503);
    assert_eq!(status(gw.port, "/api/tcp/x"), 200);
}
