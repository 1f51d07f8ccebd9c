//! The fuse `http` action ignores proxies from the environment. Its own test
//! binary: it sets `http_proxy` for the whole process.
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::http::Uri;
use sloguard::clock::ManualClock;
use sloguard::request::route::RouteKey;
use sloguard::respond::alert::model::{AlertEvent, AlertStatus};
use sloguard::respond::fuse::{
    ActionConfig, FuseConfig, FuseController, FuseMode, HttpActionConfig,
};

/// A server that records the URIs it is asked for and answers 200.
async fn recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(uri.to_string());
            "ok"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, seen)
}

#[tokio::test]
async fn http_action_goes_direct_whatever_the_proxy_variables_say() {
    let (proxy, via_proxy) = recorder().await;
    let (gateway, direct) = recorder().await;
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        // SAFETY: this binary has this one test; the runtime is
        // single-threaded and no other thread reads the environment now.
        unsafe { std::env::set_var(var, &proxy_url) };
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = FuseConfig {
        mode: FuseMode::Enforce,
        max_fused_share: 1.0,
        min_requests: 1,
        state_file: dir.path().join("state.json"),
        audit_file: None,
        actions: vec![ActionConfig::Http(HttpActionConfig {
            url: format!("http://127.0.0.1:{gateway}/fuse/{{{{service}}}}"),
            retries: 0,
            ..Default::default()
        })],
        ..Default::default()
    };
    let mut c = FuseController::new(cfg, Arc::new(ManualClock::default())).unwrap();
    let r = RouteKey::new("shop", "GET", "/pay");
    let mut ev = AlertEvent::example_l2(&r.route, AlertStatus::Firing, UNIX_EPOCH);
    ev.route = r.clone();
    ev.figures.requests = 500;
    c.on_alert(&ev);
    for _ in 0..500 {
        c.tick();
        if c.status(&r).is_some_and(|s| s.pending_actions.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*direct.lock().unwrap(), vec!["/fuse/shop".to_string()]);
    assert!(via_proxy.lock().unwrap().is_empty(), "{via_proxy:?}");
}
