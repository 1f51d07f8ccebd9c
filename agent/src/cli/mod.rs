//! The operator commands (`sloguard status|top|fuse|alerts`): a console for
//! the node in the style of `kubectl`/`amtool`/`htop`, over the agent's own
//! endpoints. `main.rs` only parses; each command lives in its own module.
//!
//! Exit codes (docs/cli.md): 0 done; 1 the agent cannot be reached; 2 bad
//! usage or config (also clap's own); 3 the admin API refused the token or
//! no token is configured; 4 the agent rejected the request (unknown route,
//! nothing to release, bad TTL); 5 the agent answered something unexpected.
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

pub mod alerts;
pub mod client;
pub mod fuse;
pub mod status;
pub mod top;

pub use client::{Client, Target};

/// What can go wrong talking to the agent; each is one line for the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("config: {0}")]
    Config(String),
    #[error("cannot reach {url}: {reason}; {hint}")]
    Unreachable {
        url: String,
        reason: String,
        hint: String,
    },
    #[error(
        "{url}: the admin API refused the token (401): use the token the agent reads (admin.token_file in --config, or its token env variable)"
    )]
    Unauthorized { url: String },
    #[error(
        "no admin token: set admin.token_file in the config given with --config (or SLOGUARD_CONFIG), or the {env} env variable"
    )]
    NoToken { env: String },
    #[error("admin token: {0}")]
    Token(String),
    #[error("{url}: the agent refused the request ({code}): {message}")]
    Rejected {
        url: String,
        code: u16,
        message: String,
    },
    #[error("{url}: unexpected answer: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("{0}")]
    Usage(String),
    #[error("terminal: {0}")]
    Terminal(String),
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } => 1,
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Unauthorized { .. } | CliError::NoToken { .. } | CliError::Token(_) => 3,
            CliError::Rejected { .. } => 4,
            CliError::BadResponse { .. } | CliError::Terminal(_) | CliError::Internal(_) => 5,
        }
    }
}

/// Where to find the agent, shared by every operator command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Endpoints {
    /// Metrics listener of the agent (default: metrics.listen from the config).
    #[arg(long, value_name = "URL", env = "SG_METRICS_URL")]
    pub metrics_url: Option<String>,
    /// Admin API of the agent (default: admin.listen from the config).
    #[arg(long, value_name = "URL", env = "SG_ADMIN_URL")]
    pub admin_url: Option<String>,
}

/// The operator subcommands. New ones (snapshots, replay) are further
/// variants here and a module beside the others.
#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// One-screen summary of the node: health, what fires, what is fused,
    /// the worst routes by burn rate (exit 1 when the agent cannot be reached).
    Status(status::StatusArgs),
    /// Live full-screen view of the routes, refreshed every SLO period.
    Top(top::TopArgs),
    /// List fuses, or force one open/closed, or release an override
    /// (admin API, bearer token).
    #[command(subcommand)]
    Fuse(fuse::FuseCommand),
    /// Alerts firing now, per route (admin API, bearer token).
    Alerts(alerts::AlertsArgs),
}

/// Run an operator command against the agent configured by `config` (the
/// agent's own file: same addresses, same token).
pub fn run(cmd: OperatorCommand, config: Option<&Path>) -> ExitCode {
    let result = load_config(config).and_then(|cfg| match cmd {
        OperatorCommand::Status(a) => status::run(cfg, a),
        OperatorCommand::Top(a) => top::run(cfg, a),
        OperatorCommand::Fuse(c) => fuse::run(cfg, c),
        OperatorCommand::Alerts(a) => alerts::run(cfg, a),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sloguard: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    match path {
        Some(p) => Config::load(p).map_err(|e| CliError::Config(format!("{}: {e}", p.display()))),
        None => Config::from_env().map_err(|e| CliError::Config(e.to_string())),
    }
}

/// Output formats, as `kubectl -o`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Wide,
    Json,
    Yaml,
}

/// `value` as JSON or YAML for `-o json|yaml`.
pub fn print_structured<T: serde::Serialize>(value: &T, out: Output) -> Result<(), CliError> {
    let text = match out {
        Output::Yaml => {
            serde_yaml_ng::to_string(value).map_err(|e| CliError::Internal(e.to_string()))?
        }
        _ => {
            let mut s = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::Internal(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    print!("{text}");
    Ok(())
}

/// `s` on one line, control characters dropped, at most `max` chars: what
/// the agent (or anything answering on its port) sends must not reach the
/// terminal as escape sequences.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// A table cell: [`one_line`] cut to `width` columns.
pub fn cell(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        one_line(s, width)
    } else {
        // one_line adds the ellipsis: width - 1 characters plus it.
        one_line(s, width.saturating_sub(1))
    }
}

/// Seconds as `850ms`, `1.2s`, `-`.
pub fn fmt_secs(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{s:.1}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_one_line_and_bounded() {
        assert_eq!(one_line("a\u{1b}[2Jb\nc", 100), "a [2Jb c");
        assert_eq!(cell("/api/items/{id}", 8), "/api/it…");
        assert_eq!(cell("/ok", 8), "/ok");
        assert_eq!(cell("ééééééééé", 4), "ééé…");
        assert_eq!(fmt_secs(Some(0.0123)), "12ms");
        assert_eq!(fmt_secs(Some(1.25)), "1.2s");
        assert_eq!(fmt_secs(None), "-");
    }

    #[test]
    fn every_error_has_its_exit_code() {
        let e = CliError::Unauthorized { url: "u".into() };
        assert_eq!(e.exit_code(), 3);
        assert!(!e.to_string().contains('\n'));
        assert_eq!(
            CliError::Unreachable {
                url: "u".into(),
                reason: "r".into(),
                hint: "h".into()
            }
            .exit_code(),
            1
        );
    }
}
