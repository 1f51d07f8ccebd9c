//! Talking to a running agent: the status endpoint on the metrics port (no
//! token) and the admin API (bearer token from the same file or env variable
//! the agent reads). Every failure becomes one [`CliError`] line that says
//! what to check, never a backtrace.
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use crate::config::Config;
use crate::export::admin::load_token;
use crate::export::status::{STATUS_PATH, StatusDoc};

/// Whole request, connect included. An on-call shell over a slow link still
/// gets an answer or an error within seconds, never a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A fuse change fsyncs the state file and the audit trail under the fuse
/// lock; on a node busy writing to disk that can take seconds, and giving up
/// early would leave the operator unsure whether the change happened.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the agent listens, from its config file (the same `--config` /
/// `SLOGUARD_CONFIG` the agent runs with) unless the flags say otherwise.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port` of the metrics listener.
    pub metrics: String,
    /// `http://host:port` of the admin API.
    pub admin: String,
    cfg: Config,
}

/// A listen address as a URL to dial: an unspecified address (`0.0.0.0`,
/// `::`) is reached on loopback.
fn dial(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v) => format!("[{v}]"),
        std::net::IpAddr::V4(v) => v.to_string(),
    };
    format!("http://{ip}:{}", addr.port())
}

impl Target {
    pub fn new(cfg: Config, metrics: Option<String>, admin: Option<String>) -> Self {
        let trim = |u: String| u.trim_end_matches('/').to_string();
        Self {
            metrics: metrics
                .map(trim)
                .unwrap_or_else(|| dial(cfg.metrics.listen)),
            admin: admin.map(trim).unwrap_or_else(|| dial(cfg.admin.listen)),
            cfg,
        }
    }

    /// The admin token the agent would load (file first, then env).
    pub fn token(&self) -> Result<String, CliError> {
        let a = &self.cfg.admin;
        match load_token(a, |k| std::env::var(k).ok()) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(CliError::NoToken {
                env: a.token_env.clone(),
            }),
            Err(e) => Err(CliError::Token(e.to_string())),
        }
    }
}

/// A blocking client (the CLI does one thing at a time).
pub struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> Result<Self, CliError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Internal(format!("runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The agent is local; a proxy from the environment would only
            // send the bearer token somewhere else.
            .no_proxy()
            .build()
            .map_err(|e| CliError::Internal(format!("http client: {e}")))?;
        Ok(Self { rt, http })
    }

    /// `GET /api/v1/status` on the metrics listener.
    pub fn status(&self, t: &Target) -> Result<StatusDoc, CliError> {
        let url = format!("{}{STATUS_PATH}", t.metrics);
        self.send(self.http.get(&url), &url, Api::Metrics)
    }

    /// `GET path` on the admin API.
    pub fn admin_get<T: DeserializeOwned>(&self, t: &Target, path: &str) -> Result<T, CliError> {
        let url = format!("{}{path}", t.admin);
        let token = t.token()?;
        let r = self.http.get(&url).bearer_auth(token);
        self.send(r, &url, Api::Admin(t))
    }

    /// `POST path` with a JSON body on the admin API.
    pub fn admin_post<B: Serialize, T: DeserializeOwned>(
        &self,
        t: &Target,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", t.admin);
        let token = t.token()?;
        let r = self
            .http
            .post(&url)
            .bearer_auth(token)
            .timeout(CHANGE_TIMEOUT)
            .json(body);
        self.send(r, &url, Api::Change(t))
    }

    fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        api: Api<'_>,
    ) -> Result<T, CliError> {
        self.rt.block_on(async {
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Err(self.unreachable(url, &e, api).await),
            };
            let status = resp.status();
            let body = read_bounded(resp, url, MAX_BODY).await?;
            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| CliError::BadResponse {
                    url: url.into(),
                    detail: e.to_string(),
                });
            }
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            let message = super::one_line(&message, 200);
            Err(match status.as_u16() {
                401 | 403 => CliError::Unauthorized { url: url.into() },
                code => CliError::Rejected {
                    url: url.into(),
                    code,
                    message,
                },
            })
        })
    }

    /// Why `url` could not be reached, with a hint: when the admin API does
    /// not answer but the metrics port does, the agent runs with its admin
    /// API off (no token) or on another address.
    async fn unreachable(&self, url: &str, e: &reqwest::Error, api: Api<'_>) -> CliError {
        let reason = if e.is_timeout() {
            match api {
                Api::Change(_) => format!(
                    "no answer within {}s (the change may still have been applied: check `sloguard fuse list`)",
                    CHANGE_TIMEOUT.as_secs()
                ),
                _ => format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            }
        } else if e.is_connect() {
            "connection refused".to_string()
        } else {
            super::one_line(&e.to_string(), 120)
        };
        let hint = match api {
            Api::Metrics => {
                "is the agent running, and is metrics.listen (or --metrics-url) right?".to_string()
            }
            Api::Admin(t) | Api::Change(t) => {
                let health = format!("{}/healthz", t.metrics);
                let agent_up = self.http.get(&health).send().await.is_ok();
                if agent_up {
                    format!(
                        "the agent answers on {} but its admin API does not: it is off without a token (admin.token_file or {}) or listens elsewhere (admin.listen, --admin-url)",
                        t.metrics, t.cfg.admin.token_env
                    )
                } else {
                    format!(
                        "the agent does not answer on {} either: is it running?",
                        t.metrics
                    )
                }
            }
        };
        CliError::Unreachable {
            url: url.into(),
            reason,
            hint,
        }
    }
}

/// Largest answer read: a status document at every cap (services × 500
/// routes × gray tags at ~0.4 KiB a row) stays far below it, and whatever
/// else answers on the port cannot make the CLI grow without bound.
const MAX_BODY: usize = 64 << 20;

async fn read_bounded(
    mut resp: reqwest::Response,
    url: &str,
    max: usize,
) -> Result<Vec<u8>, CliError> {
    let bad = |detail: String| CliError::BadResponse {
        url: url.into(),
        detail,
    };
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| bad(e.to_string()))? {
        if body.len() + chunk.len() > max {
            return Err(bad(format!("answer larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Clone, Copy)]
enum Api<'a> {
    Metrics,
    Admin(&'a Target),
    /// A POST that changes a fuse.
    Change(&'a Target),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_past_the_bound_are_an_error_not_memory() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok((mut s, _)) = l.accept().await {
                    let mut req = [0u8; 4096];
                    let _ = s.read(&mut req).await;
                    let body = "x".repeat(100);
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{body}")
                                .as_bytes(),
                        )
                        .await;
                }
            });
            let url = format!("http://{addr}/");
            let get = || async { reqwest::get(&url).await.unwrap() };
            let err = read_bounded(get().await, &url, 10).await.unwrap_err();
            assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
            assert_eq!(
                read_bounded(get().await, &url, 100).await.unwrap().len(),
                100
            );
        });
    }

    #[test]
    fn unspecified_listen_addresses_are_dialled_on_loopback() {
        assert_eq!(
            dial("0.0.0.0:9464".parse().unwrap()),
            "http://127.0.0.1:9464"
        );
        assert_eq!(dial("[::]:9464".parse().unwrap()), "http://[::1]:9464");
        assert_eq!(dial("10.0.0.2:1".parse().unwrap()), "http://10.0.0.2:1");
        let t = Target::new(Config::default(), Some("http://h:1/".into()), None);
        assert_eq!(
            (t.metrics.as_str(), t.admin.as_str()),
            ("http://h:1", "http://127.0.0.1:9465")
        );
    }
}
