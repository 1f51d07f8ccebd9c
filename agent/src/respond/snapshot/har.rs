//! HAR 1.2 (the HTTP Archive format of browsers' dev tools, proxies and
//! load-test converters) for frozen snapshot sets, and back. Each entry keeps
//! the whole snapshot under `_sloguard` (HAR allows `_`-prefixed custom
//! fields), so a HAR written here reads back exactly; a HAR from elsewhere
//! reads back from its standard fields.
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Class, FrozenSet, NEVER_CAPTURED, Snapshot};
use crate::respond::alert::payload::{parse_rfc3339, rfc3339};

#[derive(Debug, thiserror::Error)]
pub enum HarError {
    #[error("not a HAR file: {0}")]
    NotHar(String),
    #[error("HAR is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which of a frozen set's halves an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Failed,
    Healthy,
    All,
}

impl Which {
    fn includes(self, failed_set: bool) -> bool {
        match self {
            Which::All => true,
            Which::Failed => failed_set,
            Which::Healthy => !failed_set,
        }
    }
}

/// The frozen set as a HAR 1.2 document.
pub fn to_har(set: &FrozenSet, which: Which) -> Value {
    let entries: Vec<Value> = set
        .failed
        .iter()
        .map(|s| (true, s))
        .chain(set.healthy.iter().map(|s| (false, s)))
        .filter(|(f, _)| which.includes(*f))
        .map(|(f, s)| entry(s, f))
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "sloguard", "version": env!("CARGO_PKG_VERSION") },
            "entries": entries,
            "comment": format!(
                "request snapshots {} frozen by {} on {} {} {}",
                set.id, set.alertname, set.service, set.method, set.route
            ),
            "_sloguard": set.summary(),
        }
    })
}

fn entry(s: &Snapshot, failed_set: bool) -> Value {
    let ms = s.duration_ns as f64 / 1e6;
    let host = s
        .server
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let url = if s.target.starts_with("http://") || s.target.starts_with("https://") {
        s.target.clone()
    } else if s.target.starts_with('/') {
        format!("http://{host}{}", s.target)
    } else {
        format!("http://{host}/{}", s.target)
    };
    let query: Vec<Value> = s
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            json!({ "name": k, "value": v })
        })
        .collect();
    let headers: Vec<Value> = s
        .headers
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let mut e = json!({
        "startedDateTime": rfc3339(s.time),
        "time": ms,
        "request": {
            "method": s.method,
            "url": url,
            "httpVersion": s.http_version,
            "cookies": [],
            "headers": headers,
            "queryString": query,
            "headersSize": -1,
            "bodySize": -1,
        },
        "response": {
            "status": s.status,
            "statusText": "",
            "httpVersion": s.http_version,
            "cookies": [],
            "headers": [],
            // Bodies are never captured: sizes are in `_sloguard`.
            "content": { "size": 0, "mimeType": "", "comment": "body not captured" },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": { "send": 0, "wait": ms, "receive": 0 },
        "comment": s.class.as_str(),
        "_sloguard": {
            "set": if failed_set { "failed" } else { "healthy" },
            "snapshot": s,
        },
    });
    if let Some(a) = s.server {
        e["serverIPAddress"] = json!(a.ip().to_string());
    }
    if let Some(c) = s.client {
        e["connection"] = json!(c.to_string());
    }
    e
}

/// Entries of a HAR document: `(in the failed set, snapshot)`. Entries
/// written by sloguard come back whole; others from their standard fields,
/// a 5xx or missing response counting as failed. Credential headers of a
/// foreign HAR are dropped here, so they are never replayed or shown.
pub fn from_har(doc: &Value) -> Result<Vec<(bool, Snapshot)>, HarError> {
    let entries = doc["log"]["entries"]
        .as_array()
        .ok_or_else(|| HarError::NotHar("no log.entries array".into()))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if let Some(x) = e.get("_sloguard")
                && let Ok(s) = serde_json::from_value::<Snapshot>(x["snapshot"].clone())
            {
                return Ok((x["set"] != "healthy", s));
            }
            foreign(e)
                .ok_or_else(|| HarError::NotHar(format!("entry {i}: no request method and url")))
        })
        .collect()
}

/// Reads a HAR file.
pub fn read_file(path: &std::path::Path) -> Result<Vec<(bool, Snapshot)>, HarError> {
    let text = std::fs::read_to_string(path).map_err(|source| HarError::Read {
        path: path.display().to_string(),
        source,
    })?;
    from_har(&serde_json::from_str(&text)?)
}

fn foreign(e: &Value) -> Option<(bool, Snapshot)> {
    let req = &e["request"];
    let method = req["method"].as_str()?.to_string();
    let url = reqwest::Url::parse(req["url"].as_str()?).ok()?;
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target = format!("{target}?{q}");
    }
    let status = e["response"]["status"].as_u64().unwrap_or(0) as u16;
    let failed = status == 0 || status >= 500;
    let headers = req["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            Some((
                h["name"].as_str()?.to_ascii_lowercase(),
                h["value"].as_str()?.to_string(),
            ))
        })
        .filter(|(k, _)| !NEVER_CAPTURED.contains(&k.as_str()) && !k.starts_with(':'))
        .collect::<Vec<_>>();
    let gray_tag = headers
        .iter()
        .find(|(k, _)| k == "x-gray-tag")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let server = e["serverIPAddress"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .map(|ip| std::net::SocketAddr::new(ip, url.port_or_known_default().unwrap_or(80)));
    let time = e["startedDateTime"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let ms = e["time"].as_f64().unwrap_or(0.0).max(0.0);
    Some((
        failed,
        Snapshot {
            time,
            class: if failed {
                Class::Failed
            } else {
                Class::Healthy
            },
            service: String::new(),
            route: url.path().to_string(),
            method,
            target,
            http_version: req["httpVersion"]
                .as_str()
                .unwrap_or("HTTP/1.1")
                .to_string(),
            request_id: headers
                .iter()
                .find(|(k, _)| k == "x-request-id")
                .map(|(_, v)| v.clone()),
            headers,
            header_names: Vec::new(),
            cohort: gray_tag.clone(),
            gray_tag,
            trace_id: String::new(),
            span_id: String::new(),
            status,
            duration_ns: Duration::from_secs_f64(ms / 1e3).as_nanos() as u64,
            request_bytes: 0,
            response_bytes: 0,
            client: None,
            server,
            tcp_retransmits: 0,
            tcp_connect_ns: None,
        },
    ))
}
