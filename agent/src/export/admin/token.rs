//! The admin API's bearer token: loaded at start (a short or empty token stops
//! the agent, naming the key), and, when it comes from a file, reread whenever
//! the file changes so a rotated Kubernetes Secret takes effect without a
//! restart.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::{AdminConfig, AdminError};

/// Shortest token accepted: 32 bytes (256 bits when random) make guessing
/// hopeless even without rate limiting.
pub const MIN_TOKEN_BYTES: usize = 32;

/// How often the token file is checked for a change. A Secret update reaches
/// the pod's volume within the kubelet's sync period (about a minute), so a
/// second is plenty and costs one `stat`.
pub const TOKEN_POLL: Duration = Duration::from_secs(1);

/// The token requests are checked against; `None` refuses every request
/// (the file is missing, or its new content is not a valid token).
pub type TokenCell = Arc<RwLock<Option<Arc<str>>>>;

/// The token's config key and where it came from, for error messages.
fn check(key: &'static str, origin: String, raw: &str) -> Result<String, AdminError> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(AdminError::EmptyToken { key, origin });
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(AdminError::ShortToken {
            key,
            origin,
            len: token.len(),
        });
    }
    Ok(token.to_string())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The token, if one is configured: the file (must exist and hold a token of
/// at least [`MIN_TOKEN_BYTES`]), else the env variable (unset or empty: none;
/// set but short: an error).
pub fn load_token(
    cfg: &AdminConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, AdminError> {
    if let Some(path) = &cfg.token_file {
        return read_token_file(path).map(Some);
    }
    match env(&cfg.token_env) {
        Some(t) if !t.trim().is_empty() => {
            check("admin.token_env", cfg.token_env.clone(), &t).map(Some)
        }
        _ => Ok(None),
    }
}

fn read_token_file(path: &Path) -> Result<String, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|source| AdminError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    check(
        "admin.token_file",
        path.display().to_string(),
        first_line(&text),
    )
}

/// What identifies one version of the file: a Secret update swaps a symlink
/// (new inode), an editor may rewrite in place (new mtime or length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symlinks: Kubernetes' `..data` swap shows as a new inode.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        mtime: m.modified().ok(),
        len: m.len(),
    })
}

/// Rereads the token file when its stamp changes.
pub struct TokenWatch {
    path: PathBuf,
    last: Option<Stamp>,
    cell: TokenCell,
}

impl TokenWatch {
    /// Start watching `path`, whose current content is already in `cell`.
    pub fn new(path: PathBuf, cell: TokenCell) -> Self {
        let last = stamp(&path);
        Self { path, last, cell }
    }

    /// Check once; on a change, reread. An invalid or missing new token
    /// refuses every request (fail closed: a rotation usually means the old
    /// token must stop working) until the file holds a valid one again.
    pub fn poll(&mut self) {
        let now = stamp(&self.path);
        if now == self.last {
            return;
        }
        self.last = now;
        let next = match read_token_file(&self.path) {
            Ok(t) => {
                tracing::info!(path = %self.path.display(), "admin token file changed: new token in use");
                Some(Arc::from(t))
            }
            Err(e) => {
                tracing::error!("{e}; the admin API refuses every request until it is fixed");
                None
            }
        };
        *self.cell.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// Poll every [`TOKEN_POLL`] until the task is dropped.
    pub async fn run(mut self) {
        let mut iv = tokio::time::interval(TOKEN_POLL);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            iv.tick().await;
            self.poll();
        }
    }
}

/// The start-up token for `cfg`, and the watcher when it comes from a file.
/// A missing file is not an error: the API listens and refuses every request
/// until the file appears (an optional Secret created after the pod).
pub fn start(
    cfg: &AdminConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(TokenCell, Option<TokenWatch>)>, AdminError> {
    match &cfg.token_file {
        Some(path) => {
            let token = match read_token_file(path) {
                Ok(t) => Some(Arc::from(t)),
                Err(AdminError::TokenFile { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    tracing::warn!(path = %path.display(),
                        "admin token file missing: the admin API refuses every request until it appears");
                    None
                }
                Err(e) => return Err(e),
            };
            let cell: TokenCell = Arc::new(RwLock::new(token));
            let watch = TokenWatch::new(path.clone(), cell.clone());
            Ok(Some((cell, Some(watch))))
        }
        None => Ok(load_token(cfg, env)?
            .map(|t| (Arc::new(RwLock::new(Some(Arc::from(t)))) as TokenCell, None))),
    }
}
