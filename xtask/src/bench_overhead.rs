//! The agent's overhead on a real server: nginx (one worker, small static
//! file, no access log) on loopback driven by `wrk -t1 -c32 -d3s --latency`,
//! runs without and with the agent alternated (8 pairs, order swapped every
//! pair). Per run: requests/s, wrk's p99, and the agent's CPU time from
//! /proc/<pid>/stat; then one run with the kernel timing the probes, which
//! gives the cost per request and the throughput ratio that cost allows.
use anyhow::Result;
use serde_json::json;

use crate::bench_kit::{
    AgentRun, WRK_ARGS, WRK_SECS, WrkFigures, mean, median, prepare, wrk_without_agent,
};

/// Pairs of runs without and with the agent. Consecutive runs of the same
/// load differ by up to ±6 % on this VM, so a ratio needs many short pairs.
const PAIRS: usize = 8;

/// Runs the comparison and writes `overhead_nginx.json`.
pub fn run() -> Result<()> {
    let (bin, nginx, hz) = prepare("overhead")?;
    let mut runs = Vec::new();
    let (mut tput, mut p99, mut cores_per_10k) = (Vec::new(), Vec::new(), Vec::new());
    let mut base_cpu_ns = Vec::new();
    for pair in 0..PAIRS {
        // Without-then-with, then with-then-without: a drift of the host
        // over the pairs weighs on both sides alike.
        let base_first = pair % 2 == 0;
        let mut base_run = || -> Result<WrkFigures> {
            let (w, cpu_ns) = wrk_without_agent(nginx.port, hz, WRK_SECS)?;
            base_cpu_ns.push(cpu_ns);
            Ok(w)
        };
        let early = if base_first { Some(base_run()?) } else { None };
        let AgentRun {
            wrk: with,
            cpu_s,
            wall,
            cores,
            per_10k,
            lost,
            ..
        } = AgentRun::measure(&bin, "", nginx.port, hz, WRK_SECS)?;
        let base = match early {
            Some(b) => b,
            None => base_run()?,
        };
        println!(
            "bench: overhead pair {pair}: without agent {:.0} req/s, p99 {:.3} ms; with agent {:.0} req/s, p99 {:.3} ms, agent {:.3} cores ({:.3} per 10k req/s), {lost} events lost",
            base.requests_per_sec, base.p99_ms, with.requests_per_sec, with.p99_ms, cores, per_10k
        );
        runs.push(json!({"pair": pair, "agent": false,
            "requests_per_sec": base.requests_per_sec, "p99_ms": base.p99_ms}));
        runs.push(json!({"pair": pair, "agent": true,
            "requests_per_sec": with.requests_per_sec, "p99_ms": with.p99_ms,
            "agent_cpu_seconds": cpu_s, "wall_seconds": wall, "agent_cores": cores,
            "agent_cores_per_10k_rps": per_10k, "events_lost": lost}));
        tput.push(with.requests_per_sec / base.requests_per_sec);
        p99.push(with.p99_ms / base.p99_ms);
        cores_per_10k.push(per_10k);
    }
    // One more run with the kernel timing every probe run: the in-kernel
    // cost per request (the timing itself adds a little, so this run is not
    // part of the ratios above).
    let timed = AgentRun::measure(
        &bin,
        "probes:\n  run_time_stats: true\n",
        nginx.port,
        hz,
        WRK_SECS,
    )?;
    let probe_ns_per_request = timed.probe_ns_per_request();
    let probe_runs_per_request = timed.probe_runs / timed.requests();
    let probe_ns_per_run = timed.probe_s * 1e9 / timed.probe_runs.max(1.0);
    // The cost side, measured within one run (no pairing): the kernel's own timing
    // of the probes plus the agent's CPU, against the machine's busy CPU per
    // request without the agent. With both cores saturated the throughput
    // ratio that cost allows is base / (base + cost).
    let agent_ns_per_request = timed.agent_ns_per_request();
    let base_cpu_ns_per_request = median(&base_cpu_ns);
    let ratio_from_cost = base_cpu_ns_per_request
        / (base_cpu_ns_per_request + probe_ns_per_request + agent_ns_per_request);
    println!(
        "bench: overhead: probes {probe_ns_per_request:.0} ns per request in the kernel ({probe_runs_per_request:.2} runs of {probe_ns_per_run:.0} ns), agent {agent_ns_per_request:.0} ns, against {base_cpu_ns_per_request:.0} ns of CPU per request without the agent: ratio {ratio_from_cost:.3} from cost"
    );
    drop(nginx);
    let with_rps: Vec<f64> = runs
        .iter()
        .filter(|r| r["agent"] == true)
        .filter_map(|r| r["requests_per_sec"].as_f64())
        .collect();
    let value = json!({
        "name": "overhead_nginx",
        "wrk": format!("{} -d{WRK_SECS}s", WRK_ARGS.join(" ")),
        "pairs": PAIRS,
        "runs": runs,
        "throughput_ratio": mean(&tput),
        "throughput_ratio_median": median(&tput),
        "throughput_ratio_from_cost": ratio_from_cost,
        "base_cpu_ns_per_request": base_cpu_ns_per_request,
        "agent_ns_per_request_timed_run": agent_ns_per_request,
        "p99_ratio": mean(&p99),
        "p99_ratio_median": median(&p99),
        "agent_cores_per_10k_rps": mean(&cores_per_10k),
        "agent_cpu_us_per_request": mean(&cores_per_10k) * 100.0,
        "probe_ns_per_request": probe_ns_per_request,
        "probe_runs_per_request": probe_runs_per_request,
        "probe_ns_per_run": probe_ns_per_run,
        "throughput_per_sec": mean(&with_rps),
        "unit": "requests",
    });
    let path = crate::bench::write_bench_json("overhead_nginx", &value)?;
    println!(
        "bench: overhead: throughput ratio {:.3} (median {:.3}, from cost {ratio_from_cost:.3}), p99 ratio {:.3} (median {:.3}), {:.3} cores per 10k req/s -> {}",
        mean(&tput),
        median(&tput),
        mean(&p99),
        median(&p99),
        mean(&cores_per_10k),
        path.display()
    );
    Ok(())
}
