//! The `alerts:` config section: where alerts go and how hard to try.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// `receiver` of webhook v4 messages.
    pub receiver: String,
    /// `externalURL` of webhook messages and `generatorURL` of alerts; empty
    /// leaves them empty.
    pub external_url: String,
    /// Alerts waiting for delivery (the dispatcher's queue and each
    /// receiver's); when full new alerts are dropped and counted.
    pub queue_capacity: usize,
    /// Retries after the first attempt (connection errors, timeouts, 5xx, 429).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles per retry up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub webhooks: Vec<WebhookConfig>,
    pub alertmanager: AlertmanagerConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            receiver: "sloguard".into(),
            external_url: String::new(),
            queue_capacity: 1024,
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            webhooks: Vec::new(),
            alertmanager: AlertmanagerConfig::default(),
        }
    }
}

/// A receiver of Alertmanager webhook v4 messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `receiver` label of the delivery counters; unique.
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Base URLs (`http://alertmanager:9093`); every one gets every alert,
    /// as Prometheus sends to each member of an HA pair.
    pub urls: Vec<String>,
    /// Firing alerts are re-sent this often; their `endsAt` is 4× this ahead.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    pub tls: Option<TlsConfig>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            resend_interval: Duration::from_secs(60),
            timeout: default_timeout(),
            bearer_token_file: None,
            basic_auth: None,
            tls: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM bundle of CAs to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue_capacity == 0 {
            return Err(ConfigError::key(
                "alerts.queue_capacity",
                "must be at least 1",
            ));
        }
        if self.initial_backoff.is_zero() {
            return Err(ConfigError::key(
                "alerts.initial_backoff",
                "must be greater than 0",
            ));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(ConfigError::key(
                "alerts.max_backoff",
                "must be at least alerts.initial_backoff",
            ));
        }
        if !self.external_url.is_empty() {
            check_url("alerts.external_url", &self.external_url)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("alerts.webhooks[{i}]");
            if w.name.trim().is_empty() {
                return Err(ConfigError::key(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(w.name.as_str()) {
                return Err(ConfigError::key(
                    format!("{at}.name"),
                    format!("`{}` is used by another webhook", w.name),
                ));
            }
            check_url(&format!("{at}.url"), &w.url)?;
            check_client(&at, w.timeout, &w.bearer_token_file, &w.basic_auth)?;
        }
        let am = &self.alertmanager;
        for (i, u) in am.urls.iter().enumerate() {
            check_url(&format!("alerts.alertmanager.urls[{i}]"), u)?;
        }
        if am.resend_interval.is_zero() {
            return Err(ConfigError::key(
                "alerts.alertmanager.resend_interval",
                "must be greater than 0",
            ));
        }
        check_client(
            "alerts.alertmanager",
            am.timeout,
            &am.bearer_token_file,
            &am.basic_auth,
        )
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::key(key, format!("`{url}` is not a URL: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(ConfigError::key(
            key,
            format!("`{url}`: scheme must be http or https"),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::key(key, format!("`{url}` has no host")));
    }
    Ok(())
}

fn check_client(
    at: &str,
    timeout: Duration,
    bearer: &Option<PathBuf>,
    basic: &Option<BasicAuth>,
) -> Result<(), ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::key(
            format!("{at}.timeout"),
            "must be greater than 0",
        ));
    }
    if bearer.is_some() && basic.is_some() {
        return Err(ConfigError::key(
            format!("{at}.basic_auth"),
            "cannot be combined with bearer_token_file",
        ));
    }
    if let Some(b) = basic
        && b.username.is_empty()
    {
        return Err(ConfigError::key(
            format!("{at}.basic_auth.username"),
            "must not be empty",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, Vec::<(String, String)>::new())
    }

    #[test]
    fn defaults_and_full_section() {
        let c = parse("").unwrap();
        assert_eq!(c.alerts, AlertsConfig::default());
        assert_eq!(c.alerts.queue_capacity, 1024);
        assert_eq!(
            c.alerts.alertmanager.resend_interval,
            Duration::from_secs(60)
        );
        let c = parse(
            "alerts:\n  receiver: ops\n  max_retries: 2\n  initial_backoff: 100ms\n  max_backoff: 2s\n  \
             webhooks:\n    - name: chat\n      url: https://hooks.example/x\n      timeout: 3s\n      \
             basic_auth: {username: u, password_file: /run/p}\n      tls: {insecure_skip_verify: true}\n    \
             - name: pager\n      url: http://127.0.0.1:9/\n      bearer_token_file: /run/t\n  \
             alertmanager:\n    urls: [http://127.0.0.1:9093]\n    resend_interval: 30s\n",
        )
        .unwrap();
        let a = &c.alerts;
        assert_eq!(a.receiver, "ops");
        assert_eq!(a.webhooks.len(), 2);
        assert_eq!(a.webhooks[0].timeout, Duration::from_secs(3));
        assert_eq!(a.webhooks[1].timeout, Duration::from_secs(10));
        assert!(a.webhooks[0].tls.as_ref().unwrap().insecure_skip_verify);
        assert_eq!(a.alertmanager.resend_interval, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "alerts:\n  webhooks:\n    - {name: a, url: 'not a url'}\n",
                "alerts.webhooks[0].url",
            ),
            (
                "alerts:\n  webhooks:\n    - {name: a, url: 'ftp://x/'}\n",
                "alerts.webhooks[0].url",
            ),
            (
                "alerts:\n  webhooks:\n    - {name: a, url: 'http://x/'}\n    - {name: a, url: 'http://y/'}\n",
                "alerts.webhooks[1].name",
            ),
            (
                "alerts:\n  alertmanager:\n    urls: ['http://ok:1', 'nope']\n",
                "alerts.alertmanager.urls[1]",
            ),
            ("alerts:\n  queue_capacity: 0\n", "alerts.queue_capacity"),
            (
                "alerts:\n  initial_backoff: 5s\n  max_backoff: 1s\n",
                "alerts.max_backoff",
            ),
            (
                "alerts:\n  webhooks:\n    - {name: a, url: 'http://x/', bearer_token_file: /t, basic_auth: {username: u, password_file: /p}}\n",
                "alerts.webhooks[0].basic_auth",
            ),
            (
                "alerts:\n  alertmanager:\n    resend_interval: 0s\n",
                "alerts.alertmanager.resend_interval",
            ),
            ("alerts:\n  webhoks: []\n", "webhoks"),
            (
                "alerts:\n  webhooks:\n    - {name: a, url: 'http://x/', timout: 1s}\n",
                "timout",
            ),
        ];
        for (yaml, key) in cases {
            let e = parse(yaml).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/alerts.md shows the section with its defaults; keep them equal.
    #[test]
    fn documented_section_is_the_default() {
        let doc = include_str!("../../../../docs/alerts.md");
        let start = doc.find("<!-- alerts-config -->").expect("marker");
        let block = &doc[start..];
        let yaml = block
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("yaml block");
        let c = crate::config::Config::from_yaml_with_env(yaml, Vec::<(String, String)>::new())
            .unwrap();
        assert_eq!(c.alerts, AlertsConfig::default());
        // Same text as the defaults serialise to, so the block can go into
        // config/sloguard.yaml as it is.
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut want = serde_yaml_ng::Mapping::new();
        want.insert(
            "alerts".into(),
            serde_yaml_ng::to_value(AlertsConfig::default()).unwrap(),
        );
        assert_eq!(
            doc,
            serde_yaml_ng::Value::Mapping(want),
            "defaults serialise as:\n{}",
            serde_yaml_ng::to_string(&AlertsConfig::default()).unwrap()
        );
    }
}
