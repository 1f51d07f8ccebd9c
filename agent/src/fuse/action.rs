//! Pluggable fuse actions: `http` (a templated request to a gateway API) and
//! `file` (an atomically rewritten JSON or nginx-map file plus a reload).
//! Each action runs in its own tokio task, so a slow gateway never blocks the
//! pipeline; results go back to the controller, which retries failures.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;

use super::config::{ActionConfig, FileActionConfig, FileFormat, HttpActionConfig};
use super::machine::FuseState;
use super::store::write_atomic;
use crate::route::RouteKey;

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
    #[error("reload command {cmd:?}: {message}")]
    Reload { cmd: String, message: String },
    #[error(transparent)]
    Tls(#[from] crate::alert::receiver::CaFileError),
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
    fn name(&self) -> &str;
    /// Whether this action cares about the route (service filter).
    fn wants(&self, route: &RouteKey) -> bool;
    /// True when each call rewrites everything from the snapshot (file).
    fn is_snapshot(&self) -> bool;
    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a>;
}

/// Builds the configured actions.
pub fn build_actions(cfg: &[ActionConfig]) -> Result<Vec<Arc<dyn FuseAction>>, ActionError> {
    cfg.iter()
        .map(|a| -> Result<Arc<dyn FuseAction>, ActionError> {
            Ok(match a {
                ActionConfig::Http(h) => Arc::new(HttpAction::new(h.clone())?),
                ActionConfig::File(f) => Arc::new(FileAction { cfg: f.clone() }),
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
            let outcome = action.apply(&job).await.map_err(|e| e.to_string());
            let r = ActionResult {
                action: index,
                covers: job.covers,
                release: job.release,
                outcome,
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

/// Placeholder values for one job; `enc` escapes each for its destination.
fn render(template: &str, job: &ActionJob, enc: fn(&str) -> String) -> String {
    let (service, method, route) = match &job.route {
        Some(r) => (&*r.service, &*r.method, &*r.route),
        None => ("", "", ""),
    };
    let fused = job.state == FuseState::Open;
    template
        .replace("{{service}}", &enc(service))
        .replace("{{method}}", &enc(method))
        .replace("{{route}}", &enc(route))
        .replace("{{route_slug}}", &slug(route))
        .replace("{{state}}", job.state.as_str())
        .replace("{{fused}}", if fused { "1" } else { "0" })
        .replace("{{fused_percent}}", if fused { "100" } else { "0" })
        .replace("{{idempotency_key}}", &enc(&job.idempotency_key))
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

/// RFC 3986 unreserved characters and `/` stay; everything else is %XX.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inside of a JSON string.
fn json_inner(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_default();
    q[1..q.len().saturating_sub(1).max(1)].to_string()
}

fn raw(s: &str) -> String {
    s.to_string()
}

pub struct HttpAction {
    cfg: HttpActionConfig,
    method: reqwest::Method,
    client: reqwest::Client,
}

impl HttpAction {
    pub fn new(cfg: HttpActionConfig) -> Result<Self, ActionError> {
        let method = reqwest::Method::from_bytes(cfg.method.as_bytes())
            .map_err(|e| ActionError::Template(e.to_string()))?;
        // A redirect would send the fuse (and its secret headers) somewhere
        // nobody configured; a 3xx counts as a failed call instead.
        let client = crate::alert::receiver::endpoint_client(cfg.timeout, cfg.tls.as_ref())?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ActionError::Request(e.to_string()))?;
        Ok(Self {
            cfg,
            method,
            client,
        })
    }

    /// A header value read from a secret file, marked sensitive.
    fn secret_header(path: &std::path::Path, prefix: &str) -> Result<HeaderValue, ActionError> {
        let secret =
            crate::alert::receiver::read_secret(path).map_err(|source| ActionError::Secret {
                path: path.display().to_string(),
                source,
            })?;
        let mut v = HeaderValue::from_str(&format!("{prefix}{secret}")).map_err(|_| {
            ActionError::Template(format!(
                "secret in {} is not a valid header value",
                path.display()
            ))
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    async fn attempt(&self, job: &ActionJob) -> Result<(), ActionError> {
        let url = render(&self.cfg.url, job, percent);
        let mut req = self.client.request(self.method.clone(), &url);
        for (k, v) in &self.cfg.headers {
            let v = render(v, job, raw);
            let v = HeaderValue::from_str(&v)
                .map_err(|e| ActionError::Template(format!("header {k}: {e}")))?;
            req = req.header(k.as_str(), v);
        }
        for (k, path) in &self.cfg.header_files {
            req = req.header(k.as_str(), Self::secret_header(path, "")?);
        }
        if let Some(path) = &self.cfg.bearer_token_file {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                Self::secret_header(path, "Bearer ")?,
            );
        }
        req = req.header("Idempotency-Key", &job.idempotency_key);
        if !self.cfg.body.is_empty() {
            req = req.body(render(&self.cfg.body, job, json_inner));
        }
        let resp = req.send().await.map_err(|e| {
            ActionError::Request(format!(
                "{} {}: {}",
                self.method,
                redact_url(&url),
                e.without_url()
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ActionError::Status(status.as_u16()))
        }
    }
}

/// A URL fit for errors, logs and `last_error`: the query (runtime keys,
/// tokens) and any password replaced by `REDACTED`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.query().is_some() {
                u.set_query(Some("REDACTED"));
            }
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => {
            let end = url.find(['?', '#', '@']).unwrap_or(url.len());
            format!("{}...", &url[..end])
        }
    }
}

impl FuseAction for HttpAction {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn wants(&self, route: &RouteKey) -> bool {
        wants(&self.cfg.services, route)
    }

    fn is_snapshot(&self) -> bool {
        false
    }

    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a> {
        Box::pin(async move {
            let mut delay = self.cfg.backoff;
            let mut attempt = 0;
            loop {
                match self.attempt(job).await {
                    Ok(()) => return Ok(()),
                    // A template error will not fix itself by retrying now.
                    Err(e @ ActionError::Template(_)) => return Err(e),
                    // 4xx other than 408/429 means the request itself is wrong.
                    Err(ActionError::Status(s))
                        if (400..500).contains(&s) && s != 408 && s != 429 =>
                    {
                        return Err(ActionError::Status(s));
                    }
                    Err(e) if attempt >= self.cfg.retries => return Err(e),
                    Err(e) => {
                        tracing::debug!(action = %self.cfg.name, attempt, error = %e, "fuse action attempt failed");
                    }
                }
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        })
    }
}

pub struct FileAction {
    cfg: FileActionConfig,
}

impl FileAction {
    pub fn new(cfg: FileActionConfig) -> Self {
        Self { cfg }
    }

    /// The file's content for a snapshot.
    pub fn content(&self, snapshot: &[SnapshotEntry]) -> String {
        let entries = snapshot
            .iter()
            .filter(|e| e.state.is_fused() && wants(&self.cfg.services, &e.route));
        match self.cfg.format {
            FileFormat::Json => {
                let routes: Vec<_> = entries
                    .map(|e| {
                        serde_json::json!({
                            "service": &*e.route.service,
                            "method": &*e.route.method,
                            "route": &*e.route.route,
                            "state": e.state.as_str(),
                            "fused": e.state == FuseState::Open,
                        })
                    })
                    .collect();
                let doc = serde_json::json!({ "writer": "sloguard", "routes": routes });
                let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
                s.push('\n');
                s
            }
            FileFormat::NginxMap => {
                let mut s = String::from(
                    "# Written by sloguard; do not edit. Key: \"$request_method $uri\".\n",
                );
                let all: Vec<&SnapshotEntry> = snapshot
                    .iter()
                    .filter(|e| wants(&self.cfg.services, &e.route))
                    .collect();
                // Only open routes answer 503; half_open lets traffic through.
                let open: Vec<&SnapshotEntry> = all
                    .iter()
                    .filter(|e| e.state == FuseState::Open)
                    .copied()
                    .collect();
                for (lines, value) in [(literal_siblings(&open, &all), 0), (open, 1)] {
                    for e in lines {
                        s.push_str(&format!(
                            "\"{}\" {value}; # service {}\n",
                            nginx_regex(&e.route.method, &e.route.route),
                            slug(&e.route.service)
                        ));
                    }
                }
                s
            }
        }
    }

    async fn reload(&self) -> Result<(), ActionError> {
        let Some((prog, args)) = self.cfg.reload_command.split_first() else {
            return Ok(());
        };
        let cmd = self.cfg.reload_command.join(" ");
        // std's child handling waits on this pid alone; tokio::process relies
        // on a process-wide SIGCHLD driver that can miss exits when several
        // runtimes live in one process (tests do), so run it blocking.
        let (prog, args) = (prog.clone(), args.to_vec());
        let timeout = self.cfg.reload_timeout;
        let out = tokio::task::spawn_blocking(move || {
            super::reload::run_with_timeout(&prog, &args, timeout)
        })
        .await
        .map_err(|e| ActionError::Reload {
            cmd: cmd.clone(),
            message: e.to_string(),
        })?
        .map_err(|message| ActionError::Reload {
            cmd: cmd.clone(),
            message,
        })?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(ActionError::Reload {
                cmd,
                message: format!("{}: {}", out.status, stderr.trim()),
            })
        }
    }
}

impl FuseAction for FileAction {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn wants(&self, route: &RouteKey) -> bool {
        wants(&self.cfg.services, route)
    }

    fn is_snapshot(&self) -> bool {
        true
    }

    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a> {
        Box::pin(async move {
            let content = self.content(&job.snapshot);
            let path = self.cfg.path.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, content.as_bytes()))
                .await
                .map_err(|e| ActionError::Write {
                    path: self.cfg.path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(|source| ActionError::Write {
                    path: self.cfg.path.display().to_string(),
                    source,
                })?;
            self.reload().await
        })
    }
}

/// `GET /users/{id}` → `~^GET /users/[^/]+$`. In a route `{...}` is always
/// a template placeholder (the route table percent-encodes braces a client
/// sent); the literal parts are percent-decoded, since nginx matches the
/// decoded `$uri`. Every byte outside `[A-Za-z0-9/_-]` becomes `\xHH`, so
/// nothing a client sent can end the quoted string or inject nginx config.
pub fn nginx_regex(method: &str, route: &str) -> String {
    let mut s = String::from("~^");
    push_escaped(&mut s, method.as_bytes());
    s.push(' ');
    let mut rest = route;
    while let Some(open) = rest.find('{') {
        match rest[open..].find('}') {
            Some(close) => {
                push_escaped(&mut s, &percent_decode(&rest[..open]));
                s.push_str("[^/]+");
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    push_escaped(&mut s, &percent_decode(rest));
    s.push('$');
    s
}

/// `%XX` → the byte; anything else (a lone `%` too) as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn push_escaped(out: &mut String, s: &[u8]) {
    for &b in s {
        if b.is_ascii_alphanumeric() || b"/_-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// Routes of the snapshot written as `0` lines before the fused ones: known
/// literal routes (no placeholder) that are not open but that an open
/// template of the same method would match, e.g. `/users/me` beside a
/// fused `/users/{id}`. nginx tries the regexes in file order, so the first
/// (the `0`) wins for them.
fn literal_siblings<'s>(
    open: &[&'s SnapshotEntry],
    all: &[&'s SnapshotEntry],
) -> Vec<&'s SnapshotEntry> {
    let templates: Vec<(&str, regex::bytes::Regex)> = open
        .iter()
        .filter(|e| e.route.route.contains('{'))
        .filter_map(|e| {
            let re = nginx_regex(&e.route.method, &e.route.route);
            // nginx's PCRE and this engine agree on `^`, `$`, `[^/]+` and
            // `\xHH` (bytes, with Unicode off).
            let re = regex::bytes::RegexBuilder::new(&re[1..])
                .unicode(false)
                .build()
                .ok()?;
            Some((&*e.route.method, re))
        })
        .collect();
    if templates.is_empty() {
        return Vec::new();
    }
    all.iter()
        .filter(|e| e.state != FuseState::Open && !e.route.route.contains('{'))
        .filter(|e| {
            let mut key = format!("{} ", e.route.method).into_bytes();
            key.extend(percent_decode(&e.route.route));
            templates
                .iter()
                .any(|(m, re)| *m == &*e.route.method && re.is_match(&key))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(route: &str, state: FuseState) -> ActionJob {
        let r = RouteKey::new("shop", "GET", route);
        ActionJob {
            idempotency_key: idempotency_key(&r, 3),
            route: Some(r),
            state,
            seq: 3,
            snapshot: Arc::new(vec![]),
            covers: vec![],
            release: false,
        }
    }

    #[test]
    fn templates_escape_for_their_destination() {
        let j = job("/a\"b/{id}", FuseState::Open);
        assert_eq!(
            render("http://gw/f?r={{route}}&s={{state}}", &j, percent),
            "http://gw/f?r=/a%22b/%7Bid%7D&s=open"
        );
        let body = render(r#"{"route":"{{route}}","on":{{fused}}}"#, &j, json_inner);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["route"], "/a\"b/{id}");
        assert_eq!(v["on"], 1);
        assert_eq!(render("{{route_slug}}", &j, raw), "a_b_id");
        assert_eq!(
            render("{{fused_percent}}", &job("/x", FuseState::HalfOpen), raw),
            "0"
        );
    }

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

    #[test]
    fn nginx_regex_templates_and_escapes() {
        assert_eq!(nginx_regex("GET", "/api/slow"), "~^GET /api/slow$");
        assert_eq!(nginx_regex("GET", "/users/{id}/x"), "~^GET /users/[^/]+/x$");
        let evil = nginx_regex("GET", "/a\"; } server { #.$x");
        for bad in ['"', ';', '{', '}', '$'] {
            assert!(!evil[..evil.len() - 1].contains(bad), "{evil}");
        }
        assert_eq!(evil.matches(' ').count(), 1, "{evil}");
        assert_eq!(nginx_regex("GET", "/v1.0"), "~^GET /v1\\x2e0$");
        // nginx matches the decoded $uri; encoded braces are literal.
        assert_eq!(nginx_regex("GET", "/a%20b"), "~^GET /a\\x20b$");
        assert_eq!(
            nginx_regex("GET", "/l/%7Bx%7D/{id}"),
            "~^GET /l/\\x7bx\\x7d/[^/]+$"
        );
        assert_eq!(nginx_regex("GET", "/p%zz%"), "~^GET /p\\x25zz\\x25$");
    }

    #[test]
    fn nginx_map_writes_literal_siblings_of_fused_templates_first() {
        let f = FileAction::new(FileActionConfig {
            path: "/tmp/x".into(),
            format: FileFormat::NginxMap,
            ..Default::default()
        });
        let e = |m: &str, r: &str, state| SnapshotEntry {
            route: RouteKey::new("shop", m, r),
            state,
        };
        let snap = vec![
            e("GET", "/users/{id}", FuseState::Open),
            e("GET", "/users/me", FuseState::Closed),
            e("GET", "/users/%7Bid%7D", FuseState::HalfOpen),
            e("POST", "/users/me", FuseState::Closed),
            e("GET", "/users/me/x", FuseState::Closed),
            e("GET", "/users/{id}/x", FuseState::Closed),
        ];
        let c = f.content(&snap);
        let lines: Vec<_> = c.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "\"~^GET /users/me$\" 0; # service shop",
                "\"~^GET /users/\\x7bid\\x7d$\" 0; # service shop",
                "\"~^GET /users/[^/]+$\" 1; # service shop",
            ]
        );
    }

    #[test]
    fn nginx_map_lists_open_routes_of_wanted_services() {
        let f = FileAction::new(FileActionConfig {
            path: "/tmp/x".into(),
            format: FileFormat::NginxMap,
            services: vec!["shop".into()],
            ..Default::default()
        });
        let snap = vec![
            SnapshotEntry {
                route: RouteKey::new("shop", "GET", "/slow"),
                state: FuseState::Open,
            },
            SnapshotEntry {
                route: RouteKey::new("shop", "GET", "/half"),
                state: FuseState::HalfOpen,
            },
            SnapshotEntry {
                route: RouteKey::new("shop", "GET", "/ok"),
                state: FuseState::Closed,
            },
            SnapshotEntry {
                route: RouteKey::new("other", "GET", "/x"),
                state: FuseState::Open,
            },
        ];
        let c = f.content(&snap);
        let lines: Vec<_> = c.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, vec!["\"~^GET /slow$\" 1; # service shop"]);
    }

    #[test]
    fn json_file_lists_fused_routes() {
        let f = FileAction::new(FileActionConfig {
            path: "/tmp/x".into(),
            ..Default::default()
        });
        let snap = vec![
            SnapshotEntry {
                route: RouteKey::new("shop", "GET", "/slow"),
                state: FuseState::Open,
            },
            SnapshotEntry {
                route: RouteKey::new("shop", "GET", "/ok"),
                state: FuseState::Closed,
            },
        ];
        let v: serde_json::Value = serde_json::from_str(&f.content(&snap)).unwrap();
        assert_eq!(v["routes"].as_array().unwrap().len(), 1);
        assert_eq!(v["routes"][0]["route"], "/slow");
        assert_eq!(v["routes"][0]["fused"], true);
    }

    #[test]
    fn urls_in_errors_lose_their_query_and_password() {
        assert_eq!(
            redact_url("http://u:pw@gw:9901/runtime_modify?k=v&token=s3cret#f"),
            "http://u:REDACTED@gw:9901/runtime_modify?REDACTED"
        );
        assert_eq!(redact_url("http://gw/a"), "http://gw/a");
        assert_eq!(redact_url("not a url?token=s"), "not a url...");
    }
}
