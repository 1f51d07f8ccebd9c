//! End-to-end benches on this host (nginx + wrk with and without the agent), run by
//! `cargo xtask bench` after the criterion benches. Each bench writes its figures with
//! [`write_bench_json`] into the same directory; the table at the end picks them up
//! (it shows `name`, `mean_ns`, `median_ns`, `throughput_per_sec` and `unit` when present).
use std::path::PathBuf;

use anyhow::Result;

/// What an end-to-end bench gets from the runner.
pub struct BenchContext {
    /// `target/sloguard-bench/`.
    pub out_dir: PathBuf,
}

/// Runs every end-to-end bench: the nginx+wrk overhead comparison (plain
/// HTTP, then HTTPS through nginx and through a Go server), the agent's memory at 1000 routes × 5 gray tags, then the detection latency
/// of the SLO engine end to end.
pub fn run(ctx: &BenchContext) -> Result<()> {
    println!(
        "bench: end-to-end benches (results go to {})",
        ctx.out_dir.display()
    );
    use crate::bench_kit::Server;
    crate::bench_overhead::run(Server::Nginx)?;
    crate::bench_overhead::run(Server::NginxTls)?;
    crate::bench_overhead::run(Server::GoTls)?;
    crate::bench_stages::run()?;
    crate::bench_memory::run()?;
    crate::bench_scrape::run()?;
    crate::bench_slowclients::run()?;
    detection_latency(ctx)
}

/// Fault onset → L2 webhook → fuse action, measured by the end-to-end SLO
/// test on the real kernel (1 s period), which writes the JSON itself; then
/// fuse decision → first 503 per gateway action.
pub fn detection_latency(ctx: &BenchContext) -> Result<()> {
    // The test writes the file but not the directory (absent on a fresh tree).
    std::fs::create_dir_all(&ctx.out_dir)?;
    let out = ctx.out_dir.join("detection_latency.json");
    run_measuring_test("slo_e2e", &[], ("SG_BENCH_LATENCY_JSON", &out))?;
    println!("bench: detection latency written to {}", out.display());
    fuse_latency(ctx)
}

/// Fuse decision → first 503 at the gateway for each action (nginx map +
/// reload, HAProxy runtime API, Caddy admin API), measured against the real
/// gateways by the fuse gateway test, which writes one JSON per action
/// (`fuse_latency_<action>.json`, with the median's ratio to nginx's).
pub fn fuse_latency(ctx: &BenchContext) -> Result<()> {
    run_measuring_test(
        "fuse_gateways",
        &["--exact", "fuse_decision_to_first_503_per_gateway"],
        ("SG_BENCH_FUSE_LATENCY_DIR", &ctx.out_dir),
    )?;
    println!(
        "bench: fuse latency per gateway written to {}",
        ctx.out_dir.display()
    );
    Ok(())
}

/// Runs an integration test of the `tests` crate that measures on the real
/// kernel and writes its figures where `out` (a variable and a path) says.
fn run_measuring_test(test: &str, filter: &[&str], out: (&str, &std::path::Path)) -> Result<()> {
    crate::util::run(
        crate::util::cargo()
            .args(["test", "-p", "tests", "--test", test, "--", "--nocapture"])
            .args(filter)
            .env(out.0, out.1),
    )
}
