use std::time::{Duration, SystemTime};

use super::*;
use crate::request::route::RouteKey;
use crate::request::{Endpoint, HttpRequest, Side};
use crate::respond::alert::model::{AlertEvent, AlertStatus};

fn req(target: &str, status: u16, ms: u64) -> HttpRequest {
    let mut r = HttpRequest::synthetic(Side::Server, "GET", target, status, 0, ms * 1_000_000);
    r.start_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000);
    r.peer = Some(Endpoint {
        ip: "10.0.0.7".parse().unwrap(),
        port: 40_000,
    });
    r.local = Some(Endpoint {
        ip: "10.0.0.1".parse().unwrap(),
        port: 8080,
    });
    r
}

fn snap(
    route: &RouteKey,
    r: &HttpRequest,
    gray: &str,
    class: Class,
    cfg: &SnapshotConfig,
) -> Snapshot {
    let cx = CaptureContext {
        route,
        gray_tag: gray,
        trace_id: &[7; 16],
        span_id: &[8; 8],
        class,
    };
    Snapshot::capture(r, &cx, cfg)
}

fn take(store: &mut SnapshotStore, route: &RouteKey, r: &HttpRequest, gray: &str) {
    let failed = r.status >= 500;
    if let Some(d) = store.decide(route, failed, r.duration_ns(), || {
        Duration::from_millis(800)
    }) {
        let s = snap(route, r, gray, d.class, store.config());
        store.insert(d, s);
    }
}

/// Credentials never reach a snapshot, its HAR or its diff: the parser keeps
/// only that they were sent, query values are masked, and the allowlist
/// refuses credential headers.
#[test]
fn credentials_and_query_values_never_enter_a_snapshot() {
    let head = b"GET /pay?token=SECRET-TOKEN&page=2 HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer SECRET-AUTH\r\nCookie: session=SECRET-COOKIE\r\nProxy-Authorization: Basic SECRET-PROXY\r\nX-Gray-Tag: canary\r\n\r\n";
    let crate::protocol::http1::head::HeadParse::Complete {
        head: crate::protocol::http1::head::Head::Request(h),
        ..
    } = crate::protocol::http1::head::parse_head(head)
    else {
        panic!("head did not parse")
    };
    let mut r = req(&h.target, 500, 5);
    r.headers = h.headers;
    let cfg = SnapshotConfig {
        query_allowlist: vec!["page".into()],
        ..Default::default()
    };
    let route = RouteKey::new("shop", "GET", "/pay");
    let s = snap(&route, &r, "canary", Class::Failed, &cfg);
    let set = FrozenSet {
        id: "snap-1-1".into(),
        created: SystemTime::UNIX_EPOCH,
        alertname: "SloguardP99SpikeWith5xxBurst".into(),
        service: "shop".into(),
        method: "GET".into(),
        route: "/pay".into(),
        gray_tag: String::new(),
        failed: vec![s.clone()],
        healthy: vec![],
    };
    let text = format!(
        "{} {} {:?}",
        serde_json::to_string(&s).unwrap(),
        har::to_har(&set, har::Which::All),
        diff::diff(&set.failed, &set.healthy)
    );
    for secret in [
        "SECRET-TOKEN",
        "SECRET-AUTH",
        "SECRET-COOKIE",
        "SECRET-PROXY",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert_eq!(s.target, "/pay?token=REDACTED&page=2");
    for name in ["authorization", "cookie", "proxy-authorization"] {
        assert!(
            s.header_names.iter().any(|n| n == name),
            "{name} noted by name: {s:?}"
        );
    }
    assert!(s.headers.contains(&("x-gray-tag".into(), "canary".into())));
    for bad in [
        "Authorization",
        "cookie",
        "Set-Cookie",
        "proxy-authorization",
    ] {
        let c = SnapshotConfig {
            header_allowlist: vec![bad.into()],
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("snapshots.header_allowlist[0]") && e.contains("never captured"),
            "{e}"
        );
    }
    let c = SnapshotConfig {
        header_allowlist: vec!["x-unknown".into()],
        ..Default::default()
    };
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("does not keep")
    );
}

/// 100 000 failing requests over 1 000 routes: the live store never holds
/// more than its byte cap, each route at most `per_route`, and every
/// snapshot that left is counted.
#[test]
fn store_stays_at_its_byte_cap_and_counts_drops() {
    let cfg = SnapshotConfig {
        max_bytes: 1024 * 1024,
        per_route: 20,
        ..Default::default()
    };
    let mut store = SnapshotStore::new(cfg.clone());
    let routes: Vec<RouteKey> = (0..1000)
        .map(|i| RouteKey::new("shop", "GET", &format!("/r/{i}")))
        .collect();
    let mut r = req("/r/x?q=1", 503, 20);
    r.headers
        .set(crate::request::Header::UserAgent, &"u".repeat(4096));
    let mut peak = 0;
    for i in 0..100_000 {
        take(&mut store, &routes[i % 1000], &r, "");
        peak = peak.max(store.bytes());
        assert!(
            store.bytes() <= cfg.max_bytes,
            "over the cap at {i}: {}",
            store.bytes()
        );
    }
    assert!(peak > cfg.max_bytes * 9 / 10, "the cap was reached: {peak}");
    let c = &store.counters;
    let captured = c
        .captured
        .get_or_create(&store::ClassLabels { class: "failed" })
        .get();
    let dropped = c.dropped_total("bytes") + c.dropped_total("route_cap");
    assert_eq!(captured, 100_000);
    assert_eq!(
        captured - dropped,
        store.len() as u64,
        "every snapshot is kept or counted"
    );
    assert!(c.dropped_total("bytes") > 0);
    // The value cap held: a 4 KiB user agent became max_value_bytes.
    let set = {
        let mut ev = AlertEvent::example_l2("/r/999", AlertStatus::Firing, SystemTime::UNIX_EPOCH);
        ev.route = routes[999].clone();
        let mut evs = vec![ev];
        store.on_alerts(&mut evs, SystemTime::UNIX_EPOCH);
        let id = evs[0]
            .snapshot_id
            .clone()
            .expect("the last route still has snapshots");
        store.frozen().read().unwrap().get(&id).unwrap()
    };
    let ua = &set.failed[0]
        .headers
        .iter()
        .find(|(k, _)| k == "user-agent")
        .unwrap()
        .1;
    assert_eq!(ua.len(), cfg.max_value_bytes);
}

#[test]
fn per_route_ring_keeps_the_newest_failed_and_a_healthy_sample() {
    let cfg = SnapshotConfig {
        per_route: 5,
        ..Default::default()
    };
    let mut store = SnapshotStore::new(cfg);
    let route = RouteKey::new("shop", "GET", "/a");
    for i in 0..50 {
        take(
            &mut store,
            &route,
            &req(&format!("/a?i={i}"), 500, 5),
            "canary",
        );
        take(&mut store, &route, &req("/a", 200, 5), "");
    }
    // Slow but not failed: over the 800 ms target.
    take(&mut store, &route, &req("/a", 200, 900), "");
    let mut ev = AlertEvent::example_l2("/a", AlertStatus::Firing, SystemTime::UNIX_EPOCH);
    ev.route = route.clone();
    let mut evs = vec![ev.clone()];
    store.on_alerts(&mut evs, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
    let id = evs[0].snapshot_id.clone().expect("firing L2 gets an id");
    let set = store.frozen().read().unwrap().get(&id).unwrap();
    assert_eq!(set.failed.len(), 5);
    assert_eq!(set.failed.last().unwrap().class, Class::Slow);
    assert_eq!(set.healthy.len(), 5);
    assert!(set.healthy.iter().all(|s| s.class == Class::Healthy));
    // The resolve carries the same id; an L1 alert freezes nothing.
    let mut resolved = ev.clone();
    resolved.status = AlertStatus::Resolved;
    let mut l1 = ev;
    l1.kind = crate::respond::alert::model::AlertKind::P99Breach;
    let mut evs = vec![resolved, l1];
    store.on_alerts(&mut evs, SystemTime::UNIX_EPOCH);
    assert_eq!(evs[0].snapshot_id.as_deref(), Some(id.as_str()));
    assert_eq!(evs[1].snapshot_id, None);
    assert_eq!(store.frozen().read().unwrap().len(), 1);
    // A gray rollback freezes the whole route (the diff needs the healthy
    // cohorts) under a new id that names its cohort.
    let mut gray = evs[1].clone();
    gray.kind = crate::respond::alert::model::AlertKind::GrayRollback;
    gray.status = AlertStatus::Firing;
    gray.gray_tag = "canary".into();
    let mut evs = vec![gray];
    store.on_alerts(&mut evs, SystemTime::UNIX_EPOCH);
    let gid = evs[0]
        .snapshot_id
        .clone()
        .expect("gray rollback gets an id");
    assert_ne!(gid, id);
    let g = store.frozen().read().unwrap().get(&gid).unwrap();
    assert_eq!(
        (g.gray_tag.as_str(), g.failed.len(), g.healthy.len()),
        ("canary", 5, 5)
    );
}

/// Told nothing, the diff names the gray tag that only failed requests carry.
#[test]
fn diff_ranks_the_separating_gray_tag_first() {
    let cfg = SnapshotConfig::default();
    let route = RouteKey::new("shop", "GET", "/a");
    let mut failed = Vec::new();
    let mut healthy = Vec::new();
    for i in 0..40 {
        let mut r = req("/a?x=1", 500, 300);
        r.peer = Some(Endpoint {
            ip: format!("10.0.0.{}", i % 3).parse().unwrap(),
            port: 1000 + i,
        });
        failed.push(snap(&route, &r, "canary", Class::Failed, &cfg));
    }
    for i in 0..60 {
        let mut r = req("/a?x=1", 200, 5);
        if i % 10 == 1 {
            // A tag sent but not a cohort (routes.gray_dimensions): still a value.
            r.headers.set(crate::request::Header::XGrayTag, "stable");
        }
        r.peer = Some(Endpoint {
            ip: format!("10.0.0.{}", i % 3).parse().unwrap(),
            port: 2000 + i,
        });
        let tag = if i % 10 == 0 { "canary" } else { "" };
        healthy.push(snap(&route, &r, tag, Class::Healthy, &cfg));
    }
    let d = diff::diff(&failed, &healthy);
    let top = &d.factors[0];
    assert_eq!(
        (top.dimension, top.value.as_str()),
        ("gray_tag", "canary"),
        "{}",
        d.render(10)
    );
    assert_eq!(top.failed_share, 1.0);
    assert!((top.healthy_share - 0.1).abs() < 1e-9);
    assert!(d.render(5).contains("gray_tag"));
    let stable = healthy.iter().find(|s| s.gray_tag == "stable").unwrap();
    assert_eq!(
        stable.cohort, "",
        "the sent tag is kept apart from the cohort"
    );
}

#[test]
fn har_round_trips_and_reads_foreign_entries() {
    let cfg = SnapshotConfig::default();
    let route = RouteKey::new("shop", "GET", "/a");
    let s = snap(
        &route,
        &req("/a?k=v", 500, 12),
        "canary",
        Class::Failed,
        &cfg,
    );
    let h = snap(&route, &req("/a", 200, 3), "", Class::Healthy, &cfg);
    let set = FrozenSet {
        id: "snap-1-1".into(),
        created: SystemTime::UNIX_EPOCH,
        alertname: "x".into(),
        service: "shop".into(),
        method: "GET".into(),
        route: "/a".into(),
        gray_tag: String::new(),
        failed: vec![s.clone()],
        healthy: vec![h.clone()],
    };
    let doc = har::to_har(&set, har::Which::All);
    assert_eq!(doc["log"]["version"], "1.2");
    assert_eq!(
        doc["log"]["entries"][0]["request"]["url"],
        "http://10.0.0.1:8080/a?k=REDACTED"
    );
    let back = har::from_har(&doc).unwrap();
    assert_eq!(back, vec![(true, s), (false, h)]);
    let only_failed = har::to_har(&set, har::Which::Failed);
    assert_eq!(only_failed["log"]["entries"].as_array().unwrap().len(), 1);
    let foreign = serde_json::json!({"log": {"entries": [{
        "startedDateTime": "2026-12-06T10:00:00.5Z", "time": 40.0,
        "request": {"method": "GET", "url": "http://shop:8080/a?x=1",
            "headers": [{"name": "Cookie", "value": "s=SECRET"}, {"name": "X-Gray-Tag", "value": "canary"}]},
        "response": {"status": 502}
    }]}});
    let back = har::from_har(&foreign).unwrap();
    assert!(back[0].0, "502 is failed");
    assert_eq!(back[0].1.target, "/a?x=1");
    assert_eq!(back[0].1.gray_tag, "canary");
    assert!(
        !format!("{back:?}").contains("SECRET"),
        "cookies dropped on read"
    );
    assert!(har::from_har(&serde_json::json!({"x": 1})).is_err());
}

fn replay_opts(url: &str, rate: f64) -> replay::ReplayOptions {
    replay::ReplayOptions {
        target: reqwest::Url::parse(url).unwrap(),
        max_requests: 100,
        max_time: Duration::from_secs(30),
        rate,
        timeout: Duration::from_secs(5),
        allow_unsafe: false,
    }
}

/// A loopback service that records when each request arrived and answers
/// 503 to `X-Gray-Tag: canary`, 200 to the rest.
async fn recorder() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(move |m: axum::http::Method, h: HeaderMap| {
        let seen = s2.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((std::time::Instant::now(), m.to_string()));
            if h.get("x-gray-tag").is_some_and(|v| v == "canary") {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::OK
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

/// POST snapshots are refused without the flag, before anything is sent;
/// the rate limit spaces requests; the report compares with the snapshot.
#[tokio::test]
async fn replay_refuses_unsafe_methods_and_holds_its_rate() {
    let (url, seen) = recorder().await;
    let cfg = SnapshotConfig::default();
    let route = RouteKey::new("shop", "GET", "/a");
    let mut snaps: Vec<Snapshot> = (0..6)
        .map(|i| {
            let mut r = req("/a", 500, 300);
            if i % 2 == 0 {
                r.headers.set(crate::request::Header::XGrayTag, "canary");
            }
            snap(&route, &r, "", Class::Failed, &cfg)
        })
        .collect();
    let mut post = snaps[0].clone();
    post.method = "POST".into();
    let with_post: Vec<Snapshot> = snaps.iter().cloned().chain([post]).collect();
    let e = replay::replay(&with_post, &replay_opts(&url, 50.0))
        .await
        .unwrap_err();
    assert!(
        matches!(e, replay::ReplayError::Unsafe { count: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("POST") && e.to_string().contains("--allow-unsafe"));
    assert!(seen.lock().unwrap().is_empty(), "nothing sent when refused");
    let mut allow = replay_opts(&url, 50.0);
    allow.allow_unsafe = true;
    let r = replay::replay(&with_post, &allow).await.unwrap();
    assert_eq!(r.results.len(), 7);
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m == "POST")
            .count(),
        1
    );

    seen.lock().unwrap().clear();
    let rate = 5.0;
    snaps.truncate(5);
    let r = replay::replay(&snaps, &replay_opts(&url, rate))
        .await
        .unwrap();
    let times: Vec<std::time::Instant> = seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 5);
    // Rate 5/s: a request starts at least 200 ms after the previous one did.
    // These are the recorder's arrival times, which a loaded host delays by
    // different amounts (one arrival late by tens of ms shortens the next
    // gap), so the bound keeps room for that; unlimited, the gaps are ~1 ms.
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(120),
            "{:?}",
            w[1] - w[0]
        );
    }
    assert!(
        times[4] - times[0] >= Duration::from_millis(700),
        "5 requests at 5/s span at least 800 ms: {:?}",
        times[4] - times[0]
    );
    assert_eq!((r.before_failed, r.now_failed), (5, 3), "{}", r.summary());
    assert!(!r.recovered());
    assert!(
        r.summary()
            .starts_with("before: 5/5 failed, p99 300 ms; now: 3/5 failed"),
        "{}",
        r.summary()
    );

    // Bounded: max_requests and the refusal of bad rates.
    let mut few = replay_opts(&url, 100.0);
    few.max_requests = 2;
    let r = replay::replay(&snaps, &few).await.unwrap();
    assert_eq!((r.results.len(), r.not_sent), (2, 3));
    assert!(
        replay::replay(&snaps, &replay_opts(&url, 0.0))
            .await
            .is_err()
    );
}

#[test]
fn frozen_sets_are_bounded_oldest_first_and_counted() {
    let cfg = SnapshotConfig {
        max_frozen: 2,
        ..Default::default()
    };
    let mut store = SnapshotStore::new(cfg);
    let route = RouteKey::new("shop", "GET", "/a");
    take(&mut store, &route, &req("/a", 500, 5), "");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut ev = AlertEvent::example_l2("/a", AlertStatus::Firing, SystemTime::UNIX_EPOCH);
        ev.route = route.clone();
        let mut evs = vec![ev];
        store.on_alerts(&mut evs, SystemTime::UNIX_EPOCH);
        ids.push(evs[0].snapshot_id.clone().unwrap());
    }
    let frozen = store.frozen();
    let f = frozen.read().unwrap();
    assert_eq!(f.len(), 2);
    assert!(f.get(&ids[0]).is_none(), "the oldest went first");
    assert!(f.get(&ids[2]).is_some());
    assert_eq!(store.counters.dropped_total("frozen_cap"), 1);
    // No snapshots on a route: nothing to freeze, no id.
    let mut ev = AlertEvent::example_l2("/none", AlertStatus::Firing, SystemTime::UNIX_EPOCH);
    ev.route = RouteKey::new("shop", "GET", "/none");
    let mut evs = vec![ev];
    drop(f);
    store.on_alerts(&mut evs, SystemTime::UNIX_EPOCH);
    assert_eq!(evs[0].snapshot_id, None);
}
