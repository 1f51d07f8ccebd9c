//! The admin API over real HTTP on loopback, with a ManualClock fuse.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::respond::fuse::{FuseConfig, FuseController, FuseMode, FuseState};

const TOKEN: &str = "s3cret-token-of-32-bytes-or-more";

struct Api {
    base: String,
    fuse: SharedFuse,
    clock: ManualClock,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let cfg = FuseConfig {
        mode: FuseMode::Enforce,
        state_file: dir.path().join("state.json"),
        audit_file: Some(dir.path().join("audit.jsonl")),
        ..Default::default()
    };
    let fuse: SharedFuse = Arc::new(Mutex::new(
        FuseController::new(cfg, Arc::new(clock.clone())).unwrap(),
    ));
    let figures: RouteFigures = Arc::new(|| {
        json!([
            {"service": "shop", "method": "GET", "route": "/slow", "p99_seconds": 1.9},
            {"service": "shop", "method": "GET", "route": "/ok", "p99_seconds": 0.01},
        ])
    });
    let app = router(fuse.clone(), Some(figures), TOKEN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api {
        base,
        fuse,
        clock,
        dir,
        http: reqwest::Client::new(),
    }
}

impl Api {
    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }
}

const OPEN_SLOW: &str = r#"{"service":"shop","method":"GET","route":"/slow","ttl":"10m","reason":"db failover","who":"alice"}"#;

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_changes_nothing() {
    let api = start().await;
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-token-of-32-bytes-or-more-but-longer"),
        Some(""),
    ] {
        let (status, body) = api.post("/api/v1/fuses/force-open", token, OPEN_SLOW).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(body["error"].as_str().unwrap().contains("token"));
        assert_eq!(api.get("/api/v1/fuses", token).await.0, 401);
        assert_eq!(api.get("/api/v1/routes", token).await.0, 401);
    }
    // Not even a malformed body gets past the token check.
    assert_eq!(
        api.post("/api/v1/fuses/force-open", Some("x"), "{oops")
            .await
            .0,
        401
    );
    let resp = api
        .http
        .get(format!("{}/api/v1/fuses", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert!(api.fuse.lock().unwrap().states().is_empty());
    assert_eq!(api.audit(), "");
}

#[tokio::test]
async fn force_open_with_ttl_expires_on_the_clock() {
    let api = start().await;
    let (status, body) = api
        .post("/api/v1/fuses/force-open", Some(TOKEN), OPEN_SLOW)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "open");
    assert_eq!(body["override"]["kind"], "force_open");
    assert_eq!(body["override"]["who"], "alice");

    let (_, fuses) = api.get("/api/v1/fuses", Some(TOKEN)).await;
    assert_eq!(fuses["mode"], "enforce");
    assert_eq!(fuses["fuses"][0]["route"], "/slow");

    api.clock.advance(Duration::from_secs(599));
    api.fuse.lock().unwrap().tick();
    let (_, fuses) = api.get("/api/v1/fuses", Some(TOKEN)).await;
    assert_eq!(fuses["fuses"][0]["state"], "open");
    api.clock.advance(Duration::from_secs(1));
    api.fuse.lock().unwrap().tick();
    let (_, fuses) = api.get("/api/v1/fuses", Some(TOKEN)).await;
    assert_eq!(fuses["fuses"][0]["state"], "half_open");
    assert_eq!(fuses["fuses"][0]["override"], Value::Null);

    let audit: Vec<Value> = api
        .audit()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(audit.len(), 2);
    assert_eq!(
        (audit[0]["cause"].as_str(), audit[0]["who"].as_str()),
        (Some("override"), Some("alice"))
    );
    assert_eq!(audit[0]["why"], "db failover");
    assert_eq!(audit[1]["cause"], "ttl");
}

#[tokio::test]
async fn force_closed_and_release() {
    let api = start().await;
    let body = r#"{"service":"shop","method":"get","route":"/slow","ttl":"1h","reason":"false positive","who":"bob"}"#;
    let (status, b) = api
        .post("/api/v1/fuses/force-closed", Some(TOKEN), body)
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        (b["state"].as_str(), b["method"].as_str()),
        (Some("closed"), Some("GET"))
    );
    let rel = r#"{"service":"shop","method":"GET","route":"/slow","reason":"done","who":"bob"}"#;
    let (status, b) = api.post("/api/v1/fuses/release", Some(TOKEN), rel).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["override"], Value::Null);
    let (status, b) = api.post("/api/v1/fuses/release", Some(TOKEN), rel).await;
    assert_eq!(status, 409, "{b}");
    assert_eq!(api.audit().lines().count(), 2);
}

#[tokio::test]
async fn bad_requests_get_4xx_with_a_message_and_change_nothing() {
    let api = start().await;
    let cases = [
        ("{oops", 400),
        (
            r#"{"service":"shop","method":"GET","route":"/slow","reason":"r","who":"a","extra":1}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"GET","route":"/slow","reason":"r"}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"GET","route":"/slow","ttl":"soon","reason":"r","who":"a"}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"GET","route":"/slow","ttl":"3650d","reason":"r","who":"a"}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"GET","route":"/slow","ttl":"0s","reason":"r","who":"a"}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"GET","route":"slow","reason":"r","who":"a"}"#,
            422,
        ),
        (
            r#"{"service":"","method":"GET","route":"/slow","reason":"r","who":"a"}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"G T","route":"/slow","reason":"r","who":"a"}"#,
            422,
        ),
        (
            r#"{"service":"shop","method":"GET","route":"/slow","reason":" ","who":"a"}"#,
            422,
        ),
        (r#"[1,2]"#, 422),
    ];
    for (body, want) in cases {
        let (status, b) = api
            .post("/api/v1/fuses/force-open", Some(TOKEN), body)
            .await;
        assert_eq!(status, want, "{body}: {b}");
        assert!(!b["error"].as_str().unwrap_or("").is_empty(), "{body}: {b}");
    }
    let rel_ttl =
        r#"{"service":"shop","method":"GET","route":"/slow","ttl":"1m","reason":"r","who":"a"}"#;
    assert_eq!(
        api.post("/api/v1/fuses/release", Some(TOKEN), rel_ttl)
            .await
            .0,
        422
    );
    assert!(api.fuse.lock().unwrap().states().is_empty());
    assert_eq!(api.audit(), "");
}

#[tokio::test]
async fn routes_merge_slo_figures_with_fuse_state() {
    let api = start().await;
    api.post("/api/v1/fuses/force-open", Some(TOKEN), OPEN_SLOW)
        .await;
    let manual = r#"{"service":"billing","method":"POST","route":"/pay","reason":"r","who":"a"}"#;
    assert_eq!(
        api.post("/api/v1/fuses/force-closed", Some(TOKEN), manual)
            .await
            .0,
        200
    );
    let (status, b) = api.get("/api/v1/routes", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let routes = b["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0]["route"], "/slow");
    assert_eq!(routes[0]["p99_seconds"], 1.9);
    assert_eq!(routes[0]["fuse"]["state"], "open");
    assert_eq!(routes[1]["fuse"]["state"], "closed");
    assert_eq!(routes[2]["route"], "/pay");
    assert_eq!(routes[2]["fuse"]["override"]["kind"], "force_closed");
    assert_eq!(
        api.fuse
            .lock()
            .unwrap()
            .status(&RouteKey::new("shop", "GET", "/slow"))
            .unwrap()
            .state,
        FuseState::Open
    );
}

#[test]
fn token_from_file_wins_then_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let from_env = "from-env-0123456789abcdef0123456789";
    let from_file = "from-file-0123456789abcdef0123456789";
    let env = |k: &str| (k == DEFAULT_TOKEN_ENV).then(|| format!(" {from_env} \n"));
    let mut cfg = AdminConfig::default();
    assert_eq!(load_token(&cfg, env).unwrap().as_deref(), Some(from_env));
    assert_eq!(load_token(&cfg, |_| None).unwrap(), None);
    assert_eq!(load_token(&cfg, |_| Some("  ".into())).unwrap(), None);
    cfg.token_file = Some(file.clone());
    assert!(matches!(
        load_token(&cfg, env),
        Err(AdminError::TokenFile { .. })
    ));
    std::fs::write(&file, "\n").unwrap();
    assert!(matches!(
        load_token(&cfg, env),
        Err(AdminError::EmptyToken { .. })
    ));
    std::fs::write(&file, format!("{from_file}\nignored\n")).unwrap();
    assert_eq!(load_token(&cfg, env).unwrap().as_deref(), Some(from_file));
}

#[tokio::test]
async fn no_token_means_the_api_is_off() {
    let cfg = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: None,
        token_env: "SG_TEST_TOKEN_THAT_IS_NEVER_SET".into(),
        allow_non_loopback: false,
    };
    let fuse: SharedFuse = Arc::new(Mutex::new(
        FuseController::with_actions(
            FuseConfig {
                state_file: tempfile::tempdir().unwrap().path().join("s.json"),
                audit_file: None,
                ..Default::default()
            },
            Arc::new(ManualClock::default()),
            vec![],
        )
        .unwrap(),
    ));
    // Returns at once instead of serving forever.
    tokio::time::timeout(
        Duration::from_secs(5),
        serve(&cfg, fuse, None, std::future::pending()),
    )
    .await
    .expect("serve returned")
    .unwrap();
}

#[test]
fn config_checks_token_env() {
    let mut c = AdminConfig::default();
    c.validate().unwrap();
    c.token_env = "SLOGUARD_TOKEN".into();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("admin.token_env")
    );
    c.token_env = "BAD-NAME".into();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("admin.token_env")
    );
}

#[test]
fn short_tokens_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let short = "a".repeat(MIN_TOKEN_BYTES - 1);
    let enough = "a".repeat(MIN_TOKEN_BYTES);
    let cfg = AdminConfig::default();
    let e = load_token(&cfg, |_| Some(short.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("admin.token_env") && e.contains(DEFAULT_TOKEN_ENV) && e.contains("31 bytes"),
        "{e}"
    );
    assert_eq!(
        load_token(&cfg, |_| Some(enough.clone()))
            .unwrap()
            .as_deref(),
        Some(enough.as_str())
    );
    let cfg = AdminConfig {
        token_file: Some(file.clone()),
        ..Default::default()
    };
    // Surrounding blanks do not count.
    std::fs::write(&file, format!("  {short}  \n")).unwrap();
    let e = load_token(&cfg, |_| None).unwrap_err().to_string();
    assert!(
        e.contains("admin.token_file") && e.contains("at least 32"),
        "{e}"
    );
}

#[tokio::test]
async fn non_loopback_listen_needs_the_explicit_key() {
    let mut c = AdminConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("admin.listen") && e.contains("admin.allow_non_loopback"),
        "{e}"
    );
    // Also when the config did not go through validate (library users).
    assert!(matches!(
        AdminServer::bind(&c).await,
        Err(AdminError::NotLoopback(_))
    ));
    c.allow_non_loopback = true;
    c.validate().unwrap();
    c.listen = "[::1]:9465".parse().unwrap();
    c.allow_non_loopback = false;
    c.validate().unwrap();
}

/// Wait (bounded) until `GET /api/v1/fuses` with `token` answers `want`.
async fn wait_status(base: &str, token: &str, want: u16) -> u16 {
    let http = reqwest::Client::new();
    let mut got = 0;
    for _ in 0..100 {
        got = http
            .get(format!("{base}/api/v1/fuses"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

#[tokio::test]
async fn token_file_is_reread_when_it_changes() {
    let api = start().await;
    let file = api.dir.path().join("token");
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let cfg = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: Some(file.clone()),
        ..Default::default()
    };
    // Missing at start (an optional Secret not created yet): listens, refuses.
    let server = AdminServer::bind(&cfg).await.unwrap().expect("listening");
    let base = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(server.run(api.fuse.clone(), None, std::future::pending()));
    assert_eq!(wait_status(&base, &a, 401).await, 401);
    std::fs::write(&file, &a).unwrap();
    assert_eq!(wait_status(&base, &a, 200).await, 200, "file appeared");
    // Rotation the way Kubernetes does it: a new file renamed over the old.
    let tmp = api.dir.path().join("token.new");
    std::fs::write(&tmp, &b).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(wait_status(&base, &b, 200).await, 200, "rotated token");
    assert_eq!(
        wait_status(&base, &a, 401).await,
        401,
        "old token still works"
    );
    // A short new token is not taken, and the old one stops working too.
    std::fs::write(&file, "short").unwrap();
    assert_eq!(wait_status(&base, &b, 401).await, 401);
    assert_eq!(wait_status(&base, "short", 401).await, 401);
}

/// The fuse controller fsyncs its state file under its lock. While another
/// thread holds that lock (as the pipeline or the ticker does during a slow
/// fsync), an override request must wait on the blocking pool, not on the
/// async worker: on a single-threaded runtime, this test's own timer can
/// only fire if the worker is free.
#[tokio::test(flavor = "current_thread")]
async fn fuse_lock_waits_happen_off_the_async_worker() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let api = start().await;
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let worker_ran = Arc::new(AtomicBool::new(false));
    let holder = {
        let fuse = api.fuse.clone();
        let worker_ran = worker_ran.clone();
        std::thread::spawn(move || {
            let _guard = fuse.lock().unwrap();
            held_tx.send(()).unwrap();
            // Hold until the runtime shows it is alive, at most 5 s.
            for _ in 0..500 {
                if worker_ran.load(Ordering::SeqCst) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    };
    held_rx.recv().unwrap();
    let base = api.base.clone();
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/api/v1/fuses/force-open"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(OPEN_SLOW)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    // Long enough for the request to reach the handler and wait on the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker_ran.store(true, Ordering::SeqCst);
    assert!(
        holder.join().unwrap(),
        "the async worker was blocked while the fuse lock was held"
    );
    assert_eq!(request.await.unwrap(), 200);
    assert!(api.audit().contains("db failover"));
}

/// Frozen request snapshots: behind the token, listed, served as HAR and
/// diffed; an unknown id or set is a clear error.
#[tokio::test]
async fn snapshots_are_served_behind_the_token() {
    use crate::respond::alert::model::{AlertEvent, AlertStatus};
    use crate::respond::snapshot::{CaptureContext, Snapshot, SnapshotConfig, SnapshotStore};
    let mut store = SnapshotStore::new(SnapshotConfig::default());
    let route = RouteKey::new("shop", "GET", "/slow");
    let req = crate::request::HttpRequest::synthetic(
        crate::request::Side::Server,
        "GET",
        "/slow?token=abc",
        503,
        0,
        1_000,
    );
    let d = store
        .decide(&route, true, 1_000, || Duration::from_secs(1))
        .unwrap();
    let cx = CaptureContext {
        route: &route,
        gray_tag: "",
        trace_id: &[1; 16],
        span_id: &[2; 8],
        class: d.class,
    };
    let snap = Snapshot::capture(&req, &cx, store.config());
    store.insert(d, snap);
    let mut ev = AlertEvent::example_l2("/slow", AlertStatus::Firing, std::time::UNIX_EPOCH);
    ev.route = route;
    let mut evs = vec![ev];
    store.on_alerts(&mut evs, std::time::UNIX_EPOCH);
    let id = evs[0].snapshot_id.clone().unwrap();

    let api = start().await;
    let cell: TokenCell = Arc::new(std::sync::RwLock::new(Some(TOKEN.into())));
    let app = router_full(api.fuse.clone(), None, Some(store.frozen()), cell);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = Api { base, ..api };

    assert_eq!(api.get("/api/v1/snapshots", None).await.0, 401);
    assert_eq!(
        api.get(&format!("/v1/snapshots/{id}"), Some("wrong"))
            .await
            .0,
        401
    );
    let (status, list) = api.get("/api/v1/snapshots", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(list["snapshots"][0]["id"], id.as_str());
    assert_eq!(list["snapshots"][0]["failed"], 1);
    let (status, har) = api
        .get(&format!("/v1/snapshots/{id}?set=failed"), Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    assert_eq!(har["log"]["version"], "1.2");
    assert_eq!(
        har["log"]["entries"][0]["request"]["url"],
        "http://unknown/slow?token=REDACTED"
    );
    let (status, diff) = api
        .get(&format!("/api/v1/snapshots/{id}/diff"), Some(TOKEN))
        .await;
    assert_eq!((status, diff["diff"]["failed"].as_u64()), (200, Some(1)));
    let (status, e) = api.get("/api/v1/snapshots/snap-0-0", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("no snapshot set"));
    let (status, _) = api
        .get(&format!("/api/v1/snapshots/{id}?set=bogus"), Some(TOKEN))
        .await;
    assert_eq!(status, 422);
}
