//! `http`: one templated request per transition and route to a gateway API.
use reqwest::header::HeaderValue;

use super::{ActionError, ActionFuture, ActionJob, FuseAction, slug, with_retries};
use crate::respond::fuse::config::HttpActionConfig;
use crate::respond::fuse::machine::FuseState;

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
        let client =
            crate::respond::alert::receiver::endpoint_client(cfg.timeout, cfg.tls.as_ref())?
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
        let secret = crate::respond::alert::receiver::read_secret(path).map_err(|source| {
            ActionError::Secret {
                path: path.display().to_string(),
                source,
            }
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
    fn ident(&self) -> (&str, &[String]) {
        (&self.cfg.name, &self.cfg.services)
    }

    fn is_snapshot(&self) -> bool {
        false
    }

    fn apply<'a>(&'a self, job: &'a ActionJob) -> ActionFuture<'a> {
        Box::pin(with_retries(
            &self.cfg.name,
            self.cfg.retries,
            self.cfg.backoff,
            || self.attempt(job),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::request::route::RouteKey;
    use crate::respond::fuse::action::idempotency_key;

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
    fn urls_in_errors_lose_their_query_and_password() {
        assert_eq!(
            redact_url("http://u:pw@gw:9901/runtime_modify?k=v&token=s3cret#f"),
            "http://u:REDACTED@gw:9901/runtime_modify?REDACTED"
        );
        assert_eq!(redact_url("http://gw/a"), "http://gw/a");
        assert_eq!(redact_url("not a url?token=s"), "not a url...");
    }
}
