//! The agent's overhead on a real server: nginx (one worker, small static
//! file, no access log) on loopback driven by `wrk -t1 -c32 -d3s --latency`,
//! runs without and with the agent alternated (8 pairs, order swapped every
//! pair). Per run: requests/s, wrk's p99, and the agent's CPU time from
//! /proc/<pid>/stat; then one run with the kernel timing the probes, which
//! gives the cost per request and the throughput ratio that cost allows.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::util;

/// Pairs of runs without and with the agent. Consecutive runs of the same
/// load differ by up to ±6 % on this VM, so a ratio needs many short pairs.
const PAIRS: usize = 8;
const WRK_ARGS: [&str; 4] = ["-t1", "-c32", "--latency", "--timeout=5s"];
const WRK_SECS: u32 = 3;

/// One wrk run's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkFigures {
    pub requests_per_sec: f64,
    pub p99_ms: f64,
}

/// `Requests/sec:` and the 99 % line of `--latency` from wrk's output.
pub fn parse_wrk(out: &str) -> Option<WrkFigures> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| latency_ms(v.trim()))?;
    Some(WrkFigures {
        requests_per_sec: rps,
        p99_ms: p99,
    })
}

/// wrk's `123.45us`, `1.20ms`, `2.00s`, `1.00m` in milliseconds.
fn latency_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        _ => return None,
    };
    Some(n * scale)
}

/// utime + stime (clock ticks) from the text of /proc/<pid>/stat.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the `(comm)`, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn wait_http(addr: SocketAddr, path: &str, max: Duration) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 16];
            if s.read(&mut buf)
                .is_ok_and(|n| n >= 12 && &buf[9..12] == b"200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr}{path} did not answer 200 within {max:?}")
}

/// SIGTERM `child`, then SIGKILL after 10 s.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// nginx in the foreground under a temp prefix; stopped on drop.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
    prefix: PathBuf,
}

impl Nginx {
    pub(crate) fn start() -> Result<Self> {
        Self::start_with("root {p}/html;", "/index.html")
    }

    /// nginx with `server_body` (`{p}` = the prefix) in its one server block;
    /// ready when `probe` answers 200.
    pub(crate) fn start_with(server_body: &str, probe: &str) -> Result<Self> {
        let prefix =
            std::env::temp_dir().join(format!("sloguard-bench-nginx-{}", std::process::id()));
        let html = prefix.join("html");
        std::fs::create_dir_all(&html)?;
        std::fs::write(html.join("index.html"), "<html>hello sloguard</html>\n")?;
        let port = free_port()?;
        let p = prefix.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n\
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}; {body} }}\n}}\n",
            body = server_body.replace("{p}", &p.to_string())
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .context("nginx not found (cargo xtask setup installs it)")?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn nginx")?;
        let n = Self {
            child,
            port,
            prefix,
        };
        wait_http(
            format!("127.0.0.1:{port}").parse()?,
            probe,
            Duration::from_secs(10),
        )?;
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// The release agent with the default config, metrics on a free port.
pub(crate) struct AgentProc {
    pub(crate) child: Child,
    config: PathBuf,
    /// `/metrics`, `/readyz` port.
    pub(crate) port: u16,
}

impl AgentProc {
    /// The agent with `yaml` (without a `metrics:` section) as its config file,
    /// metrics and admin endpoints on free loopback ports.
    pub(crate) fn start_with(bin: &Path, yaml: &str) -> Result<Self> {
        let port = free_port()?;
        let admin = free_port()?;
        let config =
            std::env::temp_dir().join(format!("sloguard-bench-{}.yaml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "metrics:\n  listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n{yaml}"
            ),
        )?;
        let log = std::fs::File::create(config.with_extension("log"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn sloguard")?;
        let a = Self {
            child,
            config,
            port,
        };
        wait_http(
            format!("127.0.0.1:{port}").parse()?,
            "/readyz",
            Duration::from_secs(60),
        )
        .with_context(|| {
            std::fs::read_to_string(a.config.with_extension("log")).unwrap_or_default()
        })?;
        Ok(a)
    }

    /// The agent's /metrics (Prometheus text).
    pub(crate) fn scrape(&self) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    }

    /// Summed over programs: (seconds the kernel spent in them, runs), from
    /// `sloguard_probe_run_seconds_total` / `sloguard_probe_runs_total`.
    fn probe_runs(&self) -> Result<(f64, f64)> {
        let text = self.scrape()?;
        Ok((
            sum_samples(&text, "sloguard_probe_run_seconds_total"),
            sum_samples(&text, "sloguard_probe_runs_total"),
        ))
    }

    /// Events lost so far, any reason: a run that drops events costs less
    /// than one that processes them, so its ratio would flatter the agent.
    pub(crate) fn events_lost(&self) -> Result<f64> {
        Ok(sum_samples(&self.scrape()?, "sloguard_events_lost_total"))
    }

    pub(crate) fn cpu_ticks(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        cpu_ticks(&stat).context("parsing /proc/<agent>/stat")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        terminate(&mut self.child);
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(self.config.with_extension("log"));
    }
}

/// One wrk run with a freshly started agent: wrk's figures and the agent's
/// CPU, losses and (with `probes.run_time_stats` in its config) the kernel's
/// time in the probes during it.
pub(crate) struct AgentRun {
    pub(crate) wrk: WrkFigures,
    pub(crate) cpu_s: f64,
    pub(crate) wall: f64,
    pub(crate) cores: f64,
    pub(crate) per_10k: f64,
    pub(crate) lost: f64,
    /// Seconds the kernel spent in the probes, and their runs (0 unless timed).
    pub(crate) probe_s: f64,
    pub(crate) probe_runs: f64,
}

impl AgentRun {
    /// Start the agent with `yaml` as extra config, run wrk for `secs`, stop
    /// the agent.
    pub(crate) fn measure(bin: &Path, yaml: &str, port: u16, hz: f64, secs: u32) -> Result<Self> {
        let agent = AgentProc::start_with(bin, yaml)?;
        let (p0, n0) = agent.probe_runs()?;
        let before = agent.cpu_ticks()?;
        let t0 = Instant::now();
        let with = wrk_for(port, secs)?;
        let wall = t0.elapsed().as_secs_f64();
        let cpu_s = (agent.cpu_ticks()? - before) as f64 / hz;
        let (p1, n1) = agent.probe_runs()?;
        let lost = agent.events_lost()?;
        drop(agent);
        let cores = cpu_s / wall;
        Ok(Self {
            per_10k: cores / (with.requests_per_sec / 10_000.0),
            wrk: with,
            cpu_s,
            wall,
            cores,
            lost,
            probe_s: p1 - p0,
            probe_runs: n1 - n0,
        })
    }

    /// Requests served during the run.
    pub(crate) fn requests(&self) -> f64 {
        (self.wrk.requests_per_sec * self.wall).max(1.0)
    }

    /// Kernel time in the probes per request, ns.
    pub(crate) fn probe_ns_per_request(&self) -> f64 {
        self.probe_s * 1e9 / self.requests()
    }

    /// The agent's own (userspace and syscall) CPU per request, ns.
    pub(crate) fn agent_ns_per_request(&self) -> f64 {
        self.cpu_s * 1e9 / self.requests()
    }
}

pub(crate) fn wrk(port: u16) -> Result<WrkFigures> {
    wrk_for(port, WRK_SECS)
}

/// `wrk` with the bench's connections for `secs` seconds.
pub(crate) fn wrk_for(port: u16, secs: u32) -> Result<WrkFigures> {
    let out = Command::new("wrk")
        .args(WRK_ARGS)
        .arg(format!("-d{secs}s"))
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unreadable wrk output:\n{text}"))
}

/// Sum of every sample of `name` (any labels) in Prometheus text.
pub(crate) fn sum_samples(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A wrk run without the agent, and the machine's busy CPU per request in
/// it (ns): what a request costs before the agent adds anything.
pub(crate) fn wrk_without_agent(port: u16, hz: f64, secs: u32) -> Result<(WrkFigures, f64)> {
    let b0 = busy_ticks()?;
    let t0 = Instant::now();
    let w = wrk_for(port, secs)?;
    let busy_s = (busy_ticks()? - b0) as f64 / hz;
    let cpu_ns = busy_s * 1e9 / (w.requests_per_sec * t0.elapsed().as_secs_f64());
    Ok((w, cpu_ns))
}

/// Busy clock ticks of all CPUs so far (the `cpu` line of /proc/stat without
/// idle, iowait and steal).
fn busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    Ok([0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum())
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The release agent: `XTASK_BENCH_AGENT` (an already built one, saves a
/// build) or `target/release/sloguard`, built when missing.
pub(crate) fn agent_bin() -> Result<PathBuf> {
    let bin = std::env::var_os("XTASK_BENCH_AGENT").map_or_else(
        || util::target_dir().join("release/sloguard"),
        PathBuf::from,
    );
    if !bin.exists() {
        util::run(util::cargo().args(["build", "--release", "-p", "agent"]))?;
    }
    Ok(bin)
}

/// What a bench against nginx needs: the release agent, nginx after a
/// warm-up run (page cache, nginx's open-file state, CPU frequency), and the
/// clock-tick rate; `bench` names it in the error when not root.
pub(crate) fn prepare(bench: &str) -> Result<(PathBuf, Nginx, f64)> {
    if !util::is_root() {
        bail!("the {bench} bench loads eBPF programs: run as root");
    }
    let bin = agent_bin()?;
    let nginx = Nginx::start()?;
    wrk(nginx.port)?;
    Ok((bin, nginx, clock_ticks_per_sec()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUT: &str = "Running 5s test @ http://127.0.0.1:1/index.html
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   681.05us  120.11us   4.21ms   91.00%
    Req/Sec    47.10k     1.20k   49.00k    80.00%
  Latency Distribution
     50%  660.00us
     75%  700.00us
     90%  780.00us
     99%    1.23ms
  234567 requests in 5.00s, 60.00MB read
Requests/sec:  46913.40
Transfer/sec:     12.00MB
";

    #[test]
    fn wrk_output_gives_rate_and_p99() {
        let f = parse_wrk(WRK_OUT).unwrap();
        assert_eq!(f.requests_per_sec, 46913.40);
        assert!((f.p99_ms - 1.23).abs() < 1e-9);
        assert!((latency_ms("660.00us").unwrap() - 0.66).abs() < 1e-9);
        assert_eq!(latency_ms("2.00s"), Some(2000.0));
        assert_eq!(latency_ms("12"), None);
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn samples_of_a_family_are_summed() {
        let text = "# TYPE sloguard_probe_runs counter\nsloguard_probe_runs_total{program=\"a\"} 10\nsloguard_probe_runs_total{program=\"b\"} 5\nsloguard_probe_runs_totalx 99\nsloguard_probe_runs_total 1\n";
        assert_eq!(sum_samples(text, "sloguard_probe_runs_total"), 16.0);
        assert_eq!(sum_samples(text, "absent_total"), 0.0);
    }

    #[test]
    fn proc_stat_cpu_is_utime_plus_stime() {
        let stat = "1234 (sloguard (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("1 (x) S"), None);
    }
}
