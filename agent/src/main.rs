//! `sloguard` binary: CLI edge; all logic lives in the library.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sloguard::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "sloguard",
    version,
    about = "eBPF agent: request-level SLOs, alerts and route fusing from kernel tracepoints"
)]
struct Cli {
    /// Config file (YAML). Without it: defaults plus SLOGUARD_* overrides.
    #[arg(long, short = 'c', global = true, env = "SLOGUARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and validate a config file, then exit (0 valid, 2 invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// status, top, fuse, alerts: talk to the agent running on this node.
    #[command(flatten)]
    Operator(sloguard::cli::OperatorCommand),
    /// Request snapshots frozen with L2 and gray rollback alerts: list, get (HAR), diff.
    Snapshots {
        #[command(subcommand)]
        command: sloguard::respond::snapshot::cli::SnapshotsCommand,
    },
    /// Resend the requests of a HAR file to a service and compare with the snapshot.
    Replay(sloguard::respond::snapshot::cli::ReplayArgs),
}

/// Exit code for a config that does not load.
const EXIT_CONFIG: u8 = 2;
/// Exit code for an environment problem at start (privileges, BTF, tracefs, port).
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    sloguard::malloc::tune();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sloguard: {}: {e}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Some(Command::Operator(cmd)) => sloguard::cli::run(cmd, cli.config.as_deref()),
        Some(Command::Snapshots { command }) => {
            sloguard::respond::snapshot::cli::snapshots(command)
        }
        Some(Command::Replay(args)) => sloguard::respond::snapshot::cli::replay(args),
        None => {
            let loaded = match &cli.config {
                Some(p) => Config::load(p),
                None => Config::from_env(),
            };
            let cfg = match loaded {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("sloguard: config: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            sloguard::log::init(&cfg.log);
            match sloguard::runtime::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // One line saying what to do, not a backtrace.
                    tracing::error!("{e}");
                    eprintln!("sloguard: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    }
}
