//! The benches' toolbox: wrk runs and their figures, the release agent as a
//! process with its CPU and probe time, nginx after a warm-up, medians. The
//! benches (`bench_overhead`, `bench_stages`, `bench_memory`, `bench_scrape`,
//! `bench_slowclients`) import from here and not from each other; the peer
//! processes themselves (nginx, the agent, ports) are the `testbed` crate's,
//! the same the integration tests run.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use testbed::agent::{Agent, http_get};
use testbed::nginx::{Nginx, NginxOptions};

use crate::util;

pub(crate) const WRK_ARGS: [&str; 4] = ["-t1", "-c32", "--latency", "--timeout=5s"];
pub(crate) const WRK_SECS: u32 = 3;

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

/// nginx as every bench runs it: one worker, no access log, sendfile off
/// (nginx's default), `index.html` at the root; `server_extra` adds
/// locations.
pub(crate) fn bench_nginx(server_extra: &str) -> Result<Nginx> {
    Nginx::start(&NginxOptions {
        server_extra: server_extra.into(),
        ..bench_nginx_options()
    })
}

fn bench_nginx_options() -> NginxOptions {
    NginxOptions {
        workers: 1,
        sendfile: false,
        access_log: false,
        files: vec![(
            "index.html".into(),
            b"<html>hello sloguard</html>\n".to_vec(),
        )],
        ..NginxOptions::default()
    }
}

/// The agent under a bench: `testbed`'s agent process on a given binary,
/// with an admin port of its own, plus what the benches read from it.
pub(crate) struct AgentProc {
    agent: Agent,
    /// `/metrics`, `/readyz` port.
    pub(crate) port: u16,
}

impl AgentProc {
    /// The agent with `yaml` (without `metrics:` or `admin:` sections) as
    /// its config file, metrics and admin endpoints on free loopback ports.
    pub(crate) fn start_with(bin: &Path, yaml: &str) -> Result<Self> {
        let admin = testbed::env::free_port();
        let agent = Agent::start_bin(
            bin,
            &format!("admin:\n  listen: 127.0.0.1:{admin}\n{yaml}"),
            &[],
        )?;
        let port = agent.metrics.port();
        Ok(Self { agent, port })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.agent.pid()
    }

    /// The agent's /metrics (Prometheus text).
    pub(crate) fn scrape(&self) -> Result<String> {
        self.agent.scrape()
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        cpu_ticks(&stat).context("parsing /proc/<agent>/stat")
    }
}

/// `GET path` on the agent's metrics port as Prometheus asks (OpenMetrics,
/// with exemplars): the body.
pub(crate) fn scrape_openmetrics(port: u16, path: &str) -> Result<String> {
    match http_get(
        ([127, 0, 0, 1], port).into(),
        path,
        Some("application/openmetrics-text;version=1.0.0"),
    )? {
        (200, body) => Ok(body),
        (code, body) => bail!("{path} answered {code}: {body}"),
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
    pub(crate) fn measure(bin: &Path, yaml: &str, url: &str, hz: f64, secs: u32) -> Result<Self> {
        let agent = AgentProc::start_with(bin, yaml)?;
        let (p0, n0) = agent.probe_runs()?;
        let before = agent.cpu_ticks()?;
        let t0 = Instant::now();
        let with = wrk_for(url, secs)?;
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

/// `wrk` with the bench's connections for `secs` seconds on `url`.
pub(crate) fn wrk_for(url: &str, secs: u32) -> Result<WrkFigures> {
    let out = Command::new("wrk")
        .args(WRK_ARGS)
        .arg(format!("-d{secs}s"))
        .arg(url)
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
pub(crate) fn wrk_without_agent(url: &str, hz: f64, secs: u32) -> Result<(WrkFigures, f64)> {
    let b0 = busy_ticks()?;
    let t0 = Instant::now();
    let w = wrk_for(url, secs)?;
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

/// The server a bench drives with wrk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Server {
    /// nginx over plain HTTP.
    Nginx,
    /// nginx with `ssl` (OpenSSL uprobes in the path).
    NginxTls,
    /// The Go `net/http` TLS server of the kernel_tls_go tests (Go
    /// `crypto/tls` uprobes in the path).
    GoTls,
}

impl Server {
    pub(crate) fn tls(self) -> bool {
        self != Self::Nginx
    }
}

/// The Go server, built at bench time like the tests build it.
const GO_SERVER: &str = include_str!("../../tests/tests/go/gotls_server.go");

/// A running server: nginx, or the Go server (killed on drop).
enum Running {
    Nginx(#[allow(dead_code)] Nginx),
    Go(#[allow(dead_code)] testbed::child::Spawned),
}

/// The load a bench drives: its server, its port and process name (for a
/// scope selecting it), and the URL wrk fetches.
pub(crate) struct Load {
    _server: Running,
    pub(crate) port: u16,
    pub(crate) process: &'static str,
    pub(crate) url: String,
    /// The certificate's (and the Go build's) directory, kept while the
    /// server runs.
    _dir: Option<tempfile::TempDir>,
}

/// What a bench against a server needs: the release agent, the server
/// after a warm-up run (page cache, nginx's open-file state, CPU
/// frequency), and the clock-tick rate; `bench` names it in the error when
/// not root.
pub(crate) fn prepare(bench: &str, server: Server) -> Result<(PathBuf, Load, f64)> {
    if !util::is_root() {
        bail!("the {bench} bench loads eBPF programs: run as root");
    }
    let bin = agent_bin()?;
    let load = match server {
        Server::NginxTls => {
            let dir = tempfile::tempdir()?;
            let (_ca, cert, key) = testbed::certs::make_certs(dir.path());
            let nginx = Nginx::start(&NginxOptions {
                listen_params: "ssl".into(),
                server_extra: format!(
                    "ssl_certificate {};\nssl_certificate_key {};\n",
                    cert.display(),
                    key.display()
                ),
                ..bench_nginx_options()
            })?;
            Load {
                url: format!("https://127.0.0.1:{}/index.html", nginx.port),
                port: nginx.port,
                process: "nginx",
                _server: Running::Nginx(nginx),
                _dir: Some(dir),
            }
        }
        Server::Nginx => {
            let nginx = bench_nginx("")?;
            Load {
                url: format!("http://127.0.0.1:{}/index.html", nginx.port),
                port: nginx.port,
                process: "nginx",
                _server: Running::Nginx(nginx),
                _dir: None,
            }
        }
        Server::GoTls => go_server()?,
    };
    wrk_for(&load.url, WRK_SECS)?;
    Ok((bin, load, clock_ticks_per_sec()))
}

/// Build the Go TLS server offline with the Debian toolchain (everything Go
/// writes kept in a temporary directory) and start it on a free port, one
/// OS thread running Go code (`GOMAXPROCS=1`, as nginx has one worker).
fn go_server() -> Result<Load> {
    let dir = tempfile::tempdir()?;
    let (_ca, cert, key) = testbed::certs::make_certs(dir.path());
    let src = dir.path().join("gotlsserver.go");
    std::fs::write(&src, GO_SERVER)?;
    let bin = dir.path().join("gotlsserver");
    util::run(
        Command::new("go")
            .current_dir(dir.path())
            .env("GOCACHE", dir.path().join("gocache"))
            .env("GOPATH", dir.path().join("gopath"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("CGO_ENABLED", "0")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(&src),
    )
    .context("building the Go TLS server (golang-go: cargo xtask setup)")?;
    let port = testbed::env::free_port();
    let mut cmd = Command::new(&bin);
    cmd.env("GOMAXPROCS", "1")
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg("/dev/null");
    let mut child = testbed::child::Spawned::spawn(cmd)?;
    let ready = child.line()?;
    if ready != "ready" {
        bail!("the Go TLS server said {ready:?} instead of ready");
    }
    Ok(Load {
        url: format!("https://127.0.0.1:{port}/gotls/ok"),
        port,
        process: "gotlsserver",
        _server: Running::Go(child),
        _dir: Some(dir),
    })
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
