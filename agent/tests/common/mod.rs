//! A webhook receiver the tests start themselves (axum on 127.0.0.1:0) and
//! alert events to feed the dispatcher.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use sloguard::respond::alert::model::{AlertEvent, AlertStatus};

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
}

struct Behaviour {
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// Sleep this long before answering.
    delay: Duration,
}

struct Shared {
    behaviour: Behaviour,
    requests: Mutex<usize>,
    received: Mutex<Vec<Received>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_with(0, Duration::ZERO).await
    }

    pub async fn start_with(fail_first: usize, delay: Duration) -> Self {
        let shared = Arc::new(Shared {
            behaviour: Behaviour { fail_first, delay },
            requests: Mutex::new(0),
            received: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Requests seen, including the ones answered with 500.
    pub fn requests(&self) -> usize {
        *self.shared.requests.lock().unwrap()
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `n` payloads were accepted; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.received();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} payloads, wanted {n} within {timeout:?}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn hook(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let nth = {
        let mut n = s.requests.lock().unwrap();
        *n += 1;
        *n
    };
    if !s.behaviour.delay.is_zero() {
        tokio::time::sleep(s.behaviour.delay).await;
    }
    if nth <= s.behaviour.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    s.received.lock().unwrap().push(Received { headers, body });
    StatusCode::OK
}

/// Polls `f` every 10 ms until it is true; panics after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wall time truncated to whole milliseconds, as Alertmanager keeps it.
pub fn now_ms() -> SystemTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn l2_event(route: &str, status: AlertStatus, starts_at: SystemTime) -> AlertEvent {
    AlertEvent::example_l2(route, status, starts_at)
}

pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
