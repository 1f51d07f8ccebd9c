//! Overhead of the probes on an HTTP server: nginx (1 worker) serving a small
//! file on loopback, `wrk -t1 -cC -dDs`, runs alternating without and with the
//! probes attached (ring buffer drained in a thread like the agent does).
//!
//! Usage: http_overhead [pairs] [seconds] [connections] [capture_http 0|1]
//! Prints one line per run and a JSON summary line.
use std::process::Command;
use std::time::Duration;

use agent_common::KernelCounter;
use anyhow::{Context as _, bail};
use sloguard::config::ProbesConfig;
use sloguard::probes::Probes;
use tests::events::Drainer;
use tests::nginx::{Nginx, NginxOptions};

fn wrk(url: &str, secs: u32, conns: u32) -> anyhow::Result<f64> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            return Ok(v.trim().parse()?);
        }
    }
    bail!("no Requests/sec in wrk output: {text}")
}

/// utime + stime of a process, in microseconds.
fn proc_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    f.get(11)
        .zip(f.get(12))
        .map(|(u, s)| (u + s) * 1_000_000 / hz)
        .unwrap_or(0)
}

/// CPU time of waited-for children (wrk) or of this process, in microseconds.
fn rusage_us(who: i32) -> u64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// One wrk run: throughput and CPU microseconds per request of nginx's worker,
/// wrk, and this process (the ring-buffer reader).
struct Run {
    rps: f64,
    nginx_us: f64,
    wrk_us: f64,
    reader_us: f64,
}

fn measured(url: &str, secs: u32, conns: u32, worker: u32) -> anyhow::Result<Run> {
    let (n0, w0, r0) = (
        proc_cpu_us(worker),
        rusage_us(libc::RUSAGE_CHILDREN),
        rusage_us(libc::RUSAGE_SELF),
    );
    let rps = wrk(url, secs, conns)?;
    let reqs = rps * secs as f64;
    Ok(Run {
        rps,
        nginx_us: (proc_cpu_us(worker) - n0) as f64 / reqs,
        wrk_us: (rusage_us(libc::RUSAGE_CHILDREN) - w0) as f64 / reqs,
        reader_us: (rusage_us(libc::RUSAGE_SELF) - r0) as f64 / reqs,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u32| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (pairs, secs, conns, capture) = (arg(1, 3), arg(2, 5), arg(3, 32), arg(4, 1));
    let nginx = Nginx::start(&NginxOptions {
        files: vec![("small.txt".into(), b"hello from nginx\n".to_vec())],
        access_log: false,
        ..Default::default()
    })?;
    let url = nginx.url("/small.txt");
    let worker = *nginx.workers().first().context("nginx worker")?;
    wrk(&url, 1, conns)?; // warm-up
    let cfg = ProbesConfig {
        capture_http: capture != 0,
        ..Default::default()
    };
    // Kernel-side run time per program, counted only while this fd is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    let (mut base, mut with) = (Vec::new(), Vec::new());
    let (mut cpu_base, mut cpu_with) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let r = measured(&url, secs, conns, worker)?;
        println!(
            "pair {pair} without probes: {:.0} req/s  cpu/req: nginx {:.2} us, wrk {:.2} us",
            r.rps, r.nginx_us, r.wrk_us
        );
        base.push(r.rps);
        cpu_base.push(r.nginx_us + r.wrk_us);

        let mut probes = Probes::load(&cfg)?;
        let drainer = Drainer::start(probes.take_ring_buffer()?);
        let r = measured(&url, secs, conns, worker)?;
        let (records, bytes) = drainer.stop();
        let full = probes.kernel_counter(KernelCounter::RingbufFull);
        println!(
            "pair {pair} with probes:    {:.0} req/s  cpu/req: nginx {:.2} us, wrk {:.2} us, reader {:.2} us; {records} records ({:.1}/req, {:.0} B avg), ring full {full}",
            r.rps,
            r.nginx_us,
            r.wrk_us,
            r.reader_us,
            records as f64 / (r.rps * secs as f64),
            bytes as f64 / records.max(1) as f64
        );
        for (name, runs, time) in probes.program_stats() {
            if runs > 0 {
                println!(
                    "    {name}: {runs} runs, {:.0} ns/run",
                    time.as_nanos() as f64 / runs as f64
                );
            }
        }
        with.push(r.rps);
        cpu_with.push(r.nginx_us + r.wrk_us + r.reader_us);
        drop(probes);
        std::thread::sleep(Duration::from_millis(200));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratio = mean(&with) / mean(&base);
    // Throughput a CPU-bound server would keep: baseline CPU per request over
    // CPU per request with the probes (and their reader). Robust to a busy host.
    let cpu_ratio = mean(&cpu_base) / mean(&cpu_with);
    println!(
        "{{\"bench\":\"http_overhead\",\"capture_http\":{capture},\"pairs\":{pairs},\"seconds\":{secs},\"connections\":{conns},\"without_rps\":{base:?},\"with_rps\":{with:?},\"ratio\":{ratio:.4},\"cpu_per_request_ratio\":{cpu_ratio:.4}}}"
    );
    Ok(())
}
