//! Pluggable fuse actions: `http` (a templated request to a gateway API),
//! `file` (an atomically rewritten JSON or nginx-map file plus a reload),
//! `haproxy` (a map swapped through the runtime API, no reload) and `caddy`
//! (a 503 route through the admin API, no reload). Each action runs in its
//! own tokio task, so a slow gateway never blocks the pipeline; results go
//! back to the controller, which retries failures.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::config::ActionConfig;
use super::machine::FuseState;
use crate::request::route::RouteKey;

mod caddy;
mod file;
mod haproxy;
mod http;
pub mod route_match;

pub use caddy::CaddyAction;
pub use file::{FileAction, nginx_regex};
pub use haproxy::HaproxyAction;
pub use http::{HttpAction, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("gateway answered HTTP {0}")]
    Status(u16),
    #[error("request failed: {0}")]
    Request(String),
    #[error("bad request template: {0}")]
    Template(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HAProxy runtime API {command:?}: {message}")]
    Runtime { command: String, message: String },
    #[error("Caddy admin API: {0}")]
    Caddy(String),
    #[error("reload command {cmd:?}: {message}")]
    Reload { cmd: String, message: String },
    #[error(transparent)]
    Tls(#[from] crate::respond::alert::receiver::CaFileError),
    #[error("cannot read secret {path}: {source}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One route's state as a file action writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotEntry {
    pub route: RouteKey,
    pub state: FuseState,
}

/// What an action is asked to apply: one route's new state, plus the state of
/// every route for actions that write the whole picture.
#[derive(Clone, Debug)]
pub struct ActionJob {
    /// None for a start-up sync of a snapshot action.
    pub route: Option<RouteKey>,
    pub state: FuseState,
    pub seq: u64,
    pub idempotency_key: String,
    pub snapshot: Arc<Vec<SnapshotEntry>>,
    /// The (route, seq) transitions this job applies when it succeeds.
    pub covers: Vec<(RouteKey, u64)>,
    /// Closes routes `enforce` left fused, after a switch to `dry_run`.
    pub release: bool,
}

pub type ActionFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ActionError>> + Send + 'a>>;

/// A way to tell a gateway about a route's fuse state.
pub trait FuseAction: Send + Sync + 'static {
    /// The action's name and its service filter (empty: every service), as
    /// configured.
    fn ident(&self) -> (&str, &[String]);
    fn name(&self) -> &str {
        self.ident().0
    }
    /// Whether this action cares about the route (service filter).
    fn wants(&self, route: &RouteKey) -> bool {
        wants(self.ident().1, route)
    }
    /// True when each call rewrites everything from the snapshot (a file, a
    /// gateway's whole map or route); false for one call per transition.
    fn is_snapshot(&self) -> bool {
        true
    }
    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a>;
}

/// Builds the configured actions.
pub fn build_actions(cfg: &[ActionConfig]) -> Result<Vec<Arc<dyn FuseAction>>, ActionError> {
    cfg.iter()
        .map(|a| -> Result<Arc<dyn FuseAction>, ActionError> {
            Ok(match a {
                ActionConfig::Http(h) => Arc::new(HttpAction::new(h.clone())?),
                ActionConfig::File(f) => Arc::new(FileAction::new(f.clone())),
                ActionConfig::Haproxy(h) => Arc::new(HaproxyAction::new(h.clone())),
                ActionConfig::Caddy(c) => Arc::new(CaddyAction::new(c.clone())?),
            })
        })
        .collect()
}

/// Stable across restarts and builds (FNV-1a), so a gateway sees the same key
/// when a restarted agent retries the same transition.
pub fn idempotency_key(route: &RouteKey, seq: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&*route.service, &*route.method, &*route.route] {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("sloguard-{h:016x}-{seq}")
}

/// The outcome of one job, sent back to the controller.
#[derive(Debug)]
pub struct ActionResult {
    pub action: usize,
    pub covers: Vec<(RouteKey, u64)>,
    pub release: bool,
    pub outcome: Result<(), String>,
    /// How long the call took, retries within it included.
    pub elapsed: Duration,
}

/// Runs one action's jobs in order on its own task.
pub fn spawn_worker(
    index: usize,
    action: Arc<dyn FuseAction>,
    results: mpsc::UnboundedSender<ActionResult>,
) -> mpsc::UnboundedSender<ActionJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ActionJob>();
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let start = Instant::now();
            let outcome = action.apply(&job).await.map_err(|e| e.to_string());
            let r = ActionResult {
                action: index,
                covers: job.covers,
                release: job.release,
                outcome,
                elapsed: start.elapsed(),
            };
            if results.send(r).is_err() {
                break;
            }
        }
    });
    tx
}

fn wants(services: &[String], route: &RouteKey) -> bool {
    services.is_empty() || services.iter().any(|s| **s == *route.service)
}

/// `/users/{id}` → `users_id`: safe in runtime keys and file names.
pub fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Runs `attempt` up to `1 + retries` times within one try of an action,
/// waiting `backoff` (doubling, at most 30 s) between attempts. Errors that
/// retrying now cannot fix end the try at once.
pub(super) async fn with_retries<F, Fut>(
    name: &str,
    retries: u32,
    backoff: Duration,
    mut attempt: F,
) -> Result<(), ActionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ActionError>>,
{
    let mut delay = backoff;
    let mut n = 0;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            // A template error will not fix itself by retrying now.
            Err(e @ ActionError::Template(_)) => return Err(e),
            // 4xx other than 408/429 means the request itself is wrong.
            Err(ActionError::Status(s)) if (400..500).contains(&s) && s != 408 && s != 429 => {
                return Err(ActionError::Status(s));
            }
            Err(e) if n >= retries => return Err(e),
            Err(e) => {
                tracing::debug!(action = %name, attempt = n, error = %e, "fuse action attempt failed");
            }
        }
        n += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_is_stable_and_distinct() {
        let a = RouteKey::new("s", "GET", "/a");
        assert_eq!(idempotency_key(&a, 1), idempotency_key(&a, 1));
        assert_ne!(idempotency_key(&a, 1), idempotency_key(&a, 2));
        assert_ne!(
            idempotency_key(&RouteKey::new("s", "GET", "/a"), 1),
            idempotency_key(&RouteKey::new("sG", "ET", "/a"), 1)
        );
        // Pinned (FNV-1a of "s\0GET\0/a\0", checked in Python): a changed hash
        // would break idempotency across upgrades.
        assert_eq!(idempotency_key(&a, 7), "sloguard-00c47b219716f69a-7");
    }
}
