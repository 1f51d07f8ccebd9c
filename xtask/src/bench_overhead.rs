//! The agent's overhead on a real server: nginx (one worker, small static
//! file, no access log) on loopback driven by `wrk -t1 -c32 -d3s --latency`,
//! runs without and with the agent alternated (8 pairs, order swapped every
//! pair). Per run: requests/s, wrk's p99, and the agent's CPU time from
//! /proc/<pid>/stat; then one run with the kernel timing the probes, which
//! gives the cost per request and the throughput ratio that cost allows.
//!
//! The agent runs in three tracing scopes in every pair, in rotated order:
//! `all` (the default: nginx and wrk both traced), `server` (`scope:` selects
//! this nginx only; wrk ends at the probes' scope check) and `none` (a scope
//! that selects nothing on the load: the floor of the scope check). The
//! top-level figures are `all`'s, as before; `scopes` holds all three.
//!
//! `--only https` runs the same comparison with nginx serving TLS (`ssl`,
//! a test certificate) and wrk over https, so the agent's OpenSSL uprobes
//! are in the path; it adds a fourth agent configuration, `attach`
//! (`probes.cost_stage: attach`: every program attached and returning at
//! once), which prices the uprobe traps alone, the floor of the TLS path.
//! It writes `overhead_nginx_https.json`. `--only https-go` does the same
//! with the Go `net/http` TLS server of the kernel_tls_go tests (built with
//! the Debian Go toolchain at bench time, `GOMAXPROCS=1`) in nginx's place,
//! so the Go `crypto/tls` uprobes (and wrk's OpenSSL ones) are in the path;
//! it writes `overhead_go_https.json`.
//!
//! Knobs for a busy host: `XTASK_BENCH_OVERHEAD_PAIRS` (default 8) and
//! `XTASK_BENCH_OVERHEAD_SECS` (seconds per run, default 3).
use anyhow::Result;
use serde_json::{Value, json};

use crate::bench_kit::{
    AgentRun, Server, WRK_ARGS, WRK_SECS, WrkFigures, mean, median, prepare, wrk_without_agent,
};

/// Pairs of runs without and with the agent. Consecutive runs of the same
/// load differ by up to ±6 % on this VM, so a ratio needs many short pairs.
const PAIRS: usize = 8;

/// A tracing scope the agent runs in: name and `scope:` section.
struct Scope {
    name: &'static str,
    yaml: String,
}

fn scopes(process: &str, port: u16, tls: bool) -> Vec<Scope> {
    let mut scopes = vec![
        Scope {
            name: "all",
            yaml: String::new(),
        },
        // Name and port: only this server, not another nginx on the host.
        Scope {
            name: "server",
            yaml: format!("scope:\n  include:\n    - process: {process}\n      port: {port}\n"),
        },
        Scope {
            name: "none",
            yaml: "scope:\n  include:\n    - process: sg-bench-nothing\n".into(),
        },
    ];
    if tls {
        scopes.push(Scope {
            name: "attach",
            yaml: "probes:\n  cost_stage: attach\n".into(),
        });
    }
    scopes
}

fn knob(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// One scope's figures over the pairs.
#[derive(Default)]
struct Series {
    tput: Vec<f64>,
    p99: Vec<f64>,
    cores_per_10k: Vec<f64>,
    /// Agent CPU per request (ns) of every paired run: its range over runs.
    agent_ns: Vec<f64>,
    rps: Vec<f64>,
}

/// Runs the comparison against `server` and writes `overhead_nginx.json`
/// (plain HTTP), `overhead_nginx_https.json` or `overhead_go_https.json`.
pub fn run(server: Server) -> Result<()> {
    let tls = server.tls();
    let name = match server {
        Server::Nginx => "overhead_nginx",
        Server::NginxTls => "overhead_nginx_https",
        Server::GoTls => "overhead_go_https",
    };
    let pairs = knob("XTASK_BENCH_OVERHEAD_PAIRS", PAIRS);
    let secs = knob("XTASK_BENCH_OVERHEAD_SECS", WRK_SECS as usize) as u32;
    let (bin, load, hz) = prepare("overhead", server)?;
    let scopes = scopes(load.process, load.port, tls);
    let mut series: Vec<Series> = scopes.iter().map(|_| Series::default()).collect();
    let mut runs = Vec::new();
    let mut base_cpu_ns = Vec::new();
    for pair in 0..pairs {
        // Without-then-with, then with-then-without: a drift of the host
        // over the pairs weighs on both sides alike. The scopes rotate too.
        let base_first = pair % 2 == 0;
        let mut base_run = || -> Result<WrkFigures> {
            let (w, cpu_ns) = wrk_without_agent(&load.url, hz, secs)?;
            base_cpu_ns.push(cpu_ns);
            Ok(w)
        };
        let early = if base_first { Some(base_run()?) } else { None };
        let mut with = Vec::new();
        for k in 0..scopes.len() {
            let i = (pair + k) % scopes.len();
            with.push((
                i,
                AgentRun::measure(&bin, &scopes[i].yaml, &load.url, hz, secs)?,
            ));
        }
        let base = match early {
            Some(b) => b,
            None => base_run()?,
        };
        runs.push(json!({"pair": pair, "agent": false,
            "requests_per_sec": base.requests_per_sec, "p99_ms": base.p99_ms}));
        for (i, r) in with {
            let s = &mut series[i];
            println!(
                "bench: overhead pair {pair}: scope {:<6} {:.0} / {:.0} req/s = {:.3}, p99 {:.3} / {:.3} ms, agent {:.3} cores ({:.3} per 10k req/s), {} events lost",
                scopes[i].name,
                r.wrk.requests_per_sec,
                base.requests_per_sec,
                r.wrk.requests_per_sec / base.requests_per_sec,
                r.wrk.p99_ms,
                base.p99_ms,
                r.cores,
                r.per_10k,
                r.lost
            );
            runs.push(json!({"pair": pair, "agent": true, "scope": scopes[i].name,
                "requests_per_sec": r.wrk.requests_per_sec, "p99_ms": r.wrk.p99_ms,
                "agent_cpu_seconds": r.cpu_s, "wall_seconds": r.wall, "agent_cores": r.cores,
                "agent_cores_per_10k_rps": r.per_10k, "events_lost": r.lost}));
            s.tput.push(r.wrk.requests_per_sec / base.requests_per_sec);
            s.p99.push(r.wrk.p99_ms / base.p99_ms);
            s.cores_per_10k.push(r.per_10k);
            s.agent_ns.push(r.agent_ns_per_request());
            s.rps.push(r.wrk.requests_per_sec);
        }
    }
    let base_cpu_ns_per_request = median(&base_cpu_ns);
    // One more run per scope with the kernel timing every probe run: the
    // in-kernel cost per request (the timing itself adds a little, so these
    // runs are not part of the ratios above).
    let mut summaries = Vec::new();
    for (scope, s) in scopes.iter().zip(&series) {
        // One `probes:` section: the `attach` configuration has its own.
        let yaml = match scope.yaml.strip_prefix("probes:\n") {
            Some(rest) => format!("probes:\n  run_time_stats: true\n{rest}"),
            None => format!("probes:\n  run_time_stats: true\n{}", scope.yaml),
        };
        let timed = AgentRun::measure(&bin, &yaml, &load.url, hz, secs)?;
        summaries.push(summarise(scope.name, s, &timed, base_cpu_ns_per_request));
    }
    drop(load);
    let all = &summaries[0];
    let mut value = json!({
        "name": name,
        "wrk": format!("{} -d{secs}s {}", WRK_ARGS.join(" "), if tls { "https" } else { "http" }),
        "pairs": pairs,
        "runs": runs,
        "base_cpu_ns_per_request": base_cpu_ns_per_request,
        "scopes": summaries,
        "unit": "requests",
    });
    // The top-level figures, as before the scopes: everything traced.
    for key in [
        "throughput_ratio",
        "throughput_ratio_median",
        "throughput_ratio_from_cost",
        "agent_ns_per_request_timed_run",
        "p99_ratio",
        "p99_ratio_median",
        "agent_cores_per_10k_rps",
        "agent_cpu_us_per_request",
        "probe_ns_per_request",
        "probe_runs_per_request",
        "probe_ns_per_run",
        "throughput_per_sec",
    ] {
        value[key] = all[key].clone();
    }
    let path = crate::bench::write_bench_json(name, &value)?;
    for s in &summaries {
        println!(
            "bench: overhead: scope {:<6} throughput ratio {:.3} (median {:.3}, range {:.3}-{:.3}, from cost {:.3}), p99 ratio {:.3} (median {:.3}); probes {:.0} ns + agent {:.0} ns per request (agent over runs {:.0}-{:.0} ns)",
            s["scope"].as_str().unwrap_or(""),
            s["throughput_ratio"].as_f64().unwrap_or(f64::NAN),
            s["throughput_ratio_median"].as_f64().unwrap_or(f64::NAN),
            s["throughput_ratio_min"].as_f64().unwrap_or(f64::NAN),
            s["throughput_ratio_max"].as_f64().unwrap_or(f64::NAN),
            s["throughput_ratio_from_cost"].as_f64().unwrap_or(f64::NAN),
            s["p99_ratio"].as_f64().unwrap_or(f64::NAN),
            s["p99_ratio_median"].as_f64().unwrap_or(f64::NAN),
            s["probe_ns_per_request"].as_f64().unwrap_or(f64::NAN),
            s["agent_ns_per_request_timed_run"]
                .as_f64()
                .unwrap_or(f64::NAN),
            s["agent_ns_per_request_min"].as_f64().unwrap_or(f64::NAN),
            s["agent_ns_per_request_max"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("bench: overhead -> {}", path.display());
    Ok(())
}

/// One scope's JSON: ratios over the pairs, and the cost per request from
/// its timed run, measured within that run (no pairing): the kernel's own
/// timing of the probes plus the agent's CPU, against the machine's busy CPU
/// per request without the agent. With both cores saturated the throughput
/// ratio that cost allows is base / (base + cost).
fn summarise(name: &str, s: &Series, timed: &AgentRun, base_ns: f64) -> Value {
    let probe_ns_per_request = timed.probe_ns_per_request();
    let probe_runs_per_request = timed.probe_runs / timed.requests();
    let probe_ns_per_run = timed.probe_s * 1e9 / timed.probe_runs.max(1.0);
    let agent_ns_per_request = timed.agent_ns_per_request();
    let ratio_from_cost = base_ns / (base_ns + probe_ns_per_request + agent_ns_per_request);
    println!(
        "bench: overhead: scope {name:<6} probes {probe_ns_per_request:.0} ns per request in the kernel ({probe_runs_per_request:.2} runs of {probe_ns_per_run:.0} ns), agent {agent_ns_per_request:.0} ns, against {base_ns:.0} ns of CPU per request without the agent: ratio {ratio_from_cost:.3} from cost"
    );
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({
        "scope": name,
        "throughput_ratio": mean(&s.tput),
        "throughput_ratio_median": median(&s.tput),
        "throughput_ratio_min": min(&s.tput),
        "throughput_ratio_max": max(&s.tput),
        "throughput_ratio_from_cost": ratio_from_cost,
        "agent_ns_per_request_timed_run": agent_ns_per_request,
        "agent_ns_per_request_min": min(&s.agent_ns),
        "agent_ns_per_request_max": max(&s.agent_ns),
        "p99_ratio": mean(&s.p99),
        "p99_ratio_median": median(&s.p99),
        "agent_cores_per_10k_rps": mean(&s.cores_per_10k),
        "agent_cpu_us_per_request": mean(&s.cores_per_10k) * 100.0,
        "probe_ns_per_request": probe_ns_per_request,
        "probe_runs_per_request": probe_runs_per_request,
        "probe_ns_per_run": probe_ns_per_run,
        "events_lost_timed_run": timed.lost,
        "throughput_per_sec": mean(&s.rps),
    })
}
