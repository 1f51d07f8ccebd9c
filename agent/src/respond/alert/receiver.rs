//! One HTTP endpoint alerts are posted to: its client (timeout, TLS), its
//! credentials (re-read from their files on every post, so rotation works)
//! and the retry loop with capped exponential backoff.
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::delivery_config::{BasicAuth, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("receiver {receiver}: cannot read {path}: {source}")]
    Secret {
        receiver: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("receiver {receiver}: CA file {path}: {message}")]
    Tls {
        receiver: String,
        path: String,
        message: String,
    },
    #[error("receiver {receiver}: bad URL `{url}`: {message}")]
    Url {
        receiver: String,
        url: String,
        message: String,
    },
    #[error("receiver {receiver}: HTTP client: {source}")]
    Client {
        receiver: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("receiver {receiver}: answered HTTP {status}")]
    Status { receiver: String, status: u16 },
    #[error("receiver {receiver}: request failed: {source}")]
    Transport {
        receiver: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot encode payload: {0}")]
    Encode(#[from] serde_json::Error),
}

impl DeliveryError {
    /// Worth another attempt, as Alertmanager's own retrier judges it:
    /// network errors, timeouts, 5xx and 429; not other 4xx or bad config.
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Transport { .. } => true,
            DeliveryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("CA file {path}: {message}")]
pub struct CaFileError {
    pub path: String,
    pub message: String,
}

/// The client of a configured endpoint (alert receivers, fuse `http`
/// actions): timeouts, user agent, the CA file and `insecure_skip_verify`,
/// and never a proxy picked up from the environment: requests go where
/// they are configured to.
pub fn endpoint_client(
    timeout: Duration,
    tls: Option<&TlsConfig>,
) -> Result<reqwest::ClientBuilder, CaFileError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("sloguard/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    if let Some(t) = tls {
        if let Some(ca) = &t.ca_file {
            let err = |message: String| CaFileError {
                path: ca.display().to_string(),
                message,
            };
            let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificate in file".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        b = b.danger_accept_invalid_certs(t.insecure_skip_verify);
    }
    Ok(b)
}

/// A secret file's content without surrounding whitespace. Read on every
/// use, so a rotated secret is picked up without a restart.
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// Capped exponential backoff between attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Wait before retry number `retry` (1-based): initial × 2^(retry-1),
    /// at most `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

enum Auth {
    None,
    Bearer(PathBuf),
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

pub struct Target {
    /// `receiver` label of the delivery counters.
    pub name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    auth: Auth,
}

impl Target {
    pub fn new(
        name: &str,
        url: &str,
        timeout: Duration,
        bearer_token_file: Option<&Path>,
        basic_auth: Option<&BasicAuth>,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, DeliveryError> {
        let url = reqwest::Url::parse(url).map_err(|e| DeliveryError::Url {
            receiver: name.into(),
            url: url.into(),
            message: e.to_string(),
        })?;
        let b = endpoint_client(timeout, tls).map_err(|e| DeliveryError::Tls {
            receiver: name.into(),
            path: e.path,
            message: e.message,
        })?;
        let client = b.build().map_err(|source| DeliveryError::Client {
            receiver: name.into(),
            source,
        })?;
        let auth = match (bearer_token_file, basic_auth) {
            (Some(p), _) => Auth::Bearer(p.to_path_buf()),
            (None, Some(b)) => Auth::Basic {
                username: b.username.clone(),
                password_file: b.password_file.clone(),
            },
            (None, None) => Auth::None,
        };
        Ok(Target {
            name: name.into(),
            url,
            client,
            auth,
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    fn secret(&self, path: &Path) -> Result<String, DeliveryError> {
        read_secret(path).map_err(|source| DeliveryError::Secret {
            receiver: self.name.clone(),
            path: path.display().to_string(),
            source,
        })
    }

    /// One POST of a JSON body; Ok on 2xx.
    pub async fn post_once(&self, body: Bytes) -> Result<(), DeliveryError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(p) => req.bearer_auth(self.secret(p)?),
            Auth::Basic {
                username,
                password_file,
            } => req.basic_auth(username, Some(self.secret(password_file)?)),
        };
        let resp = req
            .send()
            .await
            .map_err(|source| DeliveryError::Transport {
                receiver: self.name.clone(),
                source,
            })?;
        let status = resp.status();
        // Read the body to the end so the connection can be reused.
        let _ = resp.bytes().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status {
                receiver: self.name.clone(),
                status: status.as_u16(),
            })
        }
    }

    /// Post with retries; `on_retry` is called before each retry.
    pub async fn post(
        &self,
        body: Bytes,
        policy: &RetryPolicy,
        mut on_retry: impl FnMut(),
    ) -> Result<(), DeliveryError> {
        let mut retry = 0;
        loop {
            match self.post_once(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.retryable() && retry < policy.max_retries => {
                    retry += 1;
                    tracing::debug!(receiver = %self.name, error = %e, retry, "alert delivery failed, retrying");
                    on_retry();
                    tokio::time::sleep(policy.backoff(retry)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(3),
        };
        let got: Vec<u128> = (1..=6).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(p.backoff(200), Duration::from_secs(3), "no overflow");
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let s = |status| DeliveryError::Status {
            receiver: "r".into(),
            status,
        };
        assert!(s(500).retryable());
        assert!(s(503).retryable());
        assert!(s(429).retryable());
        assert!(!s(400).retryable());
        assert!(!s(401).retryable());
        assert!(!s(404).retryable());
    }

    #[test]
    fn missing_or_unreadable_ca_file_is_a_typed_error() {
        let target_with_ca = |ca_file: PathBuf| {
            let tls = TlsConfig {
                ca_file: Some(ca_file),
                insecure_skip_verify: false,
            };
            Target::new(
                "r",
                "https://127.0.0.1:1/",
                Duration::from_secs(1),
                None,
                None,
                Some(&tls),
            )
            .err()
            .unwrap()
        };
        let e = target_with_ca("/nonexistent/ca.pem".into());
        assert!(matches!(e, DeliveryError::Tls { .. }), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = target_with_ca(p);
        assert!(matches!(e, DeliveryError::Tls { .. }), "{e}");
    }
}
