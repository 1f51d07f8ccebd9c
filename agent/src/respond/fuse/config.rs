//! The `fuse:` config section: mode, timings, guards, files and actions.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

/// `dry_run` logs and records what it would fuse but never calls an action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FuseMode {
    #[default]
    DryRun,
    Enforce,
}

impl FuseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FuseMode::DryRun => "dry_run",
            FuseMode::Enforce => "enforce",
        }
    }
}

/// What a fuse state file that cannot be used does to the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadStateFile {
    /// The agent does not start (the error names the file): forgetting fused
    /// routes silently would be worse.
    #[default]
    Stop,
    /// Move the file aside (`<state_file>.bad-<unix seconds>`), start with no
    /// fused routes in `dry_run`, and raise `SloguardFuseStateReset`.
    Reset,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FuseConfig {
    /// `dry_run` (default: safe to turn on anywhere) or `enforce`.
    pub mode: FuseMode,
    /// How long a route stays open the first time.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Cap of the open time, which doubles per repeat.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// A route closed and healthy this long starts again at `open_for`.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    /// Never fuse more than this share of a service's known routes (0 < x <= 1).
    pub max_fused_share: f64,
    /// An L2 alert fuses only if its triggering period had this many requests.
    pub min_requests: u64,
    /// Manual overrides without a TTL last this long.
    #[serde(with = "humantime_serde")]
    pub override_ttl: Duration,
    /// Longest TTL an override may ask for.
    #[serde(with = "humantime_serde")]
    pub max_override_ttl: Duration,
    /// Fuse state survives restarts here (JSON, atomically rewritten).
    pub state_file: PathBuf,
    /// A state file that is corrupt or from a newer version: `stop` the agent
    /// (default), or `reset`: move it aside, run in `dry_run`, raise
    /// `SloguardFuseStateReset`.
    pub on_bad_state_file: BadStateFile,
    /// Every state change is appended here as a JSON line; empty: log only.
    pub audit_file: Option<PathBuf>,
    /// First retry delay of a failed action; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest delay between retries of a failed action.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// What to do when a route changes state.
    pub actions: Vec<ActionConfig>,
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self {
            mode: FuseMode::DryRun,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
            max_fused_share: 0.5,
            min_requests: 20,
            override_ttl: Duration::from_secs(3600),
            max_override_ttl: Duration::from_secs(7 * 24 * 3600),
            state_file: "/var/lib/sloguard/fuse-state.json".into(),
            on_bad_state_file: BadStateFile::Stop,
            audit_file: Some("/var/lib/sloguard/fuse-audit.jsonl".into()),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            actions: Vec::new(),
        }
    }
}

/// One pluggable action, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionConfig {
    Http(HttpActionConfig),
    File(FileActionConfig),
    Haproxy(HaproxyActionConfig),
    Caddy(CaddyActionConfig),
}

impl ActionConfig {
    pub fn name(&self) -> &str {
        match self {
            ActionConfig::Http(h) => &h.name,
            ActionConfig::File(f) => &f.name,
            ActionConfig::Haproxy(h) => &h.name,
            ActionConfig::Caddy(c) => &c.name,
        }
    }
}

/// A templated request to a gateway API. Placeholders: `{{service}}`,
/// `{{method}}`, `{{route}}`, `{{state}}`, `{{fused}}` (1/0),
/// `{{fused_percent}}` (100/0), `{{route_slug}}`, `{{idempotency_key}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpActionConfig {
    pub name: String,
    /// Only routes of these services (empty: all).
    pub services: Vec<String>,
    pub method: String,
    /// Placeholders are percent-encoded here.
    pub url: String,
    /// Header values; placeholders inserted as they are (CR/LF rejected).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Secret headers: name → file holding the value (trimmed), read on
    /// every request so rotation needs no restart; never logged.
    pub header_files: std::collections::BTreeMap<String, PathBuf>,
    /// `Authorization: Bearer <file content>`, read on every request.
    pub bearer_token_file: Option<PathBuf>,
    /// CA file and `insecure_skip_verify`, as for alert receivers.
    pub tls: Option<crate::respond::alert::delivery_config::TlsConfig>,
    /// Placeholders are JSON-string-escaped here (the body is meant to be JSON).
    pub body: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first one within one try of the action.
    pub retries: u32,
    /// First delay between attempts; doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for HttpActionConfig {
    fn default() -> Self {
        Self {
            name: "http".into(),
            services: Vec::new(),
            method: "POST".into(),
            url: String::new(),
            headers: [("Content-Type".to_string(), "application/json".to_string())]
                .into_iter()
                .collect(),
            header_files: Default::default(),
            bearer_token_file: None,
            tls: None,
            body: r#"{"service":"{{service}}","method":"{{method}}","route":"{{route}}","state":"{{state}}"}"#
                .into(),
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    #[default]
    Json,
    /// The body of an nginx `map "$request_method $uri" $var { ... }` include.
    NginxMap,
}

/// A file rewritten atomically (temp + fsync + rename) on every change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileActionConfig {
    pub name: String,
    /// Only routes of these services (empty: all).
    pub services: Vec<String>,
    pub path: PathBuf,
    pub format: FileFormat,
    /// Run after each write (argv, no shell), e.g. `[nginx, -s, reload]`.
    pub reload_command: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub reload_timeout: Duration,
}

impl Default for FileActionConfig {
    fn default() -> Self {
        Self {
            name: "file".into(),
            services: Vec::new(),
            path: PathBuf::new(),
            format: FileFormat::Json,
            reload_command: Vec::new(),
            reload_timeout: Duration::from_secs(10),
        }
    }
}

/// HAProxy through its runtime API: the map of fused routes is swapped in
/// whole (`prepare map` / `add map @ver` / `commit map`), no reload, and the
/// map file is rewritten too so a restarted HAProxy loads the same state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaproxyActionConfig {
    pub name: String,
    /// Only routes of these services (empty: all).
    pub services: Vec<String>,
    /// The stats socket with `level admin`: a Unix socket path, or
    /// `host:port` for `stats socket ipv4@host:port`.
    pub socket: String,
    /// The map file HAProxy loaded (`map_reg(<this path>)`); also its name in
    /// the runtime API.
    pub map: PathBuf,
    /// Per runtime API command (connect, write, read).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first one within one try of the action.
    pub retries: u32,
    /// First delay between attempts; doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for HaproxyActionConfig {
    fn default() -> Self {
        Self {
            name: "haproxy".into(),
            services: Vec::new(),
            socket: "/run/haproxy/admin.sock".into(),
            map: "/etc/haproxy/sloguard-fuses.map".into(),
            timeout: Duration::from_secs(2),
            retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Caddy through its admin API: one route (found again by its `@id`) at the
/// top of a server's routes answers 503 for every open route; removed when
/// none is open. No reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaddyActionConfig {
    pub name: String,
    /// Only routes of these services (empty: all).
    pub services: Vec<String>,
    /// Caddy's admin endpoint (`admin.listen`), http only.
    pub admin_url: String,
    /// The server under `apps.http.servers` the route goes into (`srv0` is
    /// the first server of a Caddyfile).
    pub server: String,
    /// The `@id` of sloguard's route.
    pub route_id: String,
    /// Per request to the admin API.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first one within one try of the action.
    pub retries: u32,
    /// First delay between attempts; doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for CaddyActionConfig {
    fn default() -> Self {
        Self {
            name: "caddy".into(),
            services: Vec::new(),
            admin_url: "http://127.0.0.1:2019".into(),
            server: "srv0".into(),
            route_id: "sloguard-fuses".into(),
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Bytes that go into a runtime API command or a URL path as they are: a
/// blank, `;`, `\`, `#`, `/`-less control bytes or `%` would change the
/// command or the path.
fn plain_word(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
}

impl FuseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = |f: &str| format!("fuse.{f}");
        if self.open_for.is_zero() {
            return Err(ConfigError::key(k("open_for"), "must be more than 0s"));
        }
        if self.max_open_for < self.open_for {
            return Err(ConfigError::key(
                k("max_open_for"),
                "must be at least fuse.open_for",
            ));
        }
        if !(self.max_fused_share > 0.0 && self.max_fused_share <= 1.0) {
            return Err(ConfigError::key(k("max_fused_share"), "must be in (0, 1]"));
        }
        if self.override_ttl.is_zero() || self.override_ttl > self.max_override_ttl {
            return Err(ConfigError::key(
                k("override_ttl"),
                "must be more than 0s and at most fuse.max_override_ttl",
            ));
        }
        if self.state_file.as_os_str().is_empty() {
            return Err(ConfigError::key(k("state_file"), "must not be empty"));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(ConfigError::key(
                k("retry_min"),
                "must be more than 0s and at most fuse.retry_max",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashSet::new();
        for (i, a) in self.actions.iter().enumerate() {
            let key = |f: &str| format!("fuse.actions[{i}].{f}");
            if a.name().trim().is_empty() {
                return Err(ConfigError::key(key("name"), "must not be empty"));
            }
            if !names.insert(a.name()) {
                return Err(ConfigError::key(key("name"), "duplicate action name"));
            }
            match a {
                ActionConfig::Http(h) => {
                    reqwest::Method::from_bytes(h.method.as_bytes())
                        .map_err(|_| ConfigError::key(key("method"), "not an HTTP method"))?;
                    let probe = h.url.replace("{{", "").replace("}}", "");
                    let url = reqwest::Url::parse(&probe)
                        .map_err(|e| ConfigError::key(key("url"), e.to_string()))?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(ConfigError::key(key("url"), "must be http or https"));
                    }
                    for (name, value) in &h.headers {
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            ConfigError::key(key("headers"), format!("bad header name {name:?}"))
                        })?;
                        if value.contains(['\r', '\n']) {
                            return Err(ConfigError::key(
                                key("headers"),
                                format!("header {name} has a line break"),
                            ));
                        }
                    }
                    let mut secret_names = std::collections::HashSet::new();
                    for name in h.header_files.keys() {
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            ConfigError::key(
                                key("header_files"),
                                format!("bad header name {name:?}"),
                            )
                        })?;
                        secret_names.insert(name.to_ascii_lowercase());
                    }
                    if h.bearer_token_file.is_some() {
                        secret_names.insert("authorization".into());
                    }
                    if h.header_files
                        .keys()
                        .any(|n| n.eq_ignore_ascii_case("authorization"))
                        && h.bearer_token_file.is_some()
                    {
                        return Err(ConfigError::key(
                            key("bearer_token_file"),
                            "header_files already sets Authorization",
                        ));
                    }
                    if let Some(n) = h
                        .headers
                        .keys()
                        .find(|n| secret_names.contains(&n.to_ascii_lowercase()))
                    {
                        return Err(ConfigError::key(
                            key("headers"),
                            format!("{n} is also set from a file"),
                        ));
                    }
                    if h.timeout.is_zero() {
                        return Err(ConfigError::key(key("timeout"), "must be more than 0s"));
                    }
                    if h.retries > 10 {
                        return Err(ConfigError::key(key("retries"), "must be at most 10"));
                    }
                }
                ActionConfig::Haproxy(h) => {
                    if !plain_word(&h.socket, b"/:[]") {
                        return Err(ConfigError::key(
                            key("socket"),
                            "must be a socket path or host:port of [A-Za-z0-9._/:-]",
                        ));
                    }
                    let map = h.map.to_str().unwrap_or("");
                    if !map.starts_with('/') || !plain_word(map, b"/") {
                        return Err(ConfigError::key(
                            key("map"),
                            "must be an absolute path of [A-Za-z0-9._/-]",
                        ));
                    }
                    if h.map == self.state_file || !paths.insert(&h.map) {
                        return Err(ConfigError::key(
                            key("map"),
                            "another action or the state file uses this path",
                        ));
                    }
                    check_tries(&key, h.timeout, h.retries)?;
                }
                ActionConfig::Caddy(c) => {
                    let url = reqwest::Url::parse(&c.admin_url)
                        .map_err(|e| ConfigError::key(key("admin_url"), e.to_string()))?;
                    if url.scheme() != "http" || url.query().is_some() {
                        return Err(ConfigError::key(
                            key("admin_url"),
                            "must be an http URL without a query",
                        ));
                    }
                    if !plain_word(&c.server, b"") {
                        return Err(ConfigError::key(key("server"), "must be [A-Za-z0-9._-]"));
                    }
                    if !plain_word(&c.route_id, b"") {
                        return Err(ConfigError::key(key("route_id"), "must be [A-Za-z0-9._-]"));
                    }
                    check_tries(&key, c.timeout, c.retries)?;
                }
                ActionConfig::File(f) => {
                    if f.path.as_os_str().is_empty() || f.path.file_name().is_none() {
                        return Err(ConfigError::key(key("path"), "must name a file"));
                    }
                    if f.path == self.state_file || !paths.insert(&f.path) {
                        return Err(ConfigError::key(
                            key("path"),
                            "another action or the state file uses this path",
                        ));
                    }
                    if f.reload_command.iter().any(|a| a.is_empty()) {
                        return Err(ConfigError::key(
                            key("reload_command"),
                            "arguments must not be empty",
                        ));
                    }
                    if f.reload_timeout.is_zero() {
                        return Err(ConfigError::key(
                            key("reload_timeout"),
                            "must be more than 0s",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_tries(
    key: &dyn Fn(&str) -> String,
    timeout: Duration,
    retries: u32,
) -> Result<(), ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::key(key("timeout"), "must be more than 0s"));
    }
    if retries > 10 {
        return Err(ConfigError::key(key("retries"), "must be at most 10"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<FuseConfig, String> {
        let c: FuseConfig = serde_yaml_ng::from_str(y).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid() {
        FuseConfig::default().validate().unwrap();
    }

    #[test]
    fn actions_parse_by_type() {
        let c = parse(
            "mode: enforce\nopen_for: 10s\nactions:\n  - type: file\n    name: nginx\n    path: /tmp/x.map\n    format: nginx_map\n    reload_command: [nginx, -s, reload]\n  - type: http\n    url: http://127.0.0.1:1/{{route}}\n",
        )
        .unwrap();
        assert_eq!(c.mode, FuseMode::Enforce);
        assert_eq!(c.open_for, Duration::from_secs(10));
        assert!(matches!(&c.actions[0], ActionConfig::File(f) if f.format == FileFormat::NginxMap));
        assert!(matches!(&c.actions[1], ActionConfig::Http(h) if h.method == "POST"));
        let c = parse("actions:\n  - type: haproxy\n  - type: caddy\n    server: web\n").unwrap();
        assert!(
            matches!(&c.actions[0], ActionConfig::Haproxy(h) if h.map.ends_with("sloguard-fuses.map"))
        );
        assert!(
            matches!(&c.actions[1], ActionConfig::Caddy(h) if h.server == "web" && h.route_id == "sloguard-fuses")
        );
    }

    #[test]
    fn unknown_action_key_is_an_error() {
        let e = parse("actions:\n  - type: file\n    path: /tmp/x\n    pth: 1\n").unwrap_err();
        assert!(e.contains("pth"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (y, key) in [
            ("max_fused_share: 0\n", "fuse.max_fused_share"),
            ("max_fused_share: 1.5\n", "fuse.max_fused_share"),
            ("open_for: 60s\nmax_open_for: 30s\n", "fuse.max_open_for"),
            ("open_for: 0s\n", "fuse.open_for"),
            (
                "actions:\n  - type: http\n    url: not a url\n",
                "fuse.actions[0].url",
            ),
            (
                "actions:\n  - type: http\n    url: http://x/\n    method: \"B D\"\n",
                "fuse.actions[0].method",
            ),
            ("actions:\n  - type: file\n", "fuse.actions[0].path"),
            (
                "actions:\n  - type: http\n    url: http://x/\n    bearer_token_file: /t\n    headers: {authorization: x}\n",
                "fuse.actions[0].headers",
            ),
            (
                "actions:\n  - type: http\n    url: http://x/\n    header_files: {\"a b\": /t}\n",
                "fuse.actions[0].header_files",
            ),
            (
                "actions:\n  - type: file\n    name: a\n    path: /x\n  - type: file\n    name: b\n    path: /x\n",
                "fuse.actions[1].path",
            ),
            (
                "actions:\n  - type: file\n    path: /a\n  - type: file\n    path: /b\n",
                "fuse.actions[1].name",
            ),
            (
                "actions:\n  - type: haproxy\n    socket: \"/run/a b.sock\"\n",
                "fuse.actions[0].socket",
            ),
            (
                "actions:\n  - type: haproxy\n    map: relative.map\n",
                "fuse.actions[0].map",
            ),
            (
                "actions:\n  - type: haproxy\n    map: \"/etc/a;b.map\"\n",
                "fuse.actions[0].map",
            ),
            (
                "actions:\n  - type: haproxy\n    map: /x\n  - type: file\n    path: /x\n",
                "fuse.actions[1].path",
            ),
            (
                "actions:\n  - type: haproxy\n    retries: 11\n",
                "fuse.actions[0].retries",
            ),
            (
                "actions:\n  - type: caddy\n    admin_url: https://x:2019\n",
                "fuse.actions[0].admin_url",
            ),
            (
                "actions:\n  - type: caddy\n    server: a/b\n",
                "fuse.actions[0].server",
            ),
            (
                "actions:\n  - type: caddy\n    route_id: \"\"\n",
                "fuse.actions[0].route_id",
            ),
            (
                "actions:\n  - type: caddy\n    timeout: 0s\n",
                "fuse.actions[0].timeout",
            ),
        ] {
            let e = parse(y).unwrap_err();
            assert!(e.contains(key), "{y}: {e}");
        }
    }

    #[test]
    fn root_config_names_fuse_keys() {
        let parse = |y: &str| {
            crate::config::Config::from_yaml_with_env(y, Vec::<(String, String)>::new())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse("fuse:\n  mode: enforce\n").unwrap().fuse.mode,
            FuseMode::Enforce
        );
        let e = parse("fuse:\n  max_fused_share: 2\n").unwrap_err();
        assert!(e.contains("fuse.max_fused_share"), "{e}");
        let e = parse("fuse:\n  mode: sometimes\n").unwrap_err();
        assert!(e.contains("fuse.mode"), "{e}");
        let e = parse("fuse:\n  actions:\n    - type: file\n      path: /x\n      bogus: 1\n")
            .unwrap_err();
        assert!(e.contains("fuse.actions") && e.contains("bogus"), "{e}");
    }
}
#[cfg(test)]
mod docs_in_step {
    /// The commented gateway actions in config/sloguard.yaml and
    /// docs/config.md show every key with its default.
    #[test]
    fn commented_gateway_actions_are_the_defaults() {
        for (file, text) in [
            (
                "config/sloguard.yaml",
                include_str!("../../../../config/sloguard.yaml"),
            ),
            ("docs/config.md", include_str!("../../../../docs/config.md")),
        ] {
            let start = text.find("  # actions:\n").expect(file);
            let block: String = text[start..]
                .lines()
                .take_while(|l| l.starts_with("  #"))
                .map(|l| format!("{}\n", &l[4.min(l.len())..]))
                .collect();
            let c: super::FuseConfig =
                serde_yaml_ng::from_str(&block).unwrap_or_else(|e| panic!("{file}: {e}\n{block}"));
            assert_eq!(
                c.actions,
                vec![
                    super::ActionConfig::Haproxy(Default::default()),
                    super::ActionConfig::Caddy(Default::default()),
                ],
                "{file}"
            );
        }
    }

    /// The configuration block of docs/fuse.md is the compiled-in defaults,
    /// written the way they serialise (so it can go into config/sloguard.yaml).
    #[test]
    fn docs_config_block_equals_defaults() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        #[serde(deny_unknown_fields)]
        struct Sections {
            fuse: super::FuseConfig,
            admin: crate::export::admin::AdminConfig,
        }
        let doc = include_str!("../../../../docs/fuse.md");
        let start = doc.find("## Configuration").unwrap();
        let block = &doc[start..];
        let block = &block[block.find("```yaml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(block).unwrap();
        let defaults = Sections {
            fuse: Default::default(),
            admin: Default::default(),
        };
        assert_eq!(
            file,
            serde_yaml_ng::to_value(&defaults).unwrap(),
            "defaults serialise as:\n{}",
            serde_yaml_ng::to_string(&defaults).unwrap()
        );
        let parsed: Sections = serde_yaml_ng::from_str(block).unwrap();
        assert_eq!(parsed, defaults);
    }
}
