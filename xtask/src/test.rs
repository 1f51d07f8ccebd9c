//! `cargo xtask test`: set-up, then unit and property tests, then the integration tests
//! on the real kernel, one at a time. Every step runs even after a failure, so one run
//! shows everything that is broken; the exit code is non-zero if anything failed.
use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::setup::{self, Scope};
use crate::util::{self, fmt_duration, run_timed};

/// Env var naming the agent binary the integration tests start.
pub const AGENT_BIN_ENV: &str = "SG_AGENT_BIN";

/// Seconds each fuzz target runs in `cargo xtask test` (CI): long enough to
/// shake out shallow bugs, short enough for six targets in about a minute.
pub const FUZZ_SECS: u64 = 10;

pub struct TestOpts {
    /// Skip `setup` (for quick reruns on a machine already set up).
    pub no_setup: bool,
    /// Seconds per fuzz target; 0 skips the fuzz step.
    pub fuzz_secs: u64,
    /// Passed to every test harness after `--` (e.g. a test name filter).
    pub harness_args: Vec<OsString>,
}

/// The packages every step selects. One set for every cargo call, so that cargo resolves
/// the same features each time and builds the agent (and its eBPF object) only once.
const PACKAGES: &[&str] = &[
    "-p",
    "agent-common",
    "-p",
    "agent",
    "-p",
    "xtask",
    "-p",
    "tests",
    "-p",
    "testbed",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    /// An earlier step it depends on failed.
    NotRun,
    /// Nothing to run (no integration test targets yet).
    Empty,
}

/// One step's outcome for the summary.
pub struct StepResult {
    pub name: &'static str,
    pub verdict: Verdict,
    pub took: Duration,
}

impl StepResult {
    fn failed(&self) -> bool {
        matches!(self.verdict, Verdict::Failed | Verdict::NotRun)
    }
}

pub fn test(opts: &TestOpts) -> Result<()> {
    let start = Instant::now();
    if !opts.no_setup {
        setup::setup(Scope::Full)?;
    }
    // Passed through to the tests by inheritance: with CI=true a missing kernel capability
    // fails a test instead of skipping it.
    match std::env::var("CI") {
        Ok(v) => println!("test: CI={v}"),
        Err(_) => println!("test: CI unset: tests skip (with the reason) what this kernel lacks"),
    }
    let harness = |cmd: &mut Command, extra: &[&str]| {
        cmd.arg("--").args(extra).args(&opts.harness_args);
    };

    // The sloguard binary for the integration tests (the `tests` crate cannot name another
    // package's binary) is built here with the test build's features, so nothing rebuilds.
    let mut build = cargo_with_packages("build");
    build.args(["--bins", "--tests"]);
    let built = step("build: tests and the sloguard binary", &mut [build])?;
    let build_ok = built.verdict == Verdict::Passed;
    let mut results = vec![built];

    let mut unit = cargo_with_packages("test");
    unit.args(["--no-fail-fast", "--lib", "--bins"]);
    harness(&mut unit, &[]);
    let mut doc = cargo_with_packages("test");
    doc.arg("--doc");
    harness(&mut doc, &[]);
    let name = "unit and property tests (agent-common, agent, xtask, tests, testbed)";
    results.push(if build_ok {
        step(name, &mut [unit, doc])?
    } else {
        not_run(name)
    });

    let name = "integration tests on the real kernel, one at a time";
    let targets = integration_test_targets()?;
    results.push(if !build_ok {
        not_run(name)
    } else if targets.is_empty() {
        println!("\n== {name}\ntest: no integration test targets yet");
        StepResult {
            name,
            verdict: Verdict::Empty,
            took: Duration::ZERO,
        }
    } else {
        println!("test: integration test targets: {}", targets.join(" "));
        let mut integration = cargo_with_packages("test");
        integration
            .args(["--no-fail-fast", "--test", "*"])
            .env(AGENT_BIN_ENV, util::target_dir().join("debug/sloguard"));
        harness(&mut integration, &["--test-threads=1"]);
        step(name, &mut [integration])?
    });

    if opts.fuzz_secs > 0 {
        results.push(fuzz_step(opts.fuzz_secs));
    }

    print!("{}", summary(&results, start.elapsed()));
    let failed = results.iter().filter(|r| r.failed()).count();
    if failed > 0 {
        bail!("{failed} test step(s) failed");
    }
    Ok(())
}

fn cargo_with_packages(subcommand: &str) -> Command {
    let mut cmd = util::cargo();
    cmd.arg(subcommand).args(PACKAGES);
    cmd
}

/// Runs every command of a step, even after one fails; the step passes if all pass.
fn step(name: &'static str, cmds: &mut [Command]) -> Result<StepResult> {
    println!("\n== {name}");
    let mut passed = true;
    let mut took = Duration::ZERO;
    for cmd in cmds {
        let (ok, t) = run_timed(cmd)?;
        passed &= ok;
        took += t;
    }
    let verdict = if passed {
        Verdict::Passed
    } else {
        Verdict::Failed
    };
    Ok(StepResult {
        name,
        verdict,
        took,
    })
}

/// Every fuzz target for `secs` seconds (its own nightly build; see
/// docs/fuzzing.md). A crash fails the step; the input stays in
/// `agent/fuzz/artifacts/<target>/`.
fn fuzz_step(secs: u64) -> StepResult {
    let name = "fuzz targets (cargo-fuzz, a few seconds each)";
    println!("\n== {name}");
    let start = Instant::now();
    let opts = crate::fuzz::FuzzOpts {
        secs,
        targets: Vec::new(),
        // The release build: an unoptimised one compiles in about half the
        // CPU time but ran 3-30 inputs a second on `events` and `config`,
        // too few to get through their corpora in a smoke run.
        dev: false,
    };
    let passed = match crate::fuzz::run_targets(&opts) {
        Ok(runs) => {
            print!("{}", crate::fuzz::table(&runs));
            runs.iter().all(|r| r.ok)
        }
        Err(e) => {
            println!("test: fuzz step failed: {e:#}");
            false
        }
    };
    StepResult {
        name,
        verdict: if passed {
            Verdict::Passed
        } else {
            Verdict::Failed
        },
        took: start.elapsed(),
    }
}

fn not_run(name: &'static str) -> StepResult {
    println!("\n== {name}\ntest: not run: the build failed");
    StepResult {
        name,
        verdict: Verdict::NotRun,
        took: Duration::ZERO,
    }
}

/// Integration test targets (`kind: ["test"]`) of the selected packages.
fn integration_test_targets() -> Result<Vec<String>> {
    let mut cmd = util::cargo();
    cmd.args(["metadata", "--no-deps", "--format-version", "1"]);
    let json = util::stdout_of(&mut cmd)?;
    let selected: Vec<&str> = PACKAGES.iter().copied().filter(|p| *p != "-p").collect();
    test_targets_in(&json, &selected)
}

pub fn test_targets_in(metadata_json: &str, packages: &[&str]) -> Result<Vec<String>> {
    let meta: serde_json::Value =
        serde_json::from_str(metadata_json).context("parsing `cargo metadata` output")?;
    let mut targets = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        if !pkg["name"].as_str().is_some_and(|n| packages.contains(&n)) {
            continue;
        }
        for t in pkg["targets"].as_array().into_iter().flatten() {
            let is_test = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if let (true, Some(name)) = (is_test, t["name"].as_str()) {
                targets.push(name.to_string());
            }
        }
    }
    Ok(targets)
}

/// The table printed at the end of a test run.
pub fn summary(results: &[StepResult], total: Duration) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::from("\n== sloguard test summary\n");
    for r in results {
        let verdict = match r.verdict {
            Verdict::Passed => "ok",
            Verdict::Failed => "FAILED",
            Verdict::NotRun => "NOT RUN",
            Verdict::Empty => "none",
        };
        out += &format!(
            "  {:width$}  {verdict:7}  {:>8}\n",
            r.name,
            fmt_duration(r.took)
        );
    }
    let failed = results.iter().filter(|r| r.failed()).count();
    let verdict = if failed == 0 {
        "all passed".to_string()
    } else {
        format!("{failed} of {} failed", results.len())
    };
    out += &format!("total {}: {verdict}\n", fmt_duration(total));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_each_failed_step() {
        let step = |name, verdict, secs| StepResult {
            name,
            verdict,
            took: Duration::from_millis(secs),
        };
        let results = [
            step("build", Verdict::Passed, 1500),
            step("unit", Verdict::Failed, 75_000),
            step("integration", Verdict::NotRun, 0),
        ];
        let s = summary(&results, Duration::from_secs(80));
        assert!(s.contains("  build        ok          1.5 s\n"), "{s}");
        assert!(s.contains("  unit         FAILED      1m15s\n"), "{s}");
        assert!(s.contains("  integration  NOT RUN     0.0 s\n"), "{s}");
        assert!(s.ends_with("total 1m20s: 2 of 3 failed\n"), "{s}");
        let ok = summary(
            &[
                step("build", Verdict::Passed, 2000),
                step("integration", Verdict::Empty, 0),
            ],
            Duration::from_secs(2),
        );
        assert!(ok.ends_with("total 2.0 s: all passed\n"), "{ok}");
    }

    #[test]
    fn integration_targets_come_from_selected_packages_only() {
        let meta = r#"{"packages": [
            {"name": "agent", "targets": [
                {"name": "sloguard", "kind": ["lib"]},
                {"name": "sloguard", "kind": ["bin"]},
                {"name": "decode", "kind": ["bench"]}]},
            {"name": "tests", "targets": [
                {"name": "tests", "kind": ["lib"]},
                {"name": "retransmits", "kind": ["test"]},
                {"name": "config_errors", "kind": ["test"]}]},
            {"name": "agent-ebpf", "targets": [{"name": "probe", "kind": ["test"]}]}
        ]}"#;
        let t = test_targets_in(meta, &["agent", "tests"]).unwrap();
        assert_eq!(t, ["retransmits", "config_errors"]);
        assert!(test_targets_in(meta, &["agent"]).unwrap().is_empty());
        assert!(test_targets_in("not json", &["agent"]).is_err());
    }
}
