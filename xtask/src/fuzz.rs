//! `cargo xtask fuzz`: builds the cargo-fuzz targets of `agent/fuzz` with nightly
//! and runs each for a fixed time, one after the other, growing a work corpus
//! from the seeds kept in the repository. Prints executions per second per
//! target and fails when one found a crash, leaving the input where libFuzzer
//! put it (`agent/fuzz/artifacts/<target>/`) and the whole log beside it.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, fmt_duration, run};

/// The fuzz targets, as named in `agent/fuzz/Cargo.toml` (a test keeps the two in step).
pub const TARGETS: &[&str] = &[
    "http_head",
    "http_chunked",
    "http_stream",
    "http2_frames",
    "trace_headers",
    "events",
    "config",
];

/// Seconds per target when `--secs` is not given.
pub const DEFAULT_SECS: u64 = 30;

pub struct FuzzOpts {
    pub secs: u64,
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
    /// `cargo fuzz --dev`: an unoptimised build. The release build of the
    /// fuzz crate under ASan takes most of ten minutes on two cores; a smoke
    /// run of a few seconds per target needs the checks, not the speed.
    pub dev: bool,
}

/// One target's run.
#[derive(Debug)]
pub struct FuzzRun {
    pub target: String,
    pub stats: Stats,
    pub took: Duration,
    /// The input that crashed, hung or ran out of memory, as libFuzzer reported it.
    pub crash: Option<String>,
    pub ok: bool,
    pub log: PathBuf,
}

/// libFuzzer's final statistics (`-print_final_stats=1`).
#[derive(Debug, Default, PartialEq)]
pub struct Stats {
    pub execs: Option<u64>,
    pub execs_per_sec: Option<u64>,
    pub new_units: Option<u64>,
    pub peak_rss_mb: Option<u64>,
}

pub fn fuzz_dir() -> PathBuf {
    util::repo_root().join("agent/fuzz")
}

pub fn fuzz(opts: &FuzzOpts) -> Result<()> {
    let runs = run_targets(opts)?;
    print!("{}", table(&runs));
    let failed: Vec<&FuzzRun> = runs.iter().filter(|r| !r.ok).collect();
    if !failed.is_empty() {
        for r in &failed {
            match &r.crash {
                Some(input) => eprintln!(
                    "fuzz: {} found a crash: input {input}, log {}; reproduce with `cd agent && cargo +nightly fuzz run {} {input}`",
                    r.target,
                    r.log.display(),
                    r.target
                ),
                None => eprintln!("fuzz: {} failed; log {}", r.target, r.log.display()),
            }
        }
        bail!("{} fuzz target(s) failed", failed.len());
    }
    Ok(())
}

/// Builds every selected target, then runs them one at a time.
pub fn run_targets(opts: &FuzzOpts) -> Result<Vec<FuzzRun>> {
    let targets = select(&opts.targets)?;
    crate::setup::ensure_cargo_fuzz()?;
    let mut build = cargo_fuzz();
    build.arg("build");
    if opts.dev {
        build.arg("--dev");
    }
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    run(&mut build).context("building the fuzz targets")?;
    targets
        .iter()
        .map(|t| run_target(t, opts.secs, opts.dev))
        .collect()
}

fn select(wanted: &[String]) -> Result<Vec<&'static str>> {
    if wanted.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    wanted
        .iter()
        .map(|w| {
            TARGETS
                .iter()
                .copied()
                .find(|t| t == w)
                .with_context(|| format!("no fuzz target {w}; targets: {}", TARGETS.join(", ")))
        })
        .collect()
}

/// `cargo fuzz` on the nightly toolchain, in the agent crate (whose `fuzz/` it finds).
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(util::repo_root().join("agent"))
        .stdin(Stdio::null());
    // `cargo run` hands xtask its own package's variables; nightly must pick its
    // own cargo, and build scripts that watch e.g. CARGO_MANIFEST_DIR (ring)
    // would otherwise rebuild half the dependency tree when it changes.
    for (name, _) in std::env::vars_os() {
        if is_cargo_run_var(&name.to_string_lossy()) {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC");
    cmd
}

/// Variables `cargo run` sets for the program it runs (not user configuration
/// such as CARGO_HOME or CARGO_TARGET_DIR).
pub fn is_cargo_run_var(name: &str) -> bool {
    matches!(
        name,
        "CARGO"
            | "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
    ) || name.starts_with("CARGO_PKG_")
}

/// The `cargo fuzz run` of one target: work corpus first (libFuzzer adds new
/// inputs to the first directory), the seeds read-only second.
pub fn run_command(target: &str, secs: u64, dev: bool) -> Command {
    let dir = fuzz_dir();
    let mut cmd = cargo_fuzz();
    cmd.arg("run");
    // The same profile as the build, or `run` builds the other one.
    if dev {
        cmd.arg("--dev");
    }
    cmd.arg(target)
        .arg(dir.join("corpus").join(target))
        .arg(dir.join("seeds").join(target))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"]);
    cmd
}

fn run_target(target: &str, secs: u64, dev: bool) -> Result<FuzzRun> {
    let dir = fuzz_dir();
    std::fs::create_dir_all(dir.join("corpus").join(target))?;
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let log = artifacts.join("fuzz.log");
    let mut cmd = run_command(target, secs, dev);
    println!("\n== fuzz {target} ({secs} s)\n+ {}", util::cmdline(&cmd));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let start = Instant::now();
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot start `{}`", util::cmdline(&cmd)))?;
    let took = start.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stats = parse_stats(&text);
    let crash = crash_input(&text);
    let ok = status.success() && crash.is_none();
    if !ok {
        // The end of the log holds the panic message and the backtrace.
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            println!("  {l}");
        }
    }
    println!(
        "fuzz: {target}: {} in {}{}",
        describe(&stats),
        fmt_duration(took),
        if ok { "" } else { ", FAILED" }
    );
    Ok(FuzzRun {
        target: target.to_string(),
        stats,
        took,
        crash,
        ok,
        log,
    })
}

fn describe(s: &Stats) -> String {
    let n = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    format!(
        "{} executions, {} exec/s, {} new inputs",
        n(s.execs),
        n(s.execs_per_sec),
        n(s.new_units)
    )
}

/// Reads `stat::name: value` lines of libFuzzer's final statistics.
pub fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for line in log.lines() {
        let Some(rest) = line.trim().strip_prefix("stat::") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(':') else {
            continue;
        };
        let v = value.trim().parse().ok();
        match name {
            "number_of_executed_units" => s.execs = v,
            "average_exec_per_sec" => s.execs_per_sec = v,
            "new_units_added" => s.new_units = v,
            "peak_rss_mb" => s.peak_rss_mb = v,
            _ => {}
        }
    }
    s
}

/// The input libFuzzer saved for a crash, timeout, leak or out-of-memory.
pub fn crash_input(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let rest = l.split_once("Test unit written to ")?.1.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    })
}

/// The per-target table: what `cargo xtask fuzz` ends with.
pub fn table(runs: &[FuzzRun]) -> String {
    let mut out = String::from("\n== fuzz summary\n");
    out += &format!(
        "  {:14} {:>9} {:>12} {:>8} {:>5} {:>7}  result\n",
        "target", "time", "executions", "exec/s", "new", "rss MB"
    );
    for r in runs {
        let n = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let result = match (&r.crash, r.ok) {
            (Some(input), _) => format!("CRASH {input}"),
            (None, true) => "ok".to_string(),
            (None, false) => format!("FAILED (log {})", r.log.display()),
        };
        out += &format!(
            "  {:14} {:>9} {:>12} {:>8} {:>5} {:>7}  {result}\n",
            r.target,
            fmt_duration(r.took),
            n(r.stats.execs),
            n(r.stats.execs_per_sec),
            n(r.stats.new_units),
            n(r.stats.peak_rss_mb),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn has_files(path: &Path) -> bool {
        std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some())
    }

    #[test]
    fn cargo_run_variables_are_not_passed_to_the_fuzz_build() {
        for v in [
            "CARGO",
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_NAME",
        ] {
            assert!(is_cargo_run_var(v), "{v}");
        }
        for v in ["CARGO_HOME", "CARGO_TARGET_DIR", "RUSTFLAGS", "PATH"] {
            assert!(!is_cargo_run_var(v), "{v}");
        }
    }

    const LOG: &str = "INFO: Running with entropic power schedule (0xFF, 100).
#2\tINITED cov: 1186 ft: 1187 corp: 1/1b exec/s: 0 rss: 40Mb
#1048576\tpulse  cov: 2000 ft: 4000 corp: 300/10Kb lim: 4096 exec/s: 34952 rss: 450Mb
Done 1201334 runs in 31 second(s)
stat::number_of_executed_units: 1201334
stat::average_exec_per_sec:     38752
stat::new_units_added:          1530
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              463
";

    #[test]
    fn final_stats_are_read() {
        assert_eq!(
            parse_stats(LOG),
            Stats {
                execs: Some(1_201_334),
                execs_per_sec: Some(38_752),
                new_units: Some(1530),
                peak_rss_mb: Some(463),
            }
        );
        assert_eq!(parse_stats("no stats here"), Stats::default());
        assert_eq!(crash_input(LOG), None);
    }

    #[test]
    fn crash_input_is_found() {
        let log = "thread '<unnamed>' panicked at src/fuzz.rs:10:5:\n==1234== ERROR: libFuzzer: deadly signal\nMS: 1 ChangeByte-; base unit: 0\nartifact_prefix='/r/agent/fuzz/artifacts/config/'; Test unit written to /r/agent/fuzz/artifacts/config/crash-da39a3ee\nBase64: AA==\n";
        assert_eq!(
            crash_input(log).as_deref(),
            Some("/r/agent/fuzz/artifacts/config/crash-da39a3ee")
        );
    }

    #[test]
    fn targets_match_the_fuzz_crate_and_have_seeds() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        let bins = manifest.matches("[[bin]]").count();
        assert_eq!(
            bins,
            TARGETS.len(),
            "agent/fuzz/Cargo.toml has {bins} targets"
        );
        for t in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            assert!(
                has_files(&fuzz_dir().join("seeds").join(t)),
                "no seeds for {t}"
            );
        }
    }

    #[test]
    fn run_command_keeps_seeds_read_only_and_bounds_time() {
        let line = util::cmdline(&run_command("config", 12, false));
        assert!(
            line.contains("rustup run nightly cargo fuzz run config "),
            "{line}"
        );
        let corpus = fuzz_dir().join("corpus/config");
        let seeds = fuzz_dir().join("seeds/config");
        let (c, s) = (
            line.find(&*corpus.to_string_lossy()).unwrap(),
            line.find(&*seeds.to_string_lossy()).unwrap(),
        );
        assert!(c < s, "work corpus must come first: {line}");
        assert!(
            line.contains("-- -max_total_time=12 -print_final_stats=1"),
            "{line}"
        );
        // The smoke run in `cargo xtask test` builds with --dev; run must
        // ask for the same profile or it builds the release one as well.
        let dev = util::cmdline(&run_command("config", 12, true));
        assert!(dev.contains("cargo fuzz run --dev config "), "{dev}");
    }

    #[test]
    fn unknown_target_is_an_error_naming_the_targets() {
        let e = select(&["nope".into()]).unwrap_err().to_string();
        assert!(
            e.contains("no fuzz target nope") && e.contains("http_head"),
            "{e}"
        );
        assert_eq!(select(&[]).unwrap(), TARGETS);
        assert_eq!(select(&["config".into()]).unwrap(), ["config"]);
    }
}
