//! The alert dispatcher: detectors hand [`AlertEvent`]s to a
//! [`DispatcherHandle`] without ever waiting; a task turns each into an
//! [`Alert`] once and fans it out to one worker per receiver (webhooks and
//! Alertmanagers), each with its own bounded queue, retries and dedupe, so a
//! dead or slow receiver delays nobody but itself.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::dedupe::{Arrival, Dedupe, ResendSet};
use super::delivery_config::AlertsConfig;
use super::labels::{Alert, status_str};
use super::metrics::{AlertMetrics, DeliveryResult};
use super::model::AlertEvent;
use super::payload::{PostableAlert, WebhookMessage};
pub use super::receiver::DeliveryError;
use super::receiver::{RetryPolicy, Target};
use crate::clock::{Clock, SystemClock};

/// Fingerprints a webhook worker remembers for dedupe, and firing alerts an
/// Alertmanager worker re-sends: far above the route cap, still bounded.
const TRACKED_ALERTS: usize = 10_000;
/// Alerts per `POST /api/v2/alerts`.
const MAX_BATCH: usize = 64;
/// Alertmanager resolves a firing alert by itself when re-sends stop for
/// this many intervals (Prometheus uses the same factor).
const VALID_FOR_INTERVALS: u32 = 4;

/// The detectors' side of the dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct DispatcherHandle {
    tx: mpsc::Sender<AlertEvent>,
    metrics: AlertMetrics,
}

impl DispatcherHandle {
    /// Queue an alert for delivery; never blocks. Returns false (and counts
    /// `sloguard_alerts_queue_dropped_total`) when the queue is full or the
    /// dispatcher has stopped.
    pub fn send(&self, ev: AlertEvent) -> bool {
        self.metrics
            .raise(ev.kind.alertname(), status_str(ev.status));
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.queue_dropped();
                let ev = match &e {
                    mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => {
                        ev
                    }
                };
                tracing::warn!(alertname = ev.kind.alertname(), route = %ev.route, "alert queue full, alert dropped");
                false
            }
        }
    }

    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    pub fn metrics(&self) -> &AlertMetrics {
        &self.metrics
    }
}

pub struct Dispatcher;

impl Dispatcher {
    /// Start the dispatcher and its receiver workers on the current tokio
    /// runtime. `node` is the `node` label. The task ends (after flushing
    /// its queues) once every handle is dropped.
    pub fn start(
        cfg: &AlertsConfig,
        node: String,
    ) -> Result<(DispatcherHandle, JoinHandle<()>), DeliveryError> {
        Self::start_with_clock(cfg, node, Arc::new(SystemClock))
    }

    /// As [`Dispatcher::start`], with the wall clock that stamps the
    /// `endsAt` of firing alerts sent to Alertmanager.
    pub fn start_with_clock(
        cfg: &AlertsConfig,
        node: String,
        clock: Arc<dyn Clock>,
    ) -> Result<(DispatcherHandle, JoinHandle<()>), DeliveryError> {
        let metrics = AlertMetrics::default();
        let policy = RetryPolicy {
            max_retries: cfg.max_retries,
            initial_backoff: cfg.initial_backoff,
            max_backoff: cfg.max_backoff,
        };
        // Build every client first: a bad CA file fails start, not delivery.
        let mut webhook_targets = Vec::new();
        for w in &cfg.webhooks {
            webhook_targets.push(Target::new(
                &w.name,
                &w.url,
                w.timeout,
                w.bearer_token_file.as_deref(),
                w.basic_auth.as_ref(),
                w.tls.as_ref(),
            )?);
        }
        let am = &cfg.alertmanager;
        let mut am_targets = Vec::new();
        for u in &am.urls {
            let api = format!("{}/api/v2/alerts", u.trim_end_matches('/'));
            let mut t = Target::new(
                "",
                &api,
                am.timeout,
                am.bearer_token_file.as_deref(),
                am.basic_auth.as_ref(),
                am.tls.as_ref(),
            )?;
            t.name = alertmanager_receiver_name(t.url());
            am_targets.push(t);
        }

        let mut workers = Vec::new();
        let mut joins = Vec::new();
        for t in webhook_targets {
            metrics.init_receiver(&t.name);
            let (tx, rx) = mpsc::channel(cfg.queue_capacity);
            workers.push((t.name.clone(), tx));
            joins.push(tokio::spawn(webhook_worker(
                rx,
                t,
                policy,
                cfg.receiver.clone(),
                cfg.external_url.clone(),
                metrics.clone(),
            )));
        }
        for t in am_targets {
            metrics.init_receiver(&t.name);
            let (tx, rx) = mpsc::channel(cfg.queue_capacity);
            workers.push((t.name.clone(), tx));
            joins.push(tokio::spawn(alertmanager_worker(
                rx,
                t,
                policy,
                am.resend_interval,
                clock.clone(),
                metrics.clone(),
            )));
        }

        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let fan = tokio::spawn(fan_out(
            rx,
            workers,
            joins,
            node,
            cfg.external_url.clone(),
            metrics.clone(),
        ));
        Ok((DispatcherHandle { tx, metrics }, fan))
    }
}

/// `alertmanager:<host>:<port>`: names the receiver without the URL's path
/// or any credentials in it.
fn alertmanager_receiver_name(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(p) => format!("alertmanager:{host}:{p}"),
        None => format!("alertmanager:{host}"),
    }
}

async fn fan_out(
    mut rx: mpsc::Receiver<AlertEvent>,
    workers: Vec<(String, mpsc::Sender<Arc<Alert>>)>,
    joins: Vec<JoinHandle<()>>,
    node: String,
    generator_url: String,
    metrics: AlertMetrics,
) {
    while let Some(ev) = rx.recv().await {
        let alert = Arc::new(Alert::from_event(&ev, &node, &generator_url));
        for (name, tx) in &workers {
            if tx.try_send(alert.clone()).is_err() {
                metrics.delivered(name, DeliveryResult::Dropped, 1);
                tracing::warn!(receiver = %name, alertname = alert.alertname(), "receiver queue full, alert dropped");
            }
        }
    }
    drop(workers);
    for j in joins {
        let _ = j.await;
    }
}

async fn webhook_worker(
    mut rx: mpsc::Receiver<Arc<Alert>>,
    target: Target,
    policy: RetryPolicy,
    receiver: String,
    external_url: String,
    metrics: AlertMetrics,
) {
    let mut dedupe = Dedupe::new(TRACKED_ALERTS);
    while let Some(a) = rx.recv().await {
        if !dedupe.should_deliver(a.fingerprint, a.status) {
            tracing::debug!(receiver = %target.name, fingerprint = %a.fingerprint, "already delivered, skipped");
            continue;
        }
        let msg = WebhookMessage::new(&receiver, &external_url, &[&a]);
        let result = match serde_json::to_vec(&msg) {
            Ok(body) => {
                target
                    .post(Bytes::from(body), &policy, || metrics.retried(&target.name))
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                dedupe.delivered(a.fingerprint, a.status);
                metrics.delivered(&target.name, DeliveryResult::Success, 1);
            }
            Err(e) => {
                metrics.delivered(&target.name, DeliveryResult::Failure, 1);
                tracing::warn!(receiver = %target.name, alertname = a.alertname(), status = status_str(a.status), error = %e, "alert delivery failed");
            }
        }
    }
}

async fn alertmanager_worker(
    mut rx: mpsc::Receiver<Arc<Alert>>,
    target: Target,
    policy: RetryPolicy,
    resend_interval: Duration,
    clock: Arc<dyn Clock>,
    metrics: AlertMetrics,
) {
    let mut active = ResendSet::new(resend_interval, TRACKED_ALERTS);
    let valid_for = resend_interval.saturating_mul(VALID_FOR_INTERVALS);
    // Stands in for "no deadline" while nothing fires.
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let next = active.next_due();
        let batch = tokio::select! {
            msg = rx.recv() => {
                let Some(first) = msg else { break };
                let mut batch = Vec::new();
                let mut arrive = |a: Arc<Alert>| match active.arrive(&a, Instant::now()) {
                    Arrival::PostNow => batch.push(a),
                    Arrival::Refreshed => {}
                    Arrival::Full => metrics.delivered(&target.name, DeliveryResult::Dropped, 1),
                };
                arrive(first);
                // Whatever else is already queued goes in the same POST.
                for _ in 1..MAX_BATCH {
                    match rx.try_recv() {
                        Ok(a) => arrive(a),
                        Err(_) => break,
                    }
                }
                batch
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + far)), if next.is_some() => {
                active.due(Instant::now())
            }
        };
        for chunk in batch.chunks(MAX_BATCH) {
            let now = clock.now();
            let body: Vec<PostableAlert> = chunk
                .iter()
                .map(|a| PostableAlert::new(a, now, valid_for))
                .collect();
            let n = chunk.len() as u64;
            let result = match serde_json::to_vec(&body) {
                Ok(b) => {
                    target
                        .post(Bytes::from(b), &policy, || metrics.retried(&target.name))
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) => metrics.delivered(&target.name, DeliveryResult::Success, n),
                Err(e) => {
                    // Firing alerts stay in the set and go again at the next
                    // re-send; a lost resolve is covered by `endsAt`.
                    metrics.delivered(&target.name, DeliveryResult::Failure, n);
                    tracing::warn!(receiver = %target.name, alerts = n, error = %e, "alert push to Alertmanager failed");
                }
            }
        }
    }
}
