//! `file`: the whole picture in one file (JSON, or an nginx map include),
//! rewritten atomically on every change, then an optional reload command.
use super::route_match::{RouteMatch, match_lines};
use super::{ActionError, ActionFuture, ActionJob, FuseAction, SnapshotEntry, slug};
use crate::respond::fuse::config::{FileActionConfig, FileFormat};
use crate::respond::fuse::machine::FuseState;
use crate::respond::fuse::store::write_atomic;

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
            .filter(|e| e.state.is_fused() && self.wants(&e.route));
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
                // nginx tries map regexes in file order: the first wins.
                for l in match_lines(snapshot, |r| self.wants(r)) {
                    let e = l.entry;
                    s.push_str(&format!(
                        "\"{}\" {}; # service {}\n",
                        nginx_regex(&e.route.method, &e.route.route),
                        l.fused as u8,
                        slug(&e.route.service)
                    ));
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
            crate::respond::fuse::reload::run_with_timeout(&prog, &args, timeout)
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
    fn ident(&self) -> (&str, &[String]) {
        (&self.cfg.name, &self.cfg.services)
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

/// `GET /users/{id}` → `~^GET /users/[^/]+$`, over nginx's
/// `"$request_method $uri"` key (see [`RouteMatch::pcre`]): nothing a client
/// sent can end the quoted string or inject nginx config.
pub fn nginx_regex(method: &str, route: &str) -> String {
    format!("~{}", RouteMatch::new(method, route).pcre(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: &str, method: &str, route: &str, state: FuseState) -> SnapshotEntry {
        SnapshotEntry {
            route: RouteKey::new(service, method, route),
            state,
        }
    }
    use crate::request::route::RouteKey;

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
        let snap = super::super::route_match::tests::siblings_snapshot();
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
            entry("shop", "GET", "/slow", FuseState::Open),
            entry("shop", "GET", "/half", FuseState::HalfOpen),
            entry("shop", "GET", "/ok", FuseState::Closed),
            entry("other", "GET", "/x", FuseState::Open),
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
            entry("shop", "GET", "/slow", FuseState::Open),
            entry("shop", "GET", "/ok", FuseState::Closed),
        ];
        let v: serde_json::Value = serde_json::from_str(&f.content(&snap)).unwrap();
        assert_eq!(v["routes"].as_array().unwrap().len(), 1);
        assert_eq!(v["routes"][0]["route"], "/slow");
        assert_eq!(v["routes"][0]["fused"], true);
    }
}
