//! `haproxy`: the map of fused routes, kept in step through HAProxy's runtime
//! API (the stats socket at `level admin`) with no reload, and written to the
//! map file so a restarted HAProxy loads the same state.
//!
//! Each call swaps in the whole map atomically: `prepare map` opens a new
//! version, `add map @<ver>` fills it in order, `commit map @<ver>` makes it
//! live. Until the commit HAProxy keeps matching the old version, so a call
//! that fails half way changes nothing and the retry starts over.
//!
//! Keys are anchored regexes (`map_reg`) over `"<method> <decoded path>"`
//! from [`RouteMatch::pcre`]: first match wins, so literal siblings (`0`)
//! come before the fused templates (`1`). The key holds only
//! `[A-Za-z0-9/_-^$[]+\x]`: no blank, `;` or `#` that would end the key, the
//! command or the line.
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::route_match::{RouteMatch, match_lines};
use super::{ActionError, ActionFuture, ActionJob, FuseAction, SnapshotEntry, with_retries};
use crate::respond::fuse::config::HaproxyActionConfig;
use crate::respond::fuse::store::write_atomic;

/// Longest answer read from the runtime API (a `show map` of thousands of
/// routes fits; a peer that never stops cannot fill the agent's memory).
const MAX_ANSWER: u64 = 1 << 20;

pub struct HaproxyAction {
    cfg: HaproxyActionConfig,
}

impl HaproxyAction {
    pub fn new(cfg: HaproxyActionConfig) -> Self {
        Self { cfg }
    }

    /// `(key, value)` in match order: `1` answers 503, `0` passes.
    pub fn entries(&self, snapshot: &[SnapshotEntry]) -> Vec<(String, u8)> {
        match_lines(snapshot, |r| self.wants(r))
            .into_iter()
            .map(|l| (RouteMatch::of(&l.entry.route).pcre("\\x20"), l.fused as u8))
            .collect()
    }

    /// The map file: what HAProxy loads at its (re)start.
    pub fn map_file(&self, snapshot: &[SnapshotEntry]) -> String {
        let mut s = String::from(
            "# Written by sloguard; do not edit. Key: \"<method> <decoded path>\" (map_reg).\n",
        );
        for (k, v) in self.entries(snapshot) {
            s.push_str(&format!("{k} {v}\n"));
        }
        s
    }

    /// One command on its own connection (HAProxy closes it after the
    /// answer); connect, write and read share one deadline.
    async fn command(&self, command: &str) -> Result<String, ActionError> {
        let err = |message: String| ActionError::Runtime {
            command: command.split(' ').take(2).collect::<Vec<_>>().join(" "),
            message,
        };
        let talk = async {
            let line = format!("{command}\n");
            let mut answer = Vec::new();
            if self.cfg.socket.starts_with('/') {
                let mut s = tokio::net::UnixStream::connect(&self.cfg.socket).await?;
                s.write_all(line.as_bytes()).await?;
                s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            } else {
                let mut s = tokio::net::TcpStream::connect(&self.cfg.socket).await?;
                s.write_all(line.as_bytes()).await?;
                s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(self.cfg.timeout, talk).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(err(format!("{}: {e}", self.cfg.socket))),
            Err(_) => Err(err(format!(
                "{}: no answer within {:?}",
                self.cfg.socket, self.cfg.timeout
            ))),
        }
    }

    /// A command whose success is an empty answer; anything else is
    /// HAProxy's error text.
    async fn expect_empty(&self, command: &str) -> Result<(), ActionError> {
        let answer = self.command(command).await?;
        let text = answer.trim();
        if text.is_empty() {
            Ok(())
        } else {
            Err(ActionError::Runtime {
                command: command.split(' ').take(2).collect::<Vec<_>>().join(" "),
                message: text.chars().take(300).collect(),
            })
        }
    }

    async fn attempt(&self, entries: &[(String, u8)]) -> Result<(), ActionError> {
        let map = self.cfg.map.display().to_string();
        let answer = self.command(&format!("prepare map {map}")).await?;
        let version: u64 = answer
            .trim()
            .strip_prefix("New version created: ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ActionError::Runtime {
                command: "prepare map".into(),
                message: answer.trim().chars().take(300).collect(),
            })?;
        for (key, value) in entries {
            self.expect_empty(&format!(
                "add map @{version} {map} {} {value}",
                cli_word(key)
            ))
            .await?;
        }
        self.expect_empty(&format!("commit map @{version} {map}"))
            .await
    }
}

/// The runtime API's command parser takes `\` as an escape (and drops it), so
/// the regex's backslashes are doubled to reach the map as written.
fn cli_word(key: &str) -> String {
    debug_assert!(!key.contains([' ', '\t', ';', '\n', '#']), "{key}");
    key.replace('\\', "\\\\")
}

impl FuseAction for HaproxyAction {
    fn ident(&self) -> (&str, &[String]) {
        (&self.cfg.name, &self.cfg.services)
    }

    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a> {
        Box::pin(async move {
            // The file first: a HAProxy restarted after this call loads what
            // the runtime API is about to hold.
            let content = self.map_file(&job.snapshot);
            let path = self.cfg.map.clone();
            let werr = |source| ActionError::Write {
                path: self.cfg.map.display().to_string(),
                source,
            };
            tokio::task::spawn_blocking(move || write_atomic(&path, content.as_bytes()))
                .await
                .map_err(|e| werr(std::io::Error::other(e.to_string())))?
                .map_err(werr)?;
            let entries = self.entries(&job.snapshot);
            with_retries(&self.cfg.name, self.cfg.retries, self.cfg.backoff, || {
                self.attempt(&entries)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::route::RouteKey;
    use crate::respond::fuse::machine::FuseState;

    #[test]
    fn map_file_lists_siblings_then_open_routes_as_blank_free_regexes() {
        let a = HaproxyAction::new(HaproxyActionConfig {
            services: vec!["shop".into()],
            ..Default::default()
        });
        let e = |s: &str, r: &str, state| SnapshotEntry {
            route: RouteKey::new(s, "GET", r),
            state,
        };
        let snap = vec![
            e("shop", "/users/{id}", FuseState::Open),
            e("shop", "/users/me", FuseState::Closed),
            e("shop", "/a b\"\\{x}\n", FuseState::Open),
            e("shop", "/half", FuseState::HalfOpen),
            e("other", "/x", FuseState::Open),
        ];
        let lines: Vec<String> = a
            .map_file(&snap)
            .lines()
            .skip(1)
            .map(String::from)
            .collect();
        assert_eq!(
            lines,
            vec![
                "^GET\\x20/users/me$ 0",
                "^GET\\x20/users/[^/]+$ 1",
                "^GET\\x20/a\\x20b\\x22\\x5c[^/]+\\x0a$ 1",
            ]
        );
        for (k, _) in a.entries(&snap) {
            assert!(!k.contains([' ', '\t', ';', '#', '\n', '"']), "{k}");
            // Over the CLI each backslash is doubled; HAProxy undoes it.
            assert_eq!(cli_word(&k).replace("\\\\", "\\"), k);
        }
    }
}
