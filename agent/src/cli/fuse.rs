//! `sloguard fuse list|open|close|release`: the manual channel beside the
//! automatic one, over the admin API. Every change names who and why; the
//! agent writes both into its audit trail.
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use super::{CliError, Client, Endpoints, Output, Target, cell, print_structured};
use crate::config::Config;

#[derive(clap::Subcommand, Debug)]
pub enum FuseCommand {
    /// Every route the fuse controller knows, with state and override.
    List {
        /// table (default), wide, json or yaml.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Force a route's fuse open (the gateway stops sending it traffic).
    Open(ChangeArgs),
    /// Force a route's fuse closed: never fused, whatever the detectors say.
    Close(ChangeArgs),
    /// Drop the operator override; the automatic state machine decides again.
    Release(ReleaseArgs),
}

/// The route a change is about, as `/metrics` labels it.
#[derive(clap::Args, Debug)]
pub struct RouteArgs {
    /// service_name, e.g. `shop`.
    pub service: String,
    /// http_request_method, e.g. `GET`.
    pub method: String,
    /// http_route, e.g. `/api/items/{id}`.
    pub route: String,
    /// Why: written into the agent's audit trail (required).
    #[arg(long)]
    pub reason: String,
    /// Who: defaults to `cli:$SUDO_USER` or `cli:$USER`.
    #[arg(long)]
    pub who: Option<String>,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub route: RouteArgs,
    /// How long the override holds (`10m`, `1h30m`); default fuse.override_ttl.
    #[arg(long)]
    pub ttl: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub route: RouteArgs,
}

/// The admin API's override body.
#[derive(Serialize)]
struct OverrideBody<'a> {
    service: &'a str,
    method: &'a str,
    route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'a str>,
    reason: &'a str,
    who: String,
}

/// `cli:` and who ran it: the sudo caller first (the person, not `root`),
/// else `$USER`, else the numeric uid (containers often set no `USER`).
fn default_who() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|u| !u.is_empty())
        // SAFETY: getuid has no preconditions.
        .unwrap_or_else(|| format!("uid-{}", unsafe { libc::getuid() }));
    format!("cli:{user}")
}

pub fn run(cfg: Config, cmd: FuseCommand) -> Result<ExitCode, CliError> {
    let client = Client::new()?;
    let (r, ttl, path) = match cmd {
        FuseCommand::List { output, endpoints } => {
            let t = Target::new(cfg, endpoints.metrics_url, endpoints.admin_url);
            let v: Value = client.admin_get(&t, "/api/v1/fuses")?;
            match output {
                Output::Json | Output::Yaml => print_structured(&v, output)?,
                o => print!("{}", render_list(&v, o == Output::Wide)),
            }
            return Ok(ExitCode::SUCCESS);
        }
        FuseCommand::Open(a) => (a.route, a.ttl, "/api/v1/fuses/force-open"),
        FuseCommand::Close(a) => (a.route, a.ttl, "/api/v1/fuses/force-closed"),
        FuseCommand::Release(a) => (a.route, None, "/api/v1/fuses/release"),
    };
    if r.reason.trim().is_empty() {
        return Err(CliError::Usage(
            "--reason must say why (it goes into the audit trail)".into(),
        ));
    }
    let t = Target::new(
        cfg,
        r.endpoints.metrics_url.clone(),
        r.endpoints.admin_url.clone(),
    );
    let body = OverrideBody {
        service: &r.service,
        method: &r.method,
        route: &r.route,
        ttl: ttl.as_deref(),
        reason: &r.reason,
        who: r.who.clone().unwrap_or_else(default_who),
    };
    let st: Value = client.admin_post(&t, path, &body)?;
    println!("{}", describe(&st));
    Ok(ExitCode::SUCCESS)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// One fuse status as a line: `shop GET /pay: open (force_open until …, by …: why)`.
pub fn describe(st: &Value) -> String {
    let mut line = format!(
        "{} {} {}: {}",
        cell(s(st, "service"), 64),
        cell(s(st, "method"), 16),
        cell(s(st, "route"), 128),
        cell(s(st, "state"), 16)
    );
    let o = &st["override"];
    if o.is_object() {
        line.push_str(&format!(
            " ({} until {}, by {}: {})",
            cell(s(o, "kind"), 16),
            cell(s(o, "until"), 32),
            cell(s(o, "who"), 64),
            cell(s(o, "why"), 200)
        ));
    }
    line
}

fn render_list(v: &Value, wide: bool) -> String {
    let mut o = format!("mode {}\n", cell(s(v, "mode"), 16));
    o.push_str(&format!(
        "{:<16} {:<6} {:<32} {:<9} {:<12} {}",
        "SERVICE", "METHOD", "ROUTE", "STATE", "OVERRIDE", "UNTIL"
    ));
    if wide {
        o.push_str("  ESCALATION PENDING WHO WHY");
    }
    o.push('\n');
    for f in v["fuses"].as_array().into_iter().flatten() {
        let ov = &f["override"];
        let until = if ov.is_object() {
            s(ov, "until")
        } else {
            s(f, "open_until")
        };
        o.push_str(&format!(
            "{:<16} {:<6} {:<32} {:<9} {:<12} {}",
            cell(s(f, "service"), 16),
            cell(s(f, "method"), 6),
            cell(s(f, "route"), 32),
            cell(s(f, "state"), 9),
            cell(if ov.is_object() { s(ov, "kind") } else { "-" }, 12),
            cell(if until.is_empty() { "-" } else { until }, 32),
        ));
        if wide {
            let pending = f["pending_actions"].as_array().map_or(0, Vec::len);
            o.push_str(&format!(
                "  {} {} {} {}",
                f["escalation"].as_u64().unwrap_or(0),
                pending,
                cell(s(ov, "who"), 32),
                cell(s(ov, "why"), 80)
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
    fn describe_names_the_override_and_strips_escapes() {
        let st = serde_json::json!({
            "service": "shop", "method": "GET", "route": "/pay\u{1b}[2J", "state": "open",
            "override": {"kind": "force_open", "until": "2026-12-07T00:00:00Z", "who": "cli:ann", "why": "INC-1"}
        });
        assert_eq!(
            describe(&st),
            "shop GET /pay [2J: open (force_open until 2026-12-07T00:00:00Z, by cli:ann: INC-1)"
        );
    }
}
