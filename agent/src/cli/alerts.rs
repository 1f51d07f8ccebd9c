//! `sloguard alerts`: what fires now on this node, per route, from the admin
//! API (the agent's live verdicts, not what a receiver has been sent).
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use super::{CliError, Client, Endpoints, Output, Target, cell, fmt_secs, print_structured};
use crate::config::Config;
use crate::respond::alert::model::AlertKind;

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    /// table (default), wide, json or yaml.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// One firing alert (`-o json|yaml` prints a list of these).
#[derive(Debug, PartialEq, Serialize)]
pub struct Firing {
    pub alertname: String,
    pub severity: &'static str,
    pub service: String,
    pub method: String,
    pub route: String,
    pub gray_tag: String,
    pub p99_seconds: Option<f64>,
    pub baseline_p99_seconds: Option<f64>,
    pub error_ratio: f64,
    pub requests: u64,
    pub fuse: String,
}

fn severity(alertname: &str) -> &'static str {
    [
        AlertKind::P99Breach,
        AlertKind::P99SpikeWith5xxBurst,
        AlertKind::GrayRollback,
        AlertKind::FuseStateReset,
    ]
    .into_iter()
    .find(|k| k.alertname() == alertname)
    .map_or("unknown", AlertKind::severity)
}

/// The firing alerts in `GET /api/v1/routes`, critical first.
pub fn firing(routes: &Value) -> Vec<Firing> {
    let str_of = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = Vec::new();
    for r in routes["routes"].as_array().into_iter().flatten() {
        for name in r["alerting"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or("").to_string();
            out.push(Firing {
                severity: severity(&name),
                alertname: name,
                service: str_of(r, "service"),
                method: str_of(r, "method"),
                route: str_of(r, "route"),
                gray_tag: str_of(r, "gray_tag"),
                p99_seconds: r["p99_seconds"].as_f64(),
                baseline_p99_seconds: r["baseline_p99_seconds"].as_f64(),
                error_ratio: r["error_ratio"].as_f64().unwrap_or(0.0),
                requests: r["requests"].as_u64().unwrap_or(0),
                fuse: str_of(&r["fuse"], "state"),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.severity != "critical", &a.service, &a.route).cmp(&(
            b.severity != "critical",
            &b.service,
            &b.route,
        ))
    });
    out
}

pub fn run(cfg: Config, a: AlertsArgs) -> Result<ExitCode, CliError> {
    let t = Target::new(cfg, a.endpoints.metrics_url, a.endpoints.admin_url);
    let v: Value = Client::new()?.admin_get(&t, "/api/v1/routes")?;
    let list = firing(&v);
    match a.output {
        Output::Json | Output::Yaml => print_structured(&list, a.output)?,
        o => print!("{}", render(&list, o == Output::Wide)),
    }
    Ok(ExitCode::SUCCESS)
}

fn render(list: &[Firing], wide: bool) -> String {
    if list.is_empty() {
        return "no alerts firing\n".into();
    }
    let mut o = format!(
        "{:<28} {:<8} {:<16} {:<6} {:<28} {:<8} {:>7} {:>6} {}",
        "ALERTNAME", "SEVERITY", "SERVICE", "METHOD", "ROUTE", "GRAY", "P99", "5XX%", "FUSE"
    );
    if wide {
        o.push_str(&format!("  {:>7} {:>8}", "BASE", "REQUESTS"));
    }
    o.push('\n');
    for f in list {
        o.push_str(&format!(
            "{:<28} {:<8} {:<16} {:<6} {:<28} {:<8} {:>7} {:>6.2} {}",
            cell(&f.alertname, 28),
            f.severity,
            cell(&f.service, 16),
            cell(&f.method, 6),
            cell(&f.route, 28),
            cell(
                if f.gray_tag.is_empty() {
                    "-"
                } else {
                    &f.gray_tag
                },
                8
            ),
            fmt_secs(f.p99_seconds),
            f.error_ratio * 100.0,
            cell(if f.fuse.is_empty() { "closed" } else { &f.fuse }, 12),
        ));
        if wide {
            o.push_str(&format!(
                "  {:>7} {:>8}",
                fmt_secs(f.baseline_p99_seconds),
                f.requests
            ));
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_lists_each_alert_of_each_route_critical_first() {
        let v = serde_json::json!({"mode": "enforce", "routes": [
            {"service": "a", "method": "GET", "route": "/x", "gray_tag": "", "requests": 9,
             "p99_seconds": 0.3, "error_ratio": 0.5, "alerting": ["SloguardP99Breach", "SloguardP99SpikeWith5xxBurst"],
             "fuse": {"state": "open"}},
            {"service": "a", "method": "GET", "route": "/y", "alerting": [], "fuse": {"state": "closed"}},
            {"service": "b", "method": "GET", "route": "/z", "fuse": {"state": "closed"}}
        ]});
        let f = firing(&v);
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].alertname.as_str(), f[0].severity),
            ("SloguardP99SpikeWith5xxBurst", "critical")
        );
        assert_eq!(
            (f[1].alertname.as_str(), f[1].severity),
            ("SloguardP99Breach", "warning")
        );
        assert_eq!(f[0].fuse, "open");
        assert!(render(&f, true).contains("/x"));
        assert_eq!(render(&[], false), "no alerts firing\n");
    }
}
