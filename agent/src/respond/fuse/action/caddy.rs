//! `caddy`: one route, found again by its `@id`, at the top of a server's
//! routes, answering 503 for every open route; deleted when none is open.
//! Through Caddy's admin API, no reload. Each call reads the route, changes
//! it only when it differs (so a repeat is a no-op), and reads it back.
//!
//! The route is built as JSON values, never as text: a route from traffic
//! goes in as a method string and an anchored regex from
//! [`RouteMatch::go_path_regexp`], so it cannot end a string or add a key.
use serde_json::{Value, json};

use super::route_match::{RouteMatch, match_lines, percent_decode};
use super::{ActionError, ActionFuture, ActionJob, FuseAction, SnapshotEntry, with_retries};
use crate::respond::fuse::config::CaddyActionConfig;

/// Longest error text kept from an answer.
const MAX_ERROR: usize = 300;

pub struct CaddyAction {
    cfg: CaddyActionConfig,
    client: reqwest::Client,
}

impl CaddyAction {
    pub fn new(cfg: CaddyActionConfig) -> Result<Self, ActionError> {
        // A redirect would take the change somewhere nobody configured.
        let client = crate::respond::alert::receiver::endpoint_client(cfg.timeout, None)?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ActionError::Request(e.to_string()))?;
        Ok(Self { cfg, client })
    }

    /// The route for a snapshot; None when no route is open.
    pub fn route(&self, snapshot: &[SnapshotEntry]) -> Option<Value> {
        let lines = match_lines(snapshot, |r| self.wants(r));
        let sets: Vec<Value> = lines
            .iter()
            .filter(|l| l.fused)
            .map(|l| {
                let m = RouteMatch::of(&l.entry.route);
                // Literal siblings this template would block, let through.
                let spare: Vec<Value> = lines
                    .iter()
                    .filter(|s| !s.fused)
                    .filter(|s| {
                        m.matches(&s.entry.route.method, &percent_decode(&s.entry.route.route))
                    })
                    .map(|s| {
                        json!({"path_regexp": {
                            "pattern": RouteMatch::of(&s.entry.route).go_path_regexp()
                        }})
                    })
                    .collect();
                let mut set = json!({
                    "method": [m.method()],
                    "path_regexp": {"pattern": m.go_path_regexp()},
                });
                if !spare.is_empty() {
                    set["not"] = Value::Array(spare);
                }
                set
            })
            .collect();
        // An empty `match` would match every request: no route at all then.
        if sets.is_empty() {
            return None;
        }
        Some(json!({
            "@id": self.cfg.route_id,
            "match": sets,
            "handle": [{
                "handler": "static_response",
                "status_code": 503,
                "headers": {"Content-Type": ["application/json"]},
                "body": "{\"error\":\"route fused by sloguard\"}\n",
            }],
            "terminal": true,
        }))
    }

    fn id_url(&self) -> String {
        format!(
            "{}/id/{}",
            self.cfg.admin_url.trim_end_matches('/'),
            self.cfg.route_id
        )
    }

    /// Sends one request; a non-2xx answer is an error with Caddy's text.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ActionError> {
        let mut req = self.client.request(method.clone(), url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("{method} {}", super::redact_url(url));
        let resp = req
            .send()
            .await
            .map_err(|e| ActionError::Caddy(format!("{what}: {}", e.without_url())))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(ActionError::Caddy(format!(
            "{what}: HTTP {status}: {}",
            text.trim().chars().take(MAX_ERROR).collect::<String>()
        )))
    }

    /// The live route, None when Caddy has no object with the id.
    async fn current(&self) -> Result<Option<Value>, ActionError> {
        let url = self.id_url();
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| ActionError::Caddy(format!("GET {url}: {}", e.without_url())))?;
        match resp.status().as_u16() {
            // Caddy answers an unknown @id with 404.
            404 => Ok(None),
            s if (200..300).contains(&s) => {
                let v: Value = resp
                    .json()
                    .await
                    .map_err(|e| ActionError::Caddy(format!("GET {url}: {e}")))?;
                Ok((!v.is_null()).then_some(v))
            }
            s => Err(ActionError::Caddy(format!("GET {url}: HTTP {s}"))),
        }
    }

    async fn attempt(&self, want: &Option<Value>) -> Result<(), ActionError> {
        let current = self.current().await?;
        if current == *want {
            return Ok(());
        }
        let id = self.id_url();
        match (want, current) {
            (None, _) => self.send(reqwest::Method::DELETE, &id, None).await?,
            // PATCH replaces the object where it is.
            (Some(w), Some(_)) => self.send(reqwest::Method::PATCH, &id, Some(w)).await?,
            // PUT on an array index inserts there: first, before every route.
            (Some(w), None) => {
                let url = format!(
                    "{}/config/apps/http/servers/{}/routes/0",
                    self.cfg.admin_url.trim_end_matches('/'),
                    self.cfg.server
                );
                self.send(reqwest::Method::PUT, &url, Some(w)).await?
            }
        };
        let after = self.current().await?;
        if after == *want {
            Ok(())
        } else {
            Err(ActionError::Caddy(format!(
                "route {} read back differs from the one sent",
                self.cfg.route_id
            )))
        }
    }
}

impl FuseAction for CaddyAction {
    fn ident(&self) -> (&str, &[String]) {
        (&self.cfg.name, &self.cfg.services)
    }

    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a> {
        Box::pin(async move {
            let want = self.route(&job.snapshot);
            with_retries(&self.cfg.name, self.cfg.retries, self.cfg.backoff, || {
                self.attempt(&want)
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
    fn route_json_holds_hostile_routes_as_values() {
        let a = CaddyAction::new(CaddyActionConfig::default()).unwrap();
        let e = |r: &str, state| SnapshotEntry {
            route: RouteKey::new("shop", "GET", r),
            state,
        };
        assert_eq!(a.route(&[e("/x", FuseState::HalfOpen)]), None);
        let snap = vec![
            e("/users/{id}", FuseState::Open),
            e("/users/me", FuseState::Closed),
            e("/q\"}],\"handle\":[]\\ {x}\n", FuseState::Open),
        ];
        let v = a.route(&snap).unwrap();
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert_eq!(v["@id"], "sloguard-fuses");
        assert_eq!(v["handle"].as_array().unwrap().len(), 1);
        let sets = v["match"].as_array().unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0]["path_regexp"]["pattern"], "^/users/[^/]+$");
        assert_eq!(sets[0]["not"][0]["path_regexp"]["pattern"], "^/users/me$");
        assert_eq!(
            sets[1]["path_regexp"]["pattern"],
            "^/q\\x{22}\\x{7d}\\x{5d}\\x{2c}\\x{22}handle\\x{22}\\x{3a}\\x{5b}\\x{5d}\\x{5c}\\x{20}[^/]+\\x{a}$"
        );
        assert!(sets[1].get("not").is_none());
    }
}
