//! The admin API (`127.0.0.1:9465` by default): routes with their SLO figures
//! and fuse state, and manual fuse overrides. Every endpoint needs the bearer
//! token (from a file or an env variable, compared in constant time); with no
//! token configured the API is off.
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

use crate::config::ConfigError;
use crate::fuse::{FuseError, OverrideAction, OverrideRequest, SharedFuse};
use crate::route::RouteKey;

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
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9465".parse().expect("valid default"),
            token_file: None,
            token_env: DEFAULT_TOKEN_ENV.into(),
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
        if matches!(&self.token_file, Some(p) if p.as_os_str().is_empty()) {
            return Err(ConfigError::key("admin.token_file", "must not be empty"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin token file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin token from {0} is empty")]
    EmptyToken(String),
    #[error("admin API cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin API: {0}")]
    Serve(#[source] std::io::Error),
}

/// The token, if one is configured: the file (must exist and be non-empty),
/// else the env variable (unset or empty: none).
pub fn load_token(
    cfg: &AdminConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, AdminError> {
    if let Some(path) = &cfg.token_file {
        let text = std::fs::read_to_string(path).map_err(|source| AdminError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            return Err(AdminError::EmptyToken(path.display().to_string()));
        }
        return Ok(Some(token));
    }
    Ok(env(&cfg.token_env)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// SLO figures per route for `GET /api/v1/routes`: a JSON array of objects
/// with at least `service`, `method`, `route`. Called on each request, without
/// the fuse lock held; keep it quick.
pub type RouteFigures = Arc<dyn Fn() -> Value + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    fuse: SharedFuse,
    figures: Option<RouteFigures>,
    token: Arc<str>,
}

/// The API's router (tests and custom servers); `serve` is the usual entry.
pub fn router(fuse: SharedFuse, figures: Option<RouteFigures>, token: String) -> Router {
    let state = AdminState {
        fuse,
        figures,
        token: token.into(),
    };
    Router::new()
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/fuses", get(fuses))
        .route("/api/v1/fuses/force-open", post(force_open))
        .route("/api/v1/fuses/force-closed", post(force_closed))
        .route("/api/v1/fuses/release", post(release))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Runs the API until `shutdown` resolves. No token configured: logs that the
/// API is off and returns at once.
pub async fn serve(
    cfg: &AdminConfig,
    fuse: SharedFuse,
    figures: Option<RouteFigures>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    let Some(token) = load_token(cfg, |k| std::env::var(k).ok())? else {
        tracing::info!(
            token_env = %cfg.token_env,
            "admin API off: no token configured (admin.token_file or the token env variable)"
        );
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AdminError::Bind {
            addr: cfg.listen,
            source,
        })?;
    if !cfg.listen.ip().is_loopback() {
        tracing::warn!(listen = %cfg.listen, "admin API listens beyond loopback");
    }
    tracing::info!(listen = %cfg.listen, "admin API listening");
    axum::serve(listener, router(fuse, figures, token))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(AdminError::Serve)
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
    let ok = given.is_some_and(|t| bool::from(t.as_bytes().ct_eq(s.token.as_bytes())));
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

fn lock(s: &AdminState) -> Option<std::sync::MutexGuard<'_, crate::fuse::FuseController>> {
    s.fuse.lock().ok()
}

fn poisoned() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "fuse controller lock poisoned",
    )
}

async fn fuses(State(s): State<AdminState>) -> Response {
    let Some(f) = lock(&s) else {
        return poisoned();
    };
    Json(json!({ "mode": f.mode().as_str(), "fuses": f.states() })).into_response()
}

async fn routes(State(s): State<AdminState>) -> Response {
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
    s: State<AdminState>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    apply(s, OverrideAction::ForceOpen, body)
}

async fn force_closed(
    s: State<AdminState>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    apply(s, OverrideAction::ForceClosed, body)
}

async fn release(
    s: State<AdminState>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Response {
    apply(s, OverrideAction::Release, body)
}

fn apply(
    State(s): State<AdminState>,
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
