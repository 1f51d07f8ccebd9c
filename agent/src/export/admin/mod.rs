//! The admin API (`127.0.0.1:9465` by default): routes with their SLO figures
//! and fuse state, and manual fuse overrides. Every endpoint needs the bearer
//! token (from a file, reread when it changes, or an env variable; at least
//! 32 bytes; compared in constant time); with no token configured the API is
//! off. It listens beyond loopback only when `admin.allow_non_loopback` says so.
//!
//! The fuse controller persists its state (write + fsync) under its lock, so
//! every handler takes that lock on tokio's blocking pool, never on an async
//! worker: a slow disk must not stall the metrics endpoint or other requests.
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::config::error::ConfigError;
use crate::request::route::RouteKey;
use crate::respond::fuse::{FuseError, OverrideAction, OverrideRequest, SharedFuse};

mod snapshots;
mod token;
pub use token::{MIN_TOKEN_BYTES, TOKEN_POLL, TokenCell, TokenWatch, load_token};

pub const DEFAULT_TOKEN_ENV: &str = "SLOGUARD_ADMIN_TOKEN";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Keep it on loopback: the API can take routes out of service.
    pub listen: SocketAddr,
    /// File holding the bearer token (first line, trimmed); wins over the env.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the token when no file is given.
    pub token_env: String,
    /// `listen` may be a non-loopback address only when this is true: the
    /// API can take routes out of service, so exposing it is a decision.
    pub allow_non_loopback: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9465".parse().expect("valid default"),
            token_file: None,
            token_env: DEFAULT_TOKEN_ENV.into(),
            allow_non_loopback: false,
        }
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.token_env;
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::key(
                "admin.token_env",
                "must be an environment variable name ([A-Za-z0-9_]+)",
            ));
        }
        // Other SLOGUARD_* names are read as config overrides.
        if e.starts_with("SLOGUARD_") && e != DEFAULT_TOKEN_ENV {
            return Err(ConfigError::key(
                "admin.token_env",
                format!(
                    "SLOGUARD_* names are config overrides; use {DEFAULT_TOKEN_ENV} or another prefix"
                ),
            ));
        }
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(ConfigError::key(
                "admin.listen",
                format!(
                    "{} is not a loopback address; set admin.allow_non_loopback: true to listen there",
                    self.listen
                ),
            ));
        }
        if matches!(&self.token_file, Some(p) if p.as_os_str().is_empty()) {
            return Err(ConfigError::key("admin.token_file", "must not be empty"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin.token_file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} ({origin}): the admin token is empty")]
    EmptyToken { key: &'static str, origin: String },
    #[error(
        "{key} ({origin}): the admin token is {len} bytes, at least {MIN_TOKEN_BYTES} are required (e.g. `head -c 32 /dev/urandom | base64`)"
    )]
    ShortToken {
        key: &'static str,
        origin: String,
        len: usize,
    },
    #[error("admin.listen {0} is not a loopback address and admin.allow_non_loopback is false")]
    NotLoopback(SocketAddr),
    #[error("admin API cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin API: {0}")]
    Serve(#[source] std::io::Error),
}

/// SLO figures per route for `GET /api/v1/routes`: a JSON array of objects
/// with at least `service`, `method`, `route`. Called on each request, without
/// the fuse lock held; keep it quick.
pub type RouteFigures = Arc<dyn Fn() -> Value + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    fuse: SharedFuse,
    figures: Option<RouteFigures>,
    token: TokenCell,
    snapshots: Option<crate::respond::snapshot::SharedFrozen>,
}

/// The API's router with a fixed token (tests and custom servers); `serve`
/// is the usual entry.
pub fn router(fuse: SharedFuse, figures: Option<RouteFigures>, token: String) -> Router {
    let cell: TokenCell = Arc::new(std::sync::RwLock::new(Some(token.into())));
    router_with(fuse, figures, cell)
}

/// The API's router checking requests against whatever `token` holds.
pub fn router_with(fuse: SharedFuse, figures: Option<RouteFigures>, token: TokenCell) -> Router {
    router_full(fuse, figures, None, token)
}

/// The router with the frozen request snapshots (`/api/v1/snapshots`).
pub fn router_full(
    fuse: SharedFuse,
    figures: Option<RouteFigures>,
    snapshots: Option<crate::respond::snapshot::SharedFrozen>,
    token: TokenCell,
) -> Router {
    let state = AdminState {
        fuse,
        figures,
        token,
        snapshots,
    };
    Router::new()
        .route("/api/v1/snapshots", get(snapshots::list))
        .route("/api/v1/snapshots/{id}", get(snapshots::har))
        .route("/api/v1/snapshots/{id}/diff", get(snapshots::diff))
        // The path the design names; same handlers.
        .route("/v1/snapshots", get(snapshots::list))
        .route("/v1/snapshots/{id}", get(snapshots::har))
        .route("/v1/snapshots/{id}/diff", get(snapshots::diff))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/fuses", get(fuses))
        .route("/api/v1/fuses/force-open", post(force_open))
        .route("/api/v1/fuses/force-closed", post(force_closed))
        .route("/api/v1/fuses/release", post(release))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// The admin API bound and its token loaded, not yet serving. Binding at
/// start lets the agent refuse to run with a bad token, a taken port or a
/// non-loopback address it was not told to accept.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    token: TokenCell,
    watch: Option<TokenWatch>,
    snapshots: Option<crate::respond::snapshot::SharedFrozen>,
}

impl AdminServer {
    /// `Ok(None)`: no token configured, the API is off (logged).
    pub async fn bind(cfg: &AdminConfig) -> Result<Option<Self>, AdminError> {
        if !cfg.listen.ip().is_loopback() && !cfg.allow_non_loopback {
            return Err(AdminError::NotLoopback(cfg.listen));
        }
        let Some((token, watch)) = token::start(cfg, |k| std::env::var(k).ok())? else {
            tracing::info!(
                token_env = %cfg.token_env,
                "admin API off: no token configured (admin.token_file or the token env variable)"
            );
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| AdminError::Bind {
                addr: cfg.listen,
                source,
            })?;
        if !cfg.listen.ip().is_loopback() {
            tracing::warn!(listen = %cfg.listen, "admin API listens beyond loopback (admin.allow_non_loopback)");
        }
        tracing::info!(listen = %cfg.listen, "admin API listening");
        Ok(Some(Self {
            listener,
            token,
            watch,
            snapshots: None,
        }))
    }

    /// Serve the frozen request snapshots too.
    pub fn with_snapshots(mut self, frozen: crate::respond::snapshot::SharedFrozen) -> Self {
        self.snapshots = Some(frozen);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, rereading the token file meanwhile.
    pub async fn run(
        self,
        fuse: SharedFuse,
        figures: Option<RouteFigures>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AdminError> {
        let watcher = self.watch.map(|w| tokio::spawn(w.run()));
        let router = router_full(fuse, figures, self.snapshots, self.token);
        let result = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(AdminError::Serve);
        if let Some(w) = watcher {
            w.abort();
        }
        result
    }
}

/// Bind and serve until `shutdown` resolves. No token configured: logs that
/// the API is off and returns at once.
pub async fn serve(
    cfg: &AdminConfig,
    fuse: SharedFuse,
    figures: Option<RouteFigures>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    match AdminServer::bind(cfg).await? {
        Some(server) => server.run(fuse, figures, shutdown).await,
        None => Ok(()),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let current = s.token.read().ok().and_then(|t| t.clone());
    let ok = match (given, current) {
        (Some(g), Some(want)) => bool::from(g.as_bytes().ct_eq(want.as_bytes())),
        _ => false,
    };
    if !ok {
        tracing::warn!(path = %req.uri().path(), token_given = given.is_some(),
            "admin API request refused: missing or wrong bearer token");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(req).await
}

fn lock(s: &AdminState) -> Option<std::sync::MutexGuard<'_, crate::respond::fuse::FuseController>> {
    s.fuse.lock().ok()
}

fn poisoned() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "fuse controller lock poisoned",
    )
}

/// Run `f` on the blocking pool: it takes the fuse lock, which the pipeline,
/// the fuse ticker or another request may hold across a state-file fsync.
async fn blocking(
    s: AdminState,
    f: impl FnOnce(AdminState) -> Response + Send + 'static,
) -> Response {
    tokio::task::spawn_blocking(move || f(s))
        .await
        .unwrap_or_else(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("admin handler failed: {e}"),
            )
        })
}

async fn fuses(State(s): State<AdminState>) -> Response {
    blocking(s, |s| {
        let Some(f) = lock(&s) else {
            return poisoned();
        };
        Json(json!({ "mode": f.mode().as_str(), "fuses": f.states() })).into_response()
    })
    .await
}

async fn routes(State(s): State<AdminState>) -> Response {
    blocking(s, routes_blocking).await
}

fn routes_blocking(s: AdminState) -> Response {
    let slo = s
        .figures
        .as_ref()
        .map(|f| f())
        .unwrap_or(Value::Array(vec![]));
    let (mode, states) = match lock(&s) {
        Some(f) => (f.mode(), f.states()),
        None => return poisoned(),
    };
    let mut fuses: Vec<(String, String, String, Value)> = states
        .into_iter()
        .map(|st| {
            (
                st.service.clone(),
                st.method.clone(),
                st.route.clone(),
                serde_json::to_value(st).unwrap_or(Value::Null),
            )
        })
        .collect();
    let closed = json!({ "state": "closed" });
    let mut out = Vec::new();
    let mut extra = None;
    match slo {
        Value::Array(items) => {
            for mut item in items {
                if let Value::Object(obj) = &mut item {
                    let field =
                        |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let key = (field("service"), field("method"), field("route"));
                    let fuse = match fuses
                        .iter()
                        .position(|f| (&f.0, &f.1, &f.2) == (&key.0, &key.1, &key.2))
                    {
                        Some(i) => fuses.swap_remove(i).3,
                        None => closed.clone(),
                    };
                    obj.insert("fuse".into(), fuse);
                }
                out.push(item);
            }
        }
        other => extra = Some(other),
    }
    // Routes the fuse knows but the SLO engine does not list (yet).
    for (service, method, route, fuse) in fuses {
        out.push(json!({ "service": service, "method": method, "route": route, "fuse": fuse }));
    }
    let mut body = json!({ "mode": mode.as_str(), "routes": out });
    if let Some(x) = extra {
        body["slo"] = x;
    }
    Json(body).into_response()
}

/// `POST /api/v1/fuses/{force-open,force-closed,release}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    service: String,
    method: String,
    route: String,
    /// `10m`, `1h30m`; absent: the configured `fuse.override_ttl`.
    #[serde(default)]
    ttl: Option<String>,
    reason: String,
    who: String,
}

async fn force_open(
    State(s): State<AdminState>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    blocking(s, |s| apply(s, OverrideAction::ForceOpen, body)).await
}

async fn force_closed(
    State(s): State<AdminState>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    blocking(s, |s| apply(s, OverrideAction::ForceClosed, body)).await
}

async fn release(
    State(s): State<AdminState>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    blocking(s, |s| apply(s, OverrideAction::Release, body)).await
}

/// Runs on the blocking pool: `override_route` persists (fsync) and audits.
fn apply(
    s: AdminState,
    action: OverrideAction,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(rej) => return error(rej.status(), rej.body_text()),
    };
    let ttl = match b.ttl.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("ttl: {e}"));
        }
    };
    if action == OverrideAction::Release && ttl.is_some() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl: not allowed on release",
        );
    }
    let req = OverrideRequest {
        route: RouteKey::new(&b.service, &b.method.to_ascii_uppercase(), &b.route),
        action,
        ttl,
        who: b.who,
        why: b.reason,
    };
    let Some(mut f) = lock(&s) else {
        return poisoned();
    };
    match f.override_route(req) {
        Ok(status) => Json(status).into_response(),
        Err(e @ FuseError::BadOverride(_)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e @ FuseError::NotOverridden) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests;
