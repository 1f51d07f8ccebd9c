//! End-to-end benches on this host (nginx + wrk with and without the agent), run by
//! `cargo xtask bench` after the criterion benches. Each bench writes its figures with
//! [`write_bench_json`] into the same directory; the table at the end picks them up
//! (it shows `name`, `mean_ns`, `median_ns`, `throughput_per_sec` and `unit` when present).
use std::path::PathBuf;

use anyhow::Result;

#[allow(unused_imports)] // used by the end-to-end benches as they are added
pub use crate::bench::write_bench_json;

/// What an end-to-end bench gets from the runner.
pub struct BenchContext {
    /// `target/sloguard-bench/`.
    pub out_dir: PathBuf,
}

/// Runs every end-to-end bench: the nginx+wrk overhead comparison.
pub fn run(ctx: &BenchContext) -> Result<()> {
    println!(
        "bench: end-to-end benches (results go to {})",
        ctx.out_dir.display()
    );
    crate::bench_overhead::run()
}
