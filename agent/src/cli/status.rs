//! `sloguard status`: the node on one screen, from the status endpoint.
use std::fmt::Write as _;
use std::process::ExitCode;

use super::{CliError, Client, Endpoints, Output, Target, cell, fmt_secs, print_structured};
use crate::config::Config;
use crate::export::status::{RouteStatus, StatusDoc};

/// Routes shown under "worst routes" without `-o wide`.
const WORST: usize = 5;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// table (default), wide (every route, more columns), json or yaml (the
    /// endpoint's whole document).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

pub fn run(cfg: Config, a: StatusArgs) -> Result<ExitCode, CliError> {
    let target = Target::new(cfg, a.endpoints.metrics_url, a.endpoints.admin_url);
    let doc = Client::new()?.status(&target)?;
    match a.output {
        Output::Json | Output::Yaml => print_structured(&doc, a.output)?,
        out => print!("{}", render(&doc, out == Output::Wide)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Routes by worst burn rate, then P99, highest first.
pub fn by_burn(routes: &[RouteStatus]) -> Vec<&RouteStatus> {
    let mut v: Vec<&RouteStatus> = routes.iter().collect();
    v.sort_by(|a, b| {
        b.worst_burn().total_cmp(&a.worst_burn()).then(
            b.p99_seconds
                .unwrap_or(0.0)
                .total_cmp(&a.p99_seconds.unwrap_or(0.0)),
        )
    });
    v
}

fn route_name(r: &RouteStatus) -> String {
    let mut s = format!(
        "{} {} {}",
        cell(&r.service, 24),
        cell(&r.method, 7),
        cell(&r.route, 48)
    );
    if !r.gray_tag.is_empty() {
        let _ = write!(s, " [{}]", cell(&r.gray_tag, 16));
    }
    s
}

fn fuse_word(r: &RouteStatus) -> String {
    match &r.fuse.overridden {
        Some(o) => format!("{} ({})", r.fuse.state, o),
        None => r.fuse.state.clone(),
    }
}

/// The human summary; `wide`: every route and more columns.
pub fn render(doc: &StatusDoc, wide: bool) -> String {
    let a = &doc.agent;
    let mut o = String::new();
    let health = match (a.healthy, a.ready) {
        (true, true) => "healthy",
        (true, false) => "NOT READY (probes not attached)",
        (false, _) => "UNHEALTHY (event pipeline died)",
    };
    let _ = writeln!(
        o,
        "node {}  sloguard {}  {}  fuse mode {}  up {}",
        cell(&doc.node, 40),
        cell(&doc.version, 16),
        health,
        cell(&doc.fuse_mode, 10),
        humantime::format_duration(std::time::Duration::from_secs(a.uptime_seconds as u64)),
    );
    let services: Vec<String> = a
        .routes_per_service
        .iter()
        .map(|(s, n)| format!("{} {n}", cell(s, 24)))
        .collect();
    let _ = writeln!(
        o,
        "probes {}  events {:.0}/s ({} total)  lost {}  route overflow {}  untracked {}",
        a.probes_attached,
        a.events_per_second,
        a.events_total,
        a.events_lost_total,
        a.route_overflow_requests,
        a.slo_untracked_requests,
    );
    let _ = writeln!(
        o,
        "routes {} per service: {}",
        a.routes_per_service.values().sum::<u64>(),
        if services.is_empty() {
            "-".into()
        } else {
            services.join(", ")
        }
    );
    let firing: Vec<&RouteStatus> = doc.routes.iter().filter(|r| !r.alerts.is_empty()).collect();
    let _ = writeln!(o, "\nFIRING ({})", firing.len());
    for r in &firing {
        let _ = writeln!(
            o,
            "  {:<4}  {}  p99 {} (slo {})  5xx {:.1}%  fuse {}  {}",
            r.level(),
            route_name(r),
            fmt_secs(r.p99_seconds),
            fmt_secs(Some(r.target_p99_seconds)),
            r.error_ratio * 100.0,
            fuse_word(r),
            r.alerts.join(","),
        );
    }
    let mut fused: Vec<&RouteStatus> = doc
        .routes
        .iter()
        .filter(|r| {
            r.gray_tag.is_empty() && (r.fuse.state != "closed" || r.fuse.overridden.is_some())
        })
        .collect();
    fused.dedup_by(|a, b| (&a.service, &a.method, &a.route) == (&b.service, &b.method, &b.route));
    let _ = writeln!(o, "\nFUSED ({})", fused.len() + doc.other_fuses.len());
    for r in &fused {
        let _ = writeln!(o, "  {}  {}", route_name(r), fuse_word(r));
    }
    for f in &doc.other_fuses {
        let over = f
            .fuse
            .overridden
            .as_deref()
            .map(|k| format!(" ({k})"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {} {} {}  {}{}  (no traffic judged)",
            cell(&f.service, 24),
            cell(&f.method, 7),
            cell(&f.route, 48),
            cell(&f.fuse.state, 10),
            cell(&over, 20)
        );
    }
    let ranked = by_burn(&doc.routes);
    let shown = if wide {
        ranked.len()
    } else {
        ranked.len().min(WORST)
    };
    let _ = writeln!(
        o,
        "\n{} ({} of {})",
        if wide {
            "ROUTES BY BURN RATE"
        } else {
            "WORST ROUTES BY BURN RATE"
        },
        shown,
        ranked.len()
    );
    let _ = write!(
        o,
        "  {:<16} {:<6} {:<28} {:<16} {:>7} {:>6} {:>7} {:>7} {:>6} {:>6} {:<4} FUSE",
        "SERVICE",
        "METHOD",
        "ROUTE",
        "GRAY",
        "RPS",
        "5XX%",
        "P99",
        "SLO",
        "BURN5M",
        "BURN1H",
        "LVL",
    );
    if wide {
        let _ = write!(o, "  {:>7} {:>7} {:>6}", "P50", "BASE", "BURN6H");
    }
    o.push('\n');
    for r in ranked.into_iter().take(shown) {
        let _ = write!(
            o,
            "  {:<16} {:<6} {:<28} {:<16} {:>7.1} {:>6.2} {:>7} {:>7} {:>6.1} {:>6.1} {:<4} {}",
            cell(&r.service, 16),
            cell(&r.method, 6),
            cell(&r.route, 28),
            cell(
                if r.gray_tag.is_empty() {
                    "-"
                } else {
                    &r.gray_tag
                },
                16
            ),
            r.rate_per_second,
            r.error_ratio * 100.0,
            fmt_secs(r.p99_seconds),
            fmt_secs(Some(r.target_p99_seconds)),
            r.burn_rate.m5,
            r.burn_rate.h1,
            if r.level().is_empty() { "-" } else { r.level() },
            fuse_word(r),
        );
        if wide {
            let _ = write!(
                o,
                "  {:>7} {:>7} {:>6.1}",
                fmt_secs(r.p50_seconds),
                fmt_secs(r.baseline_p99_seconds),
                r.burn_rate.h6
            );
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::status::{AgentStatus, BurnRate, FuseBrief, OtherFuse, STATUS_SCHEMA};

    fn route(name: &str, burn: f64, tag: &str) -> RouteStatus {
        RouteStatus {
            service: "shop".into(),
            method: "GET".into(),
            route: name.into(),
            gray_tag: tag.into(),
            requests: 1,
            rate_per_second: 1.0,
            error_ratio: 0.0,
            p50_seconds: None,
            p99_seconds: Some(0.01),
            target_p99_seconds: 0.25,
            target_error_ratio: 0.005,
            baseline_p99_seconds: None,
            burn_rate: BurnRate {
                m5: burn,
                h1: 0.0,
                h6: 0.0,
            },
            l1: false,
            l2: false,
            gray_rollback: !tag.is_empty(),
            alerts: if tag.is_empty() {
                vec![]
            } else {
                vec!["SloguardGrayRollback".into()]
            },
            fuse: FuseBrief::default(),
        }
    }

    #[test]
    fn summary_shows_firing_fused_and_only_the_worst_five_unless_wide() {
        let mut routes: Vec<RouteStatus> = (0..7)
            .map(|i| route(&format!("/r{i}"), i as f64, ""))
            .collect();
        routes.push(route("/r9", 10.0, "version:canary"));
        let doc = StatusDoc {
            schema: STATUS_SCHEMA.into(),
            node: "n1".into(),
            version: "0".into(),
            generated_at: String::new(),
            period_seconds: 10.0,
            fuse_mode: "enforce".into(),
            agent: AgentStatus {
                healthy: true,
                ready: true,
                ..Default::default()
            },
            routes,
            other_fuses: vec![OtherFuse {
                service: "shop".into(),
                method: "POST".into(),
                route: "/quiet".into(),
                fuse: FuseBrief {
                    state: "open".into(),
                    overridden: Some("force_open".into()),
                },
            }],
        };
        let text = render(&doc, false);
        assert!(
            text.contains("FIRING (1)\n  gray  shop GET /r9 [version:canary]"),
            "{text}"
        );
        assert!(
            text.contains("FUSED (1)\n  shop POST /quiet  open (force_open)  (no traffic judged)"),
            "{text}"
        );
        assert!(
            text.contains("WORST ROUTES BY BURN RATE (5 of 8)"),
            "{text}"
        );
        // Highest burn first (the canary, then /r6 ...); /r2 is sixth, not shown.
        let table = text.split_once("WORST ROUTES").unwrap().1;
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("  shop ")).collect();
        assert_eq!(rows.len(), 5, "{text}");
        assert!(
            rows[0].contains("/r9") && rows[0].contains("version:canary"),
            "{text}"
        );
        assert!(rows[1].contains("/r6") && !table.contains("/r2 "), "{text}");
        let wide = render(&doc, true);
        assert!(
            wide.contains("ROUTES BY BURN RATE (8 of 8)") && wide.contains("/r0 "),
            "{wide}"
        );
    }
}
