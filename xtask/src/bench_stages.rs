//! What each stage of the HTTP probes costs on a live load: the overhead
//! bench's nginx and wrk, with the agent's probes stopped after each stage in
//! turn (`probes.cost_stage`): dispatching the programs at all, classifying
//! the socket, moving one event per socket syscall to userspace, and the
//! whole capture.
//!
//! Two measures per stage. Throughput ratios, each run paired with a run
//! without the agent just before it; on this VM consecutive 3 s runs of the
//! same thing differ by up to ±6 %, so these are medians of several rounds
//! and still coarse. And a cost per request, measured within one run:
//! the kernel's own timing of the probes (`probes.run_time_stats`) plus the
//! agent's CPU time, against the whole machine's busy CPU per request without
//! the agent; with both cores saturated, `base / (base + cost)` is the
//! throughput ratio that cost allows.
use anyhow::Result;
use serde_json::json;

use crate::bench_kit::{AgentRun, median, prepare, wrk_for, wrk_without_agent};

const ROUNDS: usize = 5;
const RUN_SECS: u32 = 3;
const STAGES: [&str; 4] = ["attach", "classify", "transfer", "full"];

/// Runs the ladder and writes `overhead_stages.json`.
pub fn run() -> Result<()> {
    let (bin, load, hz) = prepare("stages", crate::bench_kit::Server::Nginx)?;

    // Busy CPU of the whole machine per request without the agent.
    let mut base_ns = Vec::new();
    for _ in 0..3 {
        base_ns.push(wrk_without_agent(&load.url, hz, RUN_SECS)?.1);
    }
    let base_ns = median(&base_ns);
    println!(
        "bench: stages: without the agent the machine spends {base_ns:.0} ns of CPU per request"
    );

    let mut costs = Vec::new();
    for stage in STAGES {
        let yaml = format!("probes:\n  cost_stage: {stage}\n  run_time_stats: true\n");
        let r = AgentRun::measure(&bin, &yaml, &load.url, hz, RUN_SECS)?;
        let (k, u) = (r.probe_ns_per_request(), r.agent_ns_per_request());
        let allowed = base_ns / (base_ns + k + u);
        println!(
            "bench: stages: {stage:<8} probes {k:.0} ns + agent {u:.0} ns per request -> ratio {allowed:.3} at saturation, {} events lost",
            r.lost
        );
        costs.push((k, u, allowed, r.lost));
    }

    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        for (i, stage) in STAGES.iter().enumerate() {
            let base = wrk_for(&load.url, RUN_SECS)?;
            let yaml = format!("probes:\n  cost_stage: {stage}\n");
            let r = AgentRun::measure(&bin, &yaml, &load.url, hz, RUN_SECS)?;
            let ratio = r.wrk.requests_per_sec / base.requests_per_sec;
            println!(
                "bench: stages round {round}: {stage:<8} {:.0} / {:.0} req/s = {ratio:.3}, agent {:.3} cores, {} events lost",
                r.wrk.requests_per_sec, base.requests_per_sec, r.cores, r.lost
            );
            runs.push(json!({"round": round, "stage": stage,
                "without_rps": base.requests_per_sec, "with_rps": r.wrk.requests_per_sec,
                "ratio": ratio, "agent_cores": r.cores, "events_lost": r.lost}));
            ratios[i].push(ratio);
        }
    }
    drop(load);

    let mut summary = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        let (k, u, allowed, lost) = costs[i];
        let measured = median(&ratios[i]);
        println!(
            "bench: stages: {stage:<8} measured ratio {measured:.3} (median of {ROUNDS}), cost {:.0} ns per request -> {allowed:.3}",
            k + u
        );
        summary.push(json!({"stage": stage, "throughput_ratio_median": measured,
            "probe_ns_per_request": k, "agent_ns_per_request": u,
            "ratio_from_cost": allowed, "events_lost_timed_run": lost}));
    }
    let value = json!({
        "name": "overhead_stages",
        "rounds": ROUNDS,
        "run_seconds": RUN_SECS,
        "base_cpu_ns_per_request": base_ns,
        "stages": summary,
        "runs": runs,
        "throughput_ratio": summary.last().and_then(|s| s["throughput_ratio_median"].as_f64()),
        "unit": "requests",
    });
    let path = crate::bench::write_bench_json("overhead_stages", &value)?;
    println!("bench: stages -> {}", path.display());
    Ok(())
}
