//! `sloguard top`: a live full-screen view of the node's routes, like `htop`.
//! A fetch thread reads the status endpoint once per SLO period; the screen
//! is redrawn only when a document arrives or a key changes something, and
//! ratatui sends only the cells that changed, so it stays usable over a slow
//! SSH link. The terminal is restored on every exit path, panics included.
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use super::{CliError, Client, Endpoints, Target};
use crate::config::Config;

pub mod model;
mod view;

use model::{GrayFilter, Model, Outcome, SortKey};

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Initial sort: p99, burn, errors or rate (keys p/b/e/r).
    #[arg(long, value_enum, default_value_t = SortKey::P99)]
    pub sort: SortKey,
    /// Show only services whose name contains this (key `/`).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Show only this gray tag; `stable` for untagged traffic (key `g`).
    #[arg(long)]
    pub gray: Option<String>,
    /// Refresh interval (`5s`); default the agent's SLO period.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// Never poll faster than this, whatever the period: each refresh is a
/// request to the agent and a redraw over the link.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often keys are checked while nothing arrives.
const KEY_POLL: Duration = Duration::from_millis(100);

enum Fetched {
    Doc(Box<crate::export::status::StatusDoc>),
    Failed(String),
}

/// Restores the terminal when dropped (normal exit, `?` errors, unwinding).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(cfg: Config, a: TopArgs) -> Result<ExitCode, CliError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "sloguard top needs a terminal; use `sloguard status` (or -o json) in scripts".into(),
        ));
    }
    let target = Target::new(cfg, a.endpoints.metrics_url, a.endpoints.admin_url);
    // Fail before taking over the screen when the agent is not there.
    let first = Client::new()?.status(&target)?;
    let gray = match a.gray.as_deref() {
        None | Some("") | Some("all") => GrayFilter::All,
        Some("stable") => GrayFilter::Stable,
        Some(t) => GrayFilter::Tag(t.to_string()),
    };
    let mut model = Model::new(a.sort, a.service, gray);
    let every = a
        .interval
        .unwrap_or_else(|| Duration::from_secs_f64(first.period_seconds.max(0.0)))
        .max(MIN_INTERVAL);
    model.apply(first);
    let (tx, rx) = mpsc::channel();
    spawn_fetcher(target, every, tx)?;

    // ratatui::try_init: raw mode, alternate screen, and a panic hook that
    // restores the terminal before the panic message is printed.
    let mut term = ratatui::try_init().map_err(|e| CliError::Terminal(e.to_string()))?;
    let _restore = Restore;
    let mut dirty = true;
    loop {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Fetched::Doc(d) => model.apply(*d),
                Fetched::Failed(e) => model.fetch_failed(e),
            }
            dirty = true;
        }
        if dirty {
            term.draw(|f| view::draw(f, &model))
                .map_err(|e| CliError::Terminal(e.to_string()))?;
            dirty = false;
        }
        if event::poll(KEY_POLL).map_err(|e| CliError::Terminal(e.to_string()))? {
            match event::read().map_err(|e| CliError::Terminal(e.to_string()))? {
                Event::Key(k) if k.kind == KeyEventKind::Press => match model.key(k) {
                    Outcome::Quit => break,
                    Outcome::Changed => dirty = true,
                    Outcome::Nothing => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches every `every` until the receiver is gone (top exited).
fn spawn_fetcher(
    target: Target,
    every: Duration,
    tx: mpsc::Sender<Fetched>,
) -> Result<(), CliError> {
    let client = Client::new()?;
    std::thread::Builder::new()
        .name("sloguard-top-fetch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let msg = match client.status(&target) {
                    Ok(d) => Fetched::Doc(Box::new(d)),
                    Err(e) => Fetched::Failed(e.to_string()),
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| CliError::Internal(format!("fetch thread: {e}")))?;
    Ok(())
}
