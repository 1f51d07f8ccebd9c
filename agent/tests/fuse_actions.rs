//! Fuse actions against real peers on loopback: a real nginx that includes the
//! map file sloguard writes and reloads, and an HTTP gateway API the test runs.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use sloguard::clock::{Clock, ManualClock};
use sloguard::request::route::{RouteKey, RouteTable, RoutesConfig};
use sloguard::respond::alert::model::{AlertEvent, AlertStatus, RouteVerdict};
use sloguard::respond::fuse::action::idempotency_key;
use sloguard::respond::fuse::{
    ActionConfig, FileActionConfig, FileFormat, FuseConfig, FuseController, FuseMode, FuseState,
    HttpActionConfig,
};
use testbed::nginx::{Nginx, NginxOptions};

fn l2(r: &RouteKey) -> AlertEvent {
    let mut ev = AlertEvent::example_l2(&r.route, AlertStatus::Firing, UNIX_EPOCH);
    ev.route = r.clone();
    ev.figures.requests = 500;
    ev.figures.errors_5xx = 40;
    ev
}

/// A judged, healthy period of `r` ending at `at`: the fuse counts a route's
/// traffic before it acts on it (`max_fused_share`).
fn healthy(r: &RouteKey, at: std::time::SystemTime) -> RouteVerdict {
    RouteVerdict {
        route: r.clone(),
        period_end: at,
        requests: 100,
        judged: true,
        healthy: true,
    }
}

fn fuse_cfg(dir: &Path, actions: Vec<ActionConfig>) -> FuseConfig {
    FuseConfig {
        mode: FuseMode::Enforce,
        max_fused_share: 1.0,
        min_requests: 1,
        state_file: dir.join("state.json"),
        audit_file: Some(dir.join("audit.jsonl")),
        actions,
        ..Default::default()
    }
}

/// Ticks until every action owes nothing for `r`; bounded.
async fn settle(c: &mut FuseController, r: &RouteKey) {
    for _ in 0..1000 {
        c.tick();
        if c.status(r).is_some_and(|s| s.pending_actions.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("actions still pending: {:?}", c.status(r));
}

/// nginx from `testbed`, or None outside CI when it is not installed
/// (in CI a missing nginx fails the test).
fn nginx_installed(test: &str) -> bool {
    if testbed::env::which("nginx").is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("nginx is missing (apt-get install -y nginx); required in CI");
    }
    eprintln!("SKIP {test}: nginx not installed");
    false
}

/// The snippet docs/fuse.md shows: sloguard rewrites the map file and
/// reloads nginx; 1 = fused.
fn fuse_map_snippet(map: &Path) -> String {
    format!(
        r#"map "$request_method $uri" $sloguard_fused {{
        default 0;
        include {map};
    }}"#,
        map = map.display()
    )
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `url` until it answers `want`; bounded.
async fn expect_status(client: &reqwest::Client, url: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = get(client, url).await;
        if s == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: want {want}, got {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx on loopback with the docs' map snippet in front of an upstream that
/// answers 200 on every path, and the file action that feeds it.
struct MapGateway {
    /// The test's files (map, fuse state, audit).
    dir: tempfile::TempDir,
    client: reqwest::Client,
    _nginx: Nginx,
    base: String,
    map: PathBuf,
    action: ActionConfig,
}

/// None when nginx is not installed (outside CI).
async fn start_map_gateway(test: &str) -> Option<MapGateway> {
    if !nginx_installed(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Upstream: answers 200 on every path.
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    let app =
        Router::new().fallback(|uri: Uri| async move { format!("upstream ok {}", uri.path()) });
    tokio::spawn(async move { axum::serve(up, app).await });

    let map = d.join("sloguard-fuses.map");
    std::fs::write(&map, "").unwrap(); // nginx needs the include to exist at start
    let nginx = Nginx::start(&NginxOptions {
        access_log: false,
        http_extra: fuse_map_snippet(&map),
        server_extra: format!(
            r#"if ($sloguard_fused) {{
            return 503 "route fused by sloguard\n";
        }}
        location / {{
            proxy_pass http://127.0.0.1:{up_port};
        }}"#
        ),
        ..NginxOptions::default()
    })
    .expect("nginx starts with the fuse map snippet");
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    expect_status(&client, &format!("{base}/api/slow"), 200).await;
    let action = ActionConfig::File(FileActionConfig {
        name: "nginx".into(),
        path: map.clone(),
        format: FileFormat::NginxMap,
        reload_command: nginx.reload_command(),
        ..Default::default()
    });
    Some(MapGateway {
        dir,
        client,
        _nginx: nginx,
        base,
        map,
        action,
    })
}

#[tokio::test]
async fn nginx_answers_fused_route_with_503_from_the_map() {
    let Some(gw) = start_map_gateway("nginx_answers_fused_route_with_503_from_the_map").await
    else {
        return;
    };
    let (d, client) = (gw.dir.path(), gw.client.clone());
    let base = gw.base.clone();
    let map = gw.map.clone();
    let cfg = fuse_cfg(d, vec![gw.action.clone()]);
    let clock = ManualClock::default();
    let mut c = FuseController::new(cfg, Arc::new(clock.clone())).unwrap();
    let slow = RouteKey::new("shop", "GET", "/api/slow");
    let item = RouteKey::new("shop", "GET", "/api/items/{id}");
    let other = RouteKey::new("shop", "GET", "/api/other");
    // Characters that are regex or nginx syntax reach nginx as \xHH escapes.
    let dotted = RouteKey::new("shop", "GET", "/v1.0/a b\"c;");
    let v = |r: &RouteKey| healthy(r, clock.now());
    c.on_verdicts(&[v(&slow), v(&item), v(&other), v(&dotted)]);

    c.on_alert(&l2(&slow));
    clock.advance(Duration::from_secs(10));
    c.on_alert(&l2(&item));
    c.on_alert(&l2(&dotted));
    settle(&mut c, &dotted).await;
    settle(&mut c, &slow).await;
    settle(&mut c, &item).await;
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(text.contains("\"~^GET /api/slow$\" 1;"), "{text}");

    let body = expect_status(&client, &format!("{base}/api/slow"), 503).await;
    assert_eq!(body, "route fused by sloguard\n");
    expect_status(&client, &format!("{base}/api/slow?x=1"), 503).await;
    expect_status(&client, &format!("{base}/api/items/42"), 503).await;
    // Neighbours still reach the upstream.
    assert_eq!(
        get(&client, &format!("{base}/api/other")).await,
        (200, "upstream ok /api/other".into())
    );
    assert_eq!(get(&client, &format!("{base}/api/slower")).await.0, 200);
    assert_eq!(get(&client, &format!("{base}/api/items/42/x")).await.0, 200);
    assert_eq!(
        client
            .post(format!("{base}/api/slow"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // /api/slow's open time is over (item has 10 s left): half_open lets
    // its traffic through again.
    clock.advance(Duration::from_secs(20));
    c.tick();
    assert_eq!(c.status(&slow).unwrap().state, FuseState::HalfOpen);
    settle(&mut c, &slow).await;
    expect_status(&client, &format!("{base}/api/slow"), 200).await;
    expect_status(&client, &format!("{base}/api/items/42"), 503).await;
}

/// Requests the gateway saw: method, URI, headers, body.
type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap, String)>>>;

#[derive(Clone, Default)]
struct Gateway {
    seen: Seen,
    /// Answer 500 to this many requests first.
    fail_first: Arc<AtomicUsize>,
    /// Answer every request to /fuse/... with a redirect to /elsewhere.
    redirect: bool,
}

async fn start_gateway(g: Gateway) -> u16 {
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: String| {
            let g = g.clone();
            async move {
                g.seen
                    .lock()
                    .unwrap()
                    .push((method, uri.to_string(), headers, body));
                if g.redirect && uri.path().starts_with("/fuse/") {
                    return (StatusCode::FOUND, [("location", "/elsewhere")]).into_response();
                }
                let left = g.fail_first.load(Ordering::SeqCst);
                if left > 0 {
                    g.fail_first.store(left - 1, Ordering::SeqCst);
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                } else {
                    StatusCode::OK.into_response()
                }
            }
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

fn http_action(port: u16, retries: u32) -> ActionConfig {
    ActionConfig::Http(HttpActionConfig {
        name: "gateway".into(),
        method: "PUT".into(),
        url: format!(
            "http://127.0.0.1:{port}/fuse/{{{{service}}}}?route={{{{route}}}}&state={{{{state}}}}"
        ),
        headers: [
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Route".to_string(), "{{method}} {{route}}".to_string()),
        ]
        .into_iter()
        .collect(),
        retries,
        backoff: Duration::from_millis(20),
        ..Default::default()
    })
}

/// A controller whose one HTTP action (`retries` attempts per try) talks to a
/// gateway that fails its first two calls.
async fn controller_on_failing_gateway(
    retries: u32,
) -> (Gateway, tempfile::TempDir, ManualClock, FuseController) {
    let g = Gateway::default();
    g.fail_first.store(2, Ordering::SeqCst);
    let port = start_gateway(g.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let c = FuseController::new(
        fuse_cfg(dir.path(), vec![http_action(port, retries)]),
        Arc::new(clock.clone()),
    )
    .unwrap();
    (g, dir, clock, c)
}

#[tokio::test]
async fn http_action_retries_with_one_idempotency_key() {
    let (g, _dir, _clock, mut c) = controller_on_failing_gateway(3).await;
    let r = RouteKey::new("shop", "GET", "/users/{id}");
    c.on_alert(&l2(&r));
    settle(&mut c, &r).await;

    let seen = g.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 500s then a 200");
    let key = idempotency_key(&r, 1);
    for (method, uri, headers, body) in &seen {
        assert_eq!(method, Method::PUT);
        assert_eq!(uri, "/fuse/shop?route=/users/%7Bid%7D&state=open");
        assert_eq!(headers["idempotency-key"], key.as_str());
        assert_eq!(headers["x-route"], "GET /users/{id}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["route"], "/users/{id}");
        assert_eq!(v["state"], "open");
    }
}

#[tokio::test]
async fn http_action_that_keeps_failing_is_retried_later_not_forgotten() {
    let (g, _dir, clock, mut c) = controller_on_failing_gateway(1).await;
    let r = RouteKey::new("shop", "GET", "/pay");
    c.on_alert(&l2(&r));
    // Both attempts of the first try fail.
    for _ in 0..500 {
        c.tick();
        if c.status(&r).unwrap().pending_actions[0].failures == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = c.status(&r).unwrap().pending_actions[0].clone();
    assert_eq!(p.failures, 1);
    assert_eq!(p.last_error.as_deref(), Some("gateway answered HTTP 500"));
    assert_eq!(g.seen.lock().unwrap().len(), 2);
    // After the backoff on the clock, the controller tries again and succeeds.
    clock.advance(Duration::from_secs(1));
    settle(&mut c, &r).await;
    let seen = g.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.2["idempotency-key"] == idempotency_key(&r, 1).as_str())
    );
}

/// Ticks until the first pending action of `r` has failed at least once; bounded.
async fn first_failure(c: &mut FuseController, r: &RouteKey) -> String {
    for _ in 0..1000 {
        c.tick();
        if let Some(p) = c.status(r).and_then(|s| s.pending_actions.first().cloned())
            && p.failures >= 1
        {
            return p.last_error.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no failure: {:?}", c.status(r));
}

#[tokio::test]
async fn http_action_does_not_follow_redirects() {
    let g = Gateway {
        redirect: true,
        ..Default::default()
    };
    let port = start_gateway(g.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = FuseController::new(
        fuse_cfg(dir.path(), vec![http_action(port, 0)]),
        Arc::new(ManualClock::default()),
    )
    .unwrap();
    let r = RouteKey::new("shop", "GET", "/pay");
    c.on_alert(&l2(&r));
    let err = first_failure(&mut c, &r).await;
    assert_eq!(err, "gateway answered HTTP 302");
    let seen = g.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| !s.1.starts_with("/elsewhere")),
        "followed the redirect: {seen:?}"
    );
}

#[tokio::test]
async fn http_action_errors_do_not_show_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let closed = testbed::env::free_port(); // nothing listens there
    let action = ActionConfig::Http(HttpActionConfig {
        name: "envoy".into(),
        url: format!(
            "http://127.0.0.1:{closed}/runtime_modify?token=s3cret&k.{{{{route_slug}}}}={{{{fused_percent}}}}"
        ),
        retries: 0,
        ..Default::default()
    });
    let mut c = FuseController::new(
        fuse_cfg(dir.path(), vec![action]),
        Arc::new(ManualClock::default()),
    )
    .unwrap();
    let r = RouteKey::new("shop", "GET", "/pay");
    c.on_alert(&l2(&r));
    let err = first_failure(&mut c, &r).await;
    assert!(!err.contains("s3cret") && !err.contains("pay"), "{err}");
    assert!(err.contains("/runtime_modify?REDACTED"), "{err}");
}

#[tokio::test]
async fn http_action_trusts_its_ca_file_and_sends_secret_headers_from_files() {
    if !nginx_installed("http_action_trusts_its_ca_file_and_sends_secret_headers_from_files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = testbed::certs::make_certs(d);
    // 200 only with both secrets; the log shows what arrived.
    let nginx = Nginx::start(&NginxOptions {
        access_log: false,
        listen_params: "ssl".into(),
        server_extra: format!(
            r#"ssl_certificate {cert};
        ssl_certificate_key {key};
        location /fuse/ {{
            if ($http_x_api_key != "k3y") {{ return 401; }}
            if ($http_authorization != "Bearer t0ken") {{ return 403; }}
            return 200 "ok";
        }}"#,
            cert = cert.display(),
            key = key.display()
        ),
        ..NginxOptions::default()
    })
    .expect("nginx with TLS");
    let port = nginx.port;
    std::fs::write(d.join("api-key"), "k3y\n").unwrap();
    std::fs::write(d.join("token"), "t0ken\n").unwrap();
    let action = |name: &str, tls: bool| {
        ActionConfig::Http(HttpActionConfig {
            name: name.into(),
            url: format!("https://127.0.0.1:{port}/fuse/{{{{service}}}}"),
            header_files: [("X-Api-Key".to_string(), d.join("api-key"))]
                .into_iter()
                .collect(),
            bearer_token_file: Some(d.join("token")),
            tls: tls.then(|| sloguard::respond::alert::delivery_config::TlsConfig {
                ca_file: Some(ca.clone()),
                insecure_skip_verify: false,
            }),
            retries: 0,
            ..Default::default()
        })
    };
    let mut c = FuseController::new(
        fuse_cfg(d, vec![action("trusting", true)]),
        Arc::new(ManualClock::default()),
    )
    .unwrap();
    let r = RouteKey::new("shop", "GET", "/pay");
    c.on_alert(&l2(&r));
    settle(&mut c, &r).await;

    // Without the CA file the same gateway is not trusted.
    let d2 = tempfile::tempdir().unwrap();
    let mut c = FuseController::new(
        fuse_cfg(d2.path(), vec![action("untrusting", false)]),
        Arc::new(ManualClock::default()),
    )
    .unwrap();
    c.on_alert(&l2(&r));
    let err = first_failure(&mut c, &r).await;
    assert!(err.contains("request failed"), "{err}");
}

#[tokio::test]
async fn nginx_map_spares_literal_siblings_and_client_braces() {
    let Some(gw) = start_map_gateway("nginx_map_spares_literal_siblings_and_client_braces").await
    else {
        return;
    };
    let (d, client) = (gw.dir.path(), gw.client.clone());
    let base = gw.base.clone();
    // Routes as the route table names the raw paths clients sent.
    let mut table = RouteTable::new(&RoutesConfig::default());
    let mut route = |path: &str| {
        let mut k = table.route_for("shop", "GET", path);
        for _ in 0..10 {
            k = table.route_for("shop", "GET", path);
        }
        k
    };
    let by_id = route("/users/42");
    let me = route("/users/me");
    let braces = route("/lit/{x}");
    let plain = route("/lit/abc");
    assert_eq!(&*by_id.route, "/users/{id}");
    assert_eq!(&*me.route, "/users/me");
    assert_ne!(
        &*braces.route, "/lit/{x}",
        "a client's braces are not a template"
    );

    let clock = ManualClock::default();
    let mut c = FuseController::new(
        fuse_cfg(d, vec![gw.action.clone()]),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let v = |r: &RouteKey| healthy(r, clock.now());
    c.on_verdicts(&[v(&by_id), v(&me), v(&braces), v(&plain)]);
    c.on_alert(&l2(&by_id));
    c.on_alert(&l2(&braces));
    settle(&mut c, &by_id).await;
    settle(&mut c, &braces).await;
    let text = std::fs::read_to_string(&gw.map).unwrap();

    expect_status(&client, &format!("{base}/users/42"), 503).await;
    assert_eq!(
        get(&client, &format!("{base}/users/me")).await.0,
        200,
        "the known literal sibling of a fused template is not fused:\n{text}"
    );
    // reqwest sends `{x}` as %7Bx%7D; nginx's $uri has it decoded.
    expect_status(&client, &format!("{base}/lit/%7Bx%7D"), 503).await;
    assert_eq!(
        get(&client, &format!("{base}/lit/abc")).await.0,
        200,
        "a fused literal path with braces is no wildcard:\n{text}"
    );
    assert_eq!(get(&client, &format!("{base}/lit/y")).await.0, 200);
}

#[tokio::test]
async fn switch_to_dry_run_reopens_the_routes_nginx_was_blocking() {
    let Some(gw) =
        start_map_gateway("switch_to_dry_run_reopens_the_routes_nginx_was_blocking").await
    else {
        return;
    };
    let (d, client) = (gw.dir.path(), gw.client.clone());
    let url = format!("{}/api/slow", gw.base);
    let slow = RouteKey::new("shop", "GET", "/api/slow");
    let clock = ManualClock::default();
    let mut cfg = fuse_cfg(d, vec![gw.action.clone()]);
    let mut c = FuseController::new(cfg.clone(), Arc::new(clock.clone())).unwrap();
    c.on_alert(&l2(&slow));
    settle(&mut c, &slow).await;
    expect_status(&client, &url, 503).await;
    drop(c);

    // The "safe" overlay: same state file and actions, mode dry_run.
    cfg.mode = FuseMode::DryRun;
    let mut c = FuseController::new(cfg, Arc::new(clock.clone())).unwrap();
    for _ in 0..1000 {
        c.tick();
        if c.releasing().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.releasing().is_empty(), "still releasing");
    let text = std::fs::read_to_string(&gw.map).unwrap();
    assert!(!text.contains(" 1;"), "{text}");
    expect_status(&client, &url, 200).await;
}
