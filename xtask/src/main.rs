//! `cargo xtask`: set-up, build, run, test and bench sloguard with one command each.
//! Each subcommand is one module; add one by adding a variant and a module.
mod bench;
mod bench_kit;
mod bench_memory;
mod bench_overhead;
mod bench_scrape;
mod bench_slowclients;
mod bench_stages;
mod demo;
mod fuzz;
mod image;
mod run;
mod setup;
mod system_benches;
mod test;
mod util;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Set up, build, run, test and bench sloguard"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker,
    /// test peers), only what is missing; mount tracefs.
    Setup {
        /// Only what building and running the agent needs.
        #[arg(long)]
        build_only: bool,
    },
    /// Build the agent (and its eBPF programs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build and start the agent on this host with config/sloguard.yaml.
    Run {
        /// Extra arguments for the agent (after `--`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Set up, then run every unit, property and integration test.
    Test {
        /// Skip the set-up (the machine is known to be ready).
        #[arg(long)]
        no_setup: bool,
        /// Seconds each fuzz target runs (0: no fuzz step).
        #[arg(long, default_value_t = test::FUZZ_SECS)]
        fuzz_secs: u64,
        /// Arguments for the test harnesses (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build the container image from deploy/Dockerfile with docker, podman or
    /// nerdctl (the first whose engine answers); fails when none is available.
    Image {
        /// Use this engine only (docker, podman, nerdctl).
        #[arg(long)]
        engine: Option<String>,
        /// Image tag; default sloguard:<version>, the DaemonSet's image.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Loopback demo: a shop behind nginx turns slow and failing; watch the agent's
    /// L1/L2 alerts, the fuse at the gateway, half-open and recovery (about 2 minutes).
    Demo {
        /// Seconds of healthy traffic before the fault (baseline learning).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(15..=600))]
        healthy_secs: u64,
    },
    /// Build the cargo-fuzz targets (agent/fuzz) with nightly and run each for
    /// a while; prints executions per second, fails on a crash (docs/fuzzing.md).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
        secs: u64,
        /// Only this target (repeatable): http_head, http_chunked, http_stream, http2_frames,
        /// trace_headers, events, config.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Build without optimisation (much faster to compile, fewer
        /// executions per second): what `cargo xtask test`'s short smoke uses.
        #[arg(long)]
        dev: bool,
    },
    /// Run the benchmarks; JSON results go to target/sloguard-bench/.
    Bench {
        /// Run only this part (no criterion): `overhead` (nginx+wrk with and
        /// without the agent), `stages` (what each probe stage costs),
        /// `memory` (agent RSS at 1000 routes × 5 gray
        /// tags), `scrape` (peak RSS under 10 parallel scrapes at 10 000
        /// series), `slowclients` (agent RSS with 5000 half request heads
        /// open) or `latency` (fault onset -> L2 -> fuse).
        #[arg(long)]
        only: Option<String>,
        /// Arguments for criterion (after `--`), e.g. a bench name filter.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    put_cargo_bin_on_path();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup { build_only } => setup::setup(if build_only {
            setup::Scope::Build
        } else {
            setup::Scope::Full
        }),
        Cmd::Build { release } => {
            setup::setup(setup::Scope::Build).and_then(|()| run::build(release).map(drop))
        }
        Cmd::Run { args } => run::run_agent(&args),
        Cmd::Test {
            no_setup,
            fuzz_secs,
            args,
        } => test::test(&test::TestOpts {
            no_setup,
            fuzz_secs,
            harness_args: args,
        }),
        Cmd::Fuzz { secs, targets, dev } => fuzz::fuzz(&fuzz::FuzzOpts { secs, targets, dev }),
        Cmd::Image { engine, tag } => image::image(engine.as_deref(), tag.as_deref()),
        Cmd::Bench { only, args } => bench::bench(only.as_deref(), &args),
        Cmd::Demo { healthy_secs } => demo::demo(demo::DemoOpts { healthy_secs }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// rustup and `cargo install` binaries (bpf-linker) live in `$CARGO_HOME/bin`, which a
/// fresh shell may not have on PATH; the eBPF build finds bpf-linker through PATH.
fn put_cargo_bin_on_path() {
    let Some(bin) = util::cargo_bin_dir() else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_each_subcommand() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["xtask", "run", "--", "--log-level", "debug"]).unwrap();
        match cli.command {
            Cmd::Run { args } => assert_eq!(args, ["--log-level", "debug"]),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["xtask", "test", "--no-setup", "--", "retrans"]).unwrap();
        assert!(matches!(
            cli.command,
            Cmd::Test { no_setup: true, fuzz_secs: test::FUZZ_SECS, ref args } if args == &["retrans"]
        ));
        let cli = Cli::try_parse_from(["xtask", "test", "--fuzz-secs", "0"]).unwrap();
        assert!(matches!(cli.command, Cmd::Test { fuzz_secs: 0, .. }));
        let cli =
            Cli::try_parse_from(["xtask", "fuzz", "--secs", "5", "--target", "config"]).unwrap();
        assert!(
            matches!(cli.command, Cmd::Fuzz { secs: 5, ref targets, dev: false } if targets == &["config"])
        );
        let cli = Cli::try_parse_from(["xtask", "fuzz"]).unwrap();
        assert!(
            matches!(cli.command, Cmd::Fuzz { secs: fuzz::DEFAULT_SECS, ref targets, dev: false } if targets.is_empty())
        );
        let cli = Cli::try_parse_from(["xtask", "fuzz", "--dev"]).unwrap();
        assert!(matches!(cli.command, Cmd::Fuzz { dev: true, .. }));
        assert!(Cli::try_parse_from(["xtask", "fuzz", "--secs", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "build", "--release"]).is_ok());
        assert!(
            Cli::try_parse_from(["xtask", "image", "--engine", "podman", "--tag", "a:b"]).is_ok()
        );
        assert!(Cli::try_parse_from(["xtask", "frobnicate"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "demo", "--healthy-secs", "20"]).unwrap();
        assert!(matches!(cli.command, Cmd::Demo { healthy_secs: 20 }));
        assert!(Cli::try_parse_from(["xtask", "demo", "--healthy-secs", "3"]).is_err());
    }
}
