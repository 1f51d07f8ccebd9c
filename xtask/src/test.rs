//! `cargo xtask test`: set-up, then unit and property tests, then the integration tests
//! on the real kernel, one at a time. Every step runs even after a failure, so one run
//! shows everything that is broken; the exit code is non-zero if anything failed.
use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::setup::{self, Scope};
use crate::util::{self, fmt_duration, run_timed};

/// Env var naming the agent binary the integration tests start.
pub const SLOGUARD_BIN_ENV: &str = "SLOGUARD_BIN";

pub struct TestOpts {
    /// Skip `setup` (for quick reruns on a machine already set up).
    pub no_setup: bool,
    /// Passed to every test harness after `--` (e.g. a test name filter).
    pub harness_args: Vec<OsString>,
}

/// One step's outcome for the summary.
pub struct StepResult {
    pub name: &'static str,
    pub passed: bool,
    pub took: Duration,
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

    let mut results = Vec::new();
    let mut unit = util::cargo();
    unit.args(["test", "-p", "agent-common", "-p", "agent", "-p", "xtask"]);
    if !opts.harness_args.is_empty() {
        unit.arg("--").args(&opts.harness_args);
    }
    results.push(step(
        "unit and property tests (agent-common, agent, xtask)",
        &mut unit,
    )?);

    // The `tests` crate cannot name another package's binary: hand it over by env.
    let mut bin_build = util::cargo();
    bin_build.args(["build", "-p", "agent", "--bin", "sloguard"]);
    let bin_result = step("sloguard binary for the integration tests", &mut bin_build)?;
    let bin_ok = bin_result.passed;
    results.push(bin_result);

    let mut integration = util::cargo();
    integration
        .args(["test", "-p", "tests", "--", "--test-threads=1"])
        .args(&opts.harness_args)
        .env(SLOGUARD_BIN_ENV, util::target_dir().join("debug/sloguard"));
    if bin_ok {
        results.push(step(
            "integration tests on the real kernel",
            &mut integration,
        )?);
    } else {
        println!("test: integration tests not run: the sloguard binary did not build");
        results.push(StepResult {
            name: "integration tests on the real kernel",
            passed: false,
            took: Duration::ZERO,
        });
    }

    print!("{}", summary(&results, start.elapsed()));
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        bail!("{failed} test step(s) failed");
    }
    Ok(())
}

fn step(name: &'static str, cmd: &mut Command) -> Result<StepResult> {
    println!("\n== {name}");
    let (passed, took) = run_timed(cmd)?;
    Ok(StepResult { name, passed, took })
}

/// The table printed at the end of a test run.
pub fn summary(results: &[StepResult], total: Duration) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::from("\n== sloguard test summary\n");
    for r in results {
        let verdict = if r.passed { "ok" } else { "FAILED" };
        out += &format!(
            "  {:width$}  {verdict:6}  {:>8}\n",
            r.name,
            fmt_duration(r.took)
        );
    }
    let failed = results.iter().filter(|r| !r.passed).count();
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
        let results = [
            StepResult {
                name: "unit",
                passed: true,
                took: Duration::from_millis(1500),
            },
            StepResult {
                name: "integration",
                passed: false,
                took: Duration::from_secs(75),
            },
        ];
        let s = summary(&results, Duration::from_secs(80));
        assert!(s.contains("  unit         ok         1.5 s\n"), "{s}");
        assert!(s.contains("  integration  FAILED     1m15s\n"), "{s}");
        assert!(s.ends_with("total 1m20s: 1 of 2 failed\n"), "{s}");
        let ok = summary(&results[..1], Duration::from_secs(2));
        assert!(ok.ends_with("total 2.0 s: all passed\n"), "{ok}");
    }
}
