//! Wire formats: the Alertmanager webhook v4 message (built as Alertmanager's
//! `notify/webhook` and `template.Data` build it) and the postable alerts of
//! Alertmanager's `POST /api/v2/alerts`.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::labels::{Alert, status_str};
use super::model::AlertStatus;

/// Go's zero `time.Time` as JSON: what Alertmanager puts in `endsAt` while an
/// alert fires.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The webhook v4 message. Field order follows Alertmanager's (embedded
/// `template.Data` first); maps serialise sorted, as Go's `encoding/json` does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub receiver: String,
    pub status: String,
    pub alerts: Vec<WebhookAlert>,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl WebhookMessage {
    /// One notification for `alerts` (sloguard sends one alert per message,
    /// i.e. a group per label set, like `group_by: ['...']`).
    pub fn new(receiver: &str, external_url: &str, alerts: &[&Alert]) -> Self {
        let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        // Labels and annotations every alert shares (template.Data's rule).
        let mut common_labels = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
        let mut common_annotations = alerts
            .first()
            .map(|a| a.annotations.clone())
            .unwrap_or_default();
        for a in alerts.iter().skip(1) {
            common_labels.retain(|k, v| a.labels.get(k) == Some(v));
            common_annotations.retain(|k, v| a.annotations.get(k) == Some(v));
        }
        let group_labels = common_labels.clone();
        WebhookMessage {
            // Alertmanager passes the receiver name through regexp.QuoteMeta.
            receiver: quote_meta(receiver),
            status: status_str(status).into(),
            alerts: alerts
                .iter()
                .map(|a| WebhookAlert {
                    status: status_str(a.status).into(),
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: rfc3339(a.starts_at),
                    ends_at: match (a.status, a.ends_at) {
                        (AlertStatus::Resolved, Some(t)) => rfc3339(t),
                        _ => ZERO_TIME.into(),
                    },
                    generator_url: a.generator_url.clone(),
                    fingerprint: a.fingerprint.to_string(),
                })
                .collect(),
            // `{}` is the route key of Alertmanager's root route.
            group_key: format!("{{}}:{}", label_set_string(&group_labels)),
            group_labels,
            common_labels,
            common_annotations,
            external_url: external_url.into(),
            version: "4".into(),
            truncated_alerts: 0,
        }
    }
}

/// One element of the body of `POST /api/v2/alerts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    /// Omitted when empty: the API requires a valid URI if present.
    #[serde(
        rename = "generatorURL",
        skip_serializing_if = "String::is_empty",
        default
    )]
    pub generator_url: String,
}

impl PostableAlert {
    /// A firing alert gets `endsAt = now + valid_for`, as Prometheus sends
    /// it, so Alertmanager resolves it by itself if sloguard stops re-sending.
    pub fn new(a: &Alert, now: SystemTime, valid_for: Duration) -> Self {
        let ends = match (a.status, a.ends_at) {
            (AlertStatus::Resolved, Some(t)) => t,
            _ => now + valid_for,
        };
        PostableAlert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(ends),
            generator_url: a.generator_url.clone(),
        }
    }
}

/// RFC 3339 in UTC as Go's `time.Time` marshals it (RFC3339Nano: fraction
/// with trailing zeros trimmed, none when whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses the UTC RFC 3339 timestamps Alertmanager writes (`Z` or `+00:00`
/// offsets); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let body = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = body.split_once('T')?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.splitn(3, ':');
    let hh: u64 = tp.next()?.parse().ok()?;
    let mm: u64 = tp.next()?.parse().ok()?;
    let ss: u64 = tp.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let days = days_from_civil(y, m, d);
    if days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

// Howard Hinnant's civil-from-days / days-from-civil (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Go's `regexp.QuoteMeta`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `model.LabelSet.String()`: `{a="x", b="y"}`, names sorted, values quoted
/// as Go's `strconv.Quote` does for printable text.
fn label_set_string(ls: &BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in ls.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        s.push('"');
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    s.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::alert::labels::tests::l2_event;
    use serde_json::Value;

    #[test]
    fn rfc3339_like_go() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_767_225_600, 250_000_000);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00.25Z");
        let t = UNIX_EPOCH + Duration::new(951_825_599, 1);
        assert_eq!(rfc3339(t), "2000-02-29T11:59:59.000000001Z");
        for s in [
            "2026-01-01T00:00:00.25Z",
            "2000-02-29T11:59:59.000000001Z",
            "2024-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339(parse_rfc3339(s).unwrap()), s);
        }
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.25+00:00"),
            parse_rfc3339("2026-01-01T00:00:00.25Z")
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "x",
            "2026-01-01T00:00:00.1234567890Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn obj(v: &Value) -> BTreeMap<String, String> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn webhook_v4_shape_firing_then_resolved() {
        let mut ev = l2_event();
        let a = Alert::from_event(&ev, "node-1", "http://sloguard.example/routes");
        let msg = WebhookMessage::new("web.hook", "http://sloguard.example", &[&a]);
        let v: Value = serde_json::from_slice(&serde_json::to_vec(&msg).unwrap()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ];
        want.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "web\\.hook");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["externalURL"], "http://sloguard.example");
        assert_eq!(obj(&v["groupLabels"]), a.labels);
        assert_eq!(obj(&v["commonLabels"]), a.labels);
        assert_eq!(obj(&v["commonAnnotations"]), a.annotations);
        assert_eq!(
            v["groupKey"],
            "{}:{alertname=\"SloguardP99SpikeWith5xxBurst\", http_request_method=\"POST\", \
             http_route=\"/orders/{id}\", node=\"node-1\", service_name=\"checkout\", severity=\"critical\"}"
        );
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        let al = &alerts[0];
        let mut akeys: Vec<&str> = al.as_object().unwrap().keys().map(String::as_str).collect();
        akeys.sort();
        assert_eq!(
            akeys,
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
        assert_eq!(al["status"], "firing");
        assert_eq!(obj(&al["labels"]), a.labels);
        assert_eq!(obj(&al["annotations"]), a.annotations);
        assert_eq!(al["startsAt"], "2026-01-01T00:00:00.25Z");
        assert_eq!(al["endsAt"], ZERO_TIME);
        assert_eq!(al["generatorURL"], "http://sloguard.example/routes");
        let fp = al["fingerprint"].as_str().unwrap();
        assert_eq!(fp.len(), 16);
        assert!(
            fp.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(fp, a.fingerprint.to_string());

        ev.status = AlertStatus::Resolved;
        ev.ends_at = Some(ev.starts_at + Duration::from_secs(90));
        let r = Alert::from_event(&ev, "node-1", "");
        let v: Value = serde_json::to_value(WebhookMessage::new("r", "", &[&r])).unwrap();
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["alerts"][0]["status"], "resolved");
        assert_eq!(v["alerts"][0]["endsAt"], "2026-01-01T00:01:30.25Z");
        assert_eq!(v["alerts"][0]["fingerprint"], fp);
        // Round trip through our own type too.
        let back: WebhookMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back.alerts[0].labels, a.labels);
    }

    #[test]
    fn common_labels_are_the_intersection() {
        let a = Alert::from_event(&l2_event(), "n1", "");
        let mut ev = l2_event();
        ev.status = AlertStatus::Resolved;
        ev.ends_at = Some(ev.starts_at);
        ev.route = crate::request::route::RouteKey::new("checkout", "GET", "/cart");
        let b = Alert::from_event(&ev, "n1", "");
        let m = WebhookMessage::new("x", "", &[&a, &b]);
        assert_eq!(m.status, "firing");
        assert_eq!(m.common_labels.get("service_name").unwrap(), "checkout");
        assert!(!m.common_labels.contains_key("http_route"));
        assert_eq!(m.alerts.len(), 2);
    }

    #[test]
    fn postable_alert_shape() {
        let mut ev = l2_event();
        let a = Alert::from_event(&ev, "node-1", "");
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_610);
        let v =
            serde_json::to_value(PostableAlert::new(&a, now, Duration::from_secs(240))).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["annotations", "endsAt", "labels", "startsAt"]);
        assert_eq!(obj(&v["labels"]), a.labels);
        assert_eq!(obj(&v["annotations"]), a.annotations);
        assert_eq!(v["startsAt"], "2026-01-01T00:00:00.25Z");
        assert_eq!(v["endsAt"], "2026-01-01T00:04:10Z");

        ev.status = AlertStatus::Resolved;
        ev.ends_at = Some(ev.starts_at + Duration::from_secs(5));
        let r = Alert::from_event(&ev, "node-1", "http://x/");
        let v =
            serde_json::to_value(PostableAlert::new(&r, now, Duration::from_secs(240))).unwrap();
        assert_eq!(v["endsAt"], "2026-01-01T00:00:05.25Z");
        assert_eq!(v["generatorURL"], "http://x/");
    }

    #[test]
    fn label_values_are_quoted_like_go() {
        let mut ls = BTreeMap::new();
        ls.insert("a".to_string(), "x\"y\\z\n".to_string());
        assert_eq!(label_set_string(&ls), r#"{a="x\"y\\z\n"}"#);
        assert_eq!(quote_meta("a.b[c]"), r"a\.b\[c\]");
    }
}
