//! `cargo xtask bench`: runs the criterion benches of the agent, turns criterion's results
//! into one JSON file per benchmark under `target/sloguard-bench/`, runs the end-to-end
//! benches of [`crate::system_benches`], and prints a table of everything this run wrote.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::setup::{self, Scope};
use crate::system_benches;
use crate::util::{self, run};

/// One benchmark's figures, as written to `target/sloguard-bench/<file>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// criterion's id: `group/function[/parameter]`.
    pub name: String,
    pub mean_ns: f64,
    pub median_ns: f64,
    /// Elements per second from the mean time, when the bench set `Throughput::Elements`.
    pub throughput_per_sec: Option<f64>,
    /// Elements processed per iteration (`Throughput::Elements(n)`).
    pub elements: Option<u64>,
    /// Unit of `throughput_per_sec`.
    pub unit: Option<String>,
}

/// criterion's `new/benchmark.json`.
#[derive(Debug, Deserialize)]
struct CriterionId {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<CriterionThroughput>,
}

/// Only `Elements` gives an events/s figure; the byte and bit counts are not reported.
#[derive(Debug, Deserialize)]
enum CriterionThroughput {
    Elements(u64),
    Bytes(IgnoredAny),
    BytesDecimal(IgnoredAny),
    Bits(IgnoredAny),
}

/// The part of criterion's `new/estimates.json` we use (nanoseconds per iteration).
#[derive(Debug, Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Directory the JSON results go to.
pub fn bench_dir() -> PathBuf {
    util::target_dir().join("sloguard-bench")
}

/// Where criterion keeps its results (`CRITERION_HOME` or `<target>/criterion`).
fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME")
        .filter(|d| !d.is_empty())
        .map_or_else(|| util::target_dir().join("criterion"), PathBuf::from)
}

pub fn bench(only: Option<&str>, criterion_args: &[OsString]) -> Result<()> {
    let start = SystemTime::now();
    match only {
        None => {}
        Some(part @ ("overhead" | "https" | "https-go" | "latency")) => {
            let ctx = system_benches::BenchContext {
                out_dir: bench_dir(),
            };
            use crate::bench_kit::Server;
            if let Some(server) = match part {
                "overhead" => Some(Server::Nginx),
                "https" => Some(Server::NginxTls),
                "https-go" => Some(Server::GoTls),
                _ => None,
            } {
                crate::bench_overhead::run(server)?;
            } else {
                system_benches::detection_latency(&ctx)?;
            }
            print!("{}", table(&read_results_since(&bench_dir(), start)?));
            return Ok(());
        }
        Some("stages") => {
            crate::bench_stages::run()?;
            print!("{}", table(&read_results_since(&bench_dir(), start)?));
            return Ok(());
        }
        Some("scrape") => {
            crate::bench_scrape::run()?;
            print!("{}", table(&read_results_since(&bench_dir(), start)?));
            return Ok(());
        }
        Some("memory") => {
            crate::bench_memory::run()?;
            print!("{}", table(&read_results_since(&bench_dir(), start)?));
            return Ok(());
        }
        Some("slowclients") => {
            crate::bench_slowclients::run()?;
            print!("{}", table(&read_results_since(&bench_dir(), start)?));
            return Ok(());
        }
        Some(other) => {
            anyhow::bail!(
                "--only {other}: known parts are `overhead`, `https`, `https-go`, `stages`, `memory`, `scrape`, `slowclients`, `latency`"
            )
        }
    }
    // Full set-up: the end-to-end benches need nginx and wrk.
    setup::setup(Scope::Full)?;
    let mut cmd = util::cargo();
    cmd.args(["bench", "-p", "agent"]);
    if !criterion_args.is_empty() {
        cmd.arg("--").args(criterion_args);
    }
    run(&mut cmd)?;

    let results = collect_criterion(&criterion_dir(), Some(start))?;
    if results.is_empty() {
        println!("bench: no criterion results from this run (does the agent have benches?)");
    }
    for r in &results {
        let value = serde_json::to_value(r).context("serialising a bench result")?;
        write_bench_json(&file_stem(r), &value)?;
    }
    system_benches::run(&system_benches::BenchContext {
        out_dir: bench_dir(),
    })?;
    print!("{}", table(&read_results_since(&bench_dir(), start)?));
    println!("results: {}/*.json", bench_dir().display());
    Ok(())
}

/// Writes `value` to `target/sloguard-bench/<name>.json` (name made file-safe); returns the path.
pub fn write_bench_json(name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    write_bench_json_in(&bench_dir(), name, value)
}

pub fn write_bench_json_in(dir: &Path, name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", sanitize(name)));
    let text = serde_json::to_string_pretty(value).context("serialising bench JSON")?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `group__function[__parameter]`, the file name of a criterion result.
fn file_stem(r: &BenchResult) -> String {
    r.name.replace('/', "__")
}

/// Keeps letters, digits, `_`, `-`, `.`; anything else becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every `.../new/{benchmark,estimates}.json` under `root` written at or after `since`.
pub fn collect_criterion(root: &Path, since: Option<SystemTime>) -> Result<Vec<BenchResult>> {
    let mut found = Vec::new();
    if root.is_dir() {
        walk(root, &mut |dir| {
            if dir.file_name().is_some_and(|n| n == "new") && dir.join("benchmark.json").is_file() {
                found.push(dir.to_path_buf());
            }
        })?;
    }
    let mut results = Vec::new();
    for dir in found {
        let id_path = dir.join("benchmark.json");
        if let Some(since) = since {
            let modified = std::fs::metadata(&id_path)
                .and_then(|m| m.modified())
                .with_context(|| format!("reading mtime of {}", id_path.display()))?;
            if modified < since {
                continue;
            }
        }
        results.push(read_result(&dir)?);
    }
    results.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(results)
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) -> Result<()> {
    visit(dir);
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), visit)?;
        }
    }
    Ok(())
}

/// Reads one criterion result directory (`.../new`).
pub fn read_result(new_dir: &Path) -> Result<BenchResult> {
    let read = |name: &str| {
        let path = new_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let id: CriterionId = serde_json::from_str(&read("benchmark.json")?)
        .with_context(|| format!("parsing {}/benchmark.json", new_dir.display()))?;
    let est: Estimates = serde_json::from_str(&read("estimates.json")?)
        .with_context(|| format!("parsing {}/estimates.json", new_dir.display()))?;
    Ok(to_result(id, est))
}

fn to_result(id: CriterionId, est: Estimates) -> BenchResult {
    let name = [Some(id.group_id), id.function_id, id.value_str]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/");
    let mean_ns = est.mean.point_estimate;
    let elements = match id.throughput {
        Some(CriterionThroughput::Elements(n)) => Some(n),
        Some(
            CriterionThroughput::Bytes(_)
            | CriterionThroughput::BytesDecimal(_)
            | CriterionThroughput::Bits(_),
        )
        | None => None,
    };
    let throughput_per_sec = elements
        .filter(|_| mean_ns > 0.0)
        .map(|n| n as f64 * 1e9 / mean_ns);
    BenchResult {
        name,
        mean_ns,
        median_ns: est.median.point_estimate,
        throughput_per_sec,
        elements,
        unit: elements.map(|_| "elements/s".to_string()),
    }
}

/// A row of the printed table, read back from any JSON file in the bench directory
/// (criterion's and the end-to-end benches' alike).
#[derive(Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub mean_ns: Option<f64>,
    pub median_ns: Option<f64>,
    pub throughput_per_sec: Option<f64>,
    pub unit: Option<String>,
}

fn read_results_since(dir: &Path, since: SystemTime) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(rows);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if !fresh {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        rows.push(row(&stem, &value));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

pub fn row(file_stem: &str, v: &serde_json::Value) -> Row {
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    Row {
        name: v
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or(file_stem)
            .to_string(),
        mean_ns: num("mean_ns"),
        median_ns: num("median_ns"),
        throughput_per_sec: num("throughput_per_sec"),
        unit: v.get("unit").and_then(|u| u.as_str()).map(str::to_string),
    }
}

pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(9);
    let mut out = format!(
        "\n{:width$}  {:>11}  {:>11}  {}\n",
        "benchmark", "mean", "median", "throughput"
    );
    for r in rows {
        let thrpt = match (r.throughput_per_sec, &r.unit) {
            (Some(t), Some(u)) => format!("{} {u}", si(t)),
            (Some(t), None) => si(t),
            _ => "-".to_string(),
        };
        out += &format!(
            "{:width$}  {:>11}  {:>11}  {thrpt}\n",
            r.name,
            r.mean_ns.map_or("-".into(), fmt_ns),
            r.median_ns.map_or("-".into(), fmt_ns)
        );
    }
    out
}

fn fmt_ns(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.2} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2} G", x / 1e9),
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.2} k", x / 1e3),
        x => format!("{x:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results captured from a real criterion 0.7 run (four benches in three groups).
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/criterion")
    }

    #[test]
    fn elements_throughput_comes_from_the_mean() {
        let r = read_result(&fixtures().join("decode/tcp_events/new")).unwrap();
        assert_eq!(r.name, "decode/tcp_events");
        assert!((r.mean_ns - 277.73693945952635).abs() < 1e-9);
        assert!((r.median_ns - 277.5458866795868).abs() < 1e-9);
        assert_eq!(r.elements, Some(1000));
        // 1000 elements per 277.74 ns.
        let t = r.throughput_per_sec.unwrap();
        assert!((t - 3.600530e9).abs() < 1e4, "{t}");
        assert_eq!(r.unit.as_deref(), Some("elements/s"));
    }

    #[test]
    fn benches_without_elements_have_no_throughput() {
        for dir in ["plain/no_throughput/new", "bytes/copy/new"] {
            let r = read_result(&fixtures().join(dir)).unwrap();
            assert_eq!(
                (r.throughput_per_sec, r.elements, r.unit),
                (None, None, None),
                "{dir}"
            );
            assert!(r.mean_ns > 0.0 && r.median_ns > 0.0);
        }
    }

    #[test]
    fn all_results_are_found_and_base_copies_ignored() {
        let all = collect_criterion(&fixtures(), None).unwrap();
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bytes/copy",
                "decode/tcp_events",
                "plain/no_throughput",
                "plain/param/64"
            ]
        );
        assert_eq!(file_stem(&all[3]), "plain__param__64");
        assert_eq!(file_stem(&all[1]), "decode__tcp_events");
    }

    #[test]
    fn results_older_than_the_run_are_skipped() {
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(
            collect_criterion(&fixtures(), Some(future))
                .unwrap()
                .is_empty()
        );
        assert!(
            collect_criterion(Path::new("/nonexistent/criterion"), None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn broken_criterion_json_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("g/f/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("benchmark.json"), "{\"group_id\": 3}").unwrap();
        std::fs::write(new.join("estimates.json"), "{}").unwrap();
        let err = format!("{:#}", collect_criterion(tmp.path(), None).unwrap_err());
        assert!(err.contains("g/f/new/benchmark.json"), "{err}");
    }

    #[test]
    fn written_json_reads_back_as_a_table_row() {
        let tmp = tempfile::tempdir().unwrap();
        let r = read_result(&fixtures().join("decode/tcp_events/new")).unwrap();
        let path = write_bench_json_in(
            tmp.path(),
            &file_stem(&r),
            &serde_json::to_value(&r).unwrap(),
        )
        .unwrap();
        assert!(path.ends_with("decode__tcp_events.json"));
        let back: BenchResult =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, r);

        // An end-to-end bench writes its own shape; the table takes what it finds.
        let e2e = serde_json::json!({"name": "nginx wrk/with agent", "throughput_per_sec": 81000.0, "unit": "requests/s"});
        let p = write_bench_json_in(tmp.path(), "nginx wrk/with agent", &e2e).unwrap();
        assert!(p.ends_with("nginx_wrk_with_agent.json"), "{}", p.display());
        let rows = read_results_since(tmp.path(), SystemTime::UNIX_EPOCH).unwrap();
        let t = table(&rows);
        assert!(t.contains("decode/tcp_events"), "{t}");
        assert!(t.contains("277.74 ns"), "{t}");
        assert!(t.contains("3.60 G elements/s"), "{t}");
        assert!(t.contains("81.00 k requests/s"), "{t}");
    }
}
