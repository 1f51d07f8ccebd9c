//! `sloguard snapshots list|get|diff` and `sloguard replay`: the operator's
//! side of request snapshots. They talk to the admin API (same token) or
//! read HAR files; exit 0 on success, 1 when a replay still sees failures,
//! 2 on bad input or an unreachable API.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use super::Snapshot;
use super::har::{self, Which};

#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(long, default_value = "http://127.0.0.1:9465")]
    pub admin: String,
    /// File holding the admin token (else the SLOGUARD_ADMIN_TOKEN variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotsCommand {
    /// List the frozen snapshot sets (newest last).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print (or write) a frozen set as HAR 1.2.
    Get {
        /// Snapshot id, as in the alert's `snapshot_id` annotation.
        id: String,
        /// Which requests: failed (and slow), healthy, or all.
        #[arg(long, value_enum, default_value = "all")]
        set: Which,
        /// Write the HAR here instead of standard output.
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rank what separates the failed requests from the healthy ones.
    Diff {
        /// Snapshot id (read from the admin API).
        id: Option<String>,
        /// A HAR file holding both sets (as `snapshots get` writes it).
        #[arg(long, conflicts_with_all = ["id", "failed"])]
        har: Option<PathBuf>,
        /// Two HAR files: the failed requests ...
        #[arg(long, requires = "healthy", conflicts_with = "id")]
        failed: Option<PathBuf>,
        /// ... and the healthy ones.
        #[arg(long, requires = "failed")]
        healthy: Option<PathBuf>,
        /// Factors shown.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// HAR file (e.g. from `sloguard snapshots get ID -o FILE`).
    #[arg(long)]
    pub har: PathBuf,
    /// Where to send the requests (scheme://host:port); paths come from the HAR.
    #[arg(long)]
    pub target: String,
    /// Which requests of a sloguard HAR: failed (and slow), healthy, or all.
    #[arg(long, value_enum, default_value = "failed")]
    pub set: Which,
    /// Requests sent at most.
    #[arg(long, default_value_t = 100)]
    pub max_requests: usize,
    /// Stop sending after this long (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_time: Duration,
    /// Requests per second at most (one at a time).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Timeout of each request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Also resend methods that are not safe (POST, PUT, DELETE, ...).
    #[arg(long)]
    pub allow_unsafe: bool,
    /// JSON report (per request) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn token(a: &AdminArgs) -> anyhow::Result<String> {
    if let Some(p) = &a.token_file {
        let t =
            std::fs::read_to_string(p).with_context(|| format!("--token-file {}", p.display()))?;
        return Ok(t.lines().next().unwrap_or("").trim().to_string());
    }
    std::env::var(crate::export::admin::DEFAULT_TOKEN_ENV)
        .map(|t| t.trim().to_string())
        .with_context(|| {
            format!(
                "no admin token: pass --token-file or set {}",
                crate::export::admin::DEFAULT_TOKEN_ENV
            )
        })
}

/// `GET {admin}{path}` with the bearer token; the body as JSON.
fn admin_get(a: &AdminArgs, path: &str) -> anyhow::Result<serde_json::Value> {
    let token = token(a)?;
    let url = format!("{}{path}", a.admin.trim_end_matches('/'));
    runtime()?.block_on(async {
        let resp = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("admin API {url}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .with_context(|| format!("admin API {url}: not JSON"))?;
        if !status.is_success() {
            bail!(
                "admin API {url}: {status}: {}",
                body["error"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    })
}

/// Ids come from alerts and operators: keep them to what ids are made of.
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        bail!("snapshot id {id:?}: expected something like snap-1765060000-3");
    }
    Ok(())
}

fn pick(entries: Vec<(bool, Snapshot)>, which: Which) -> Vec<Snapshot> {
    entries
        .into_iter()
        .filter(|(failed, _)| match which {
            Which::All => true,
            Which::Failed => *failed,
            Which::Healthy => !*failed,
        })
        .map(|(_, s)| s)
        .collect()
}

pub fn snapshots(cmd: SnapshotsCommand) -> ExitCode {
    match snapshots_inner(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sloguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn snapshots_inner(cmd: SnapshotsCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotsCommand::List { admin } => {
            let v = admin_get(&admin, "/api/v1/snapshots")?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        SnapshotsCommand::Get {
            id,
            set,
            out,
            admin,
        } => {
            check_id(&id)?;
            let set = match set {
                Which::All => "all",
                Which::Failed => "failed",
                Which::Healthy => "healthy",
            };
            let v = admin_get(&admin, &format!("/api/v1/snapshots/{id}?set={set}"))?;
            let text = serde_json::to_string_pretty(&v)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?
                }
                None => println!("{text}"),
            }
        }
        SnapshotsCommand::Diff {
            id,
            har,
            failed,
            healthy,
            top,
            json,
            admin,
        } => {
            let (f, h) = if let (Some(f), Some(h)) = (failed, healthy) {
                (
                    pick(har::read_file(&f)?, Which::All),
                    pick(har::read_file(&h)?, Which::All),
                )
            } else {
                let entries = match (har, id) {
                    (Some(p), _) => har::read_file(&p)?,
                    (None, Some(id)) => {
                        check_id(&id)?;
                        har::from_har(&admin_get(
                            &admin,
                            &format!("/api/v1/snapshots/{id}?set=all"),
                        )?)?
                    }
                    (None, None) => {
                        bail!("give a snapshot id, --har FILE, or --failed FILE --healthy FILE")
                    }
                };
                let (f, h): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(failed, _)| *failed);
                (
                    f.into_iter().map(|x| x.1).collect(),
                    h.into_iter().map(|x| x.1).collect(),
                )
            };
            let d = super::diff::diff(&f, &h);
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", d.render(top));
            }
        }
    }
    Ok(())
}

pub fn replay(args: ReplayArgs) -> ExitCode {
    match replay_inner(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sloguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn replay_inner(a: ReplayArgs) -> anyhow::Result<bool> {
    let snaps = pick(har::read_file(&a.har)?, a.set);
    let target = reqwest::Url::parse(&a.target)
        .map_err(|e| anyhow::anyhow!("--target {}: {e}", a.target))?;
    let opts = super::replay::ReplayOptions {
        target,
        max_requests: a.max_requests,
        max_time: a.max_time,
        rate: a.rate,
        timeout: a.timeout,
        allow_unsafe: a.allow_unsafe,
    };
    let report = runtime()?.block_on(super::replay::replay(&snaps, &opts))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in &report.results {
            let now = match (r.now_status, &r.error) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => format!(
                    "error: {}",
                    super::diff::printable(crate::request::redact::cap(e, 120))
                ),
                (None, None) => "-".into(),
            };
            println!(
                "{} {}  before {} {:.0} ms  now {} {:.0} ms",
                super::diff::printable(&r.method),
                super::diff::printable(crate::request::redact::cap(&r.target, 100)),
                r.before_status,
                r.before_ms,
                now,
                r.now_ms
            );
        }
        println!("{}", report.summary());
    }
    Ok(report.recovered())
}
