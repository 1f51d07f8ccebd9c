//! Peak agent memory while 10 scrapers fetch `/metrics` at once, at 10 000
//! histogram series: the memory bench's load (nginx + wrk, 1000 routes × 5
//! gray tags on both the server and the client side, exemplars on), then
//! the agent's peak RSS is reset (`/proc/PID/clear_refs` = 5) and 10
//! threads scrape together, half asking for OpenMetrics (as Prometheus
//! does) and half for Prometheus text, for 3 rounds. `VmHWM` afterwards is
//! the peak during the scrapes. With `XTASK_BENCH_SCRAPE_BASELINE` (another
//! agent binary, e.g. a release build of an older commit) that one is
//! measured right before under the same load, for a side-by-side figure.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench_kit::{AgentProc, scrape_openmetrics};
use crate::bench_memory::{
    GRAY_TAGS, OtlpSink, PERIOD_SECS, ROUTES, agent_yaml, count_series, mem_of, mib, routes_setup,
    wrk_routes,
};
use testbed::nginx::Nginx;

pub const SCRAPERS: usize = 10;
const ROUNDS: usize = 3;

/// One scrape's outcome: HTTP status and body bytes.
fn scrape(port: u16, openmetrics: bool) -> Result<(u16, usize)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let accept = if openmetrics {
        "Accept: application/openmetrics-text;version=1.0.0\r\n"
    } else {
        ""
    };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n{accept}\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP response head")?;
    let head = String::from_utf8_lossy(&out[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((status, out.len() - head_end - 4))
}

struct Run {
    series: usize,
    rss_before_mib: f64,
    peak_mib: f64,
    om_bytes: usize,
    text_bytes: usize,
    answered: usize,
    busy: usize,
    wall: f64,
}

impl Run {
    fn json(&self, bin: &Path) -> serde_json::Value {
        json!({"agent": bin.display().to_string(), "series": self.series,
            "rss_before_mib": self.rss_before_mib, "peak_rss_mib": self.peak_mib,
            "peak_over_before_mib": self.peak_mib - self.rss_before_mib,
            "openmetrics_body_mib": self.om_bytes as f64 / 1048576.0,
            "text_body_mib": self.text_bytes as f64 / 1048576.0,
            "answered_200": self.answered, "answered_503": self.busy,
            "scrape_wall_seconds": self.wall})
    }

    fn summary(&self) -> String {
        format!(
            "{} series, bodies {:.1} MiB OpenMetrics / {:.1} MiB text; RSS {:.1} MiB before, peak {:.1} MiB during {} × {SCRAPERS} parallel scrapes ({} answered 200, {} 503) in {:.1} s",
            self.series,
            self.om_bytes as f64 / 1048576.0,
            self.text_bytes as f64 / 1048576.0,
            self.rss_before_mib,
            self.peak_mib,
            ROUNDS,
            self.answered,
            self.busy,
            self.wall
        )
    }
}

fn measure(bin: &Path, nginx: &Nginx, script: &Path, dir: &Path) -> Result<Run> {
    let sink = OtlpSink::start()?;
    let agent = AgentProc::start_with(bin, &agent_yaml(sink.port, dir))?;
    let pid = agent.pid();
    let out = wrk_routes(nginx, script)?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(Duration::from_secs(2 * PERIOD_SECS + 1));
    let text = scrape_openmetrics(agent.port, "/metrics")?;
    let series = count_series(&text, "http_server_request_duration_seconds", "nginx").series
        + count_series(&text, "http_client_request_duration_seconds", "wrk").series;
    drop(text);
    // Let a cached body age out, then measure from a clean peak.
    std::thread::sleep(Duration::from_secs(2));
    let before = mem_of(pid)?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("resetting the agent's peak RSS (clear_refs)")?;
    let t0 = Instant::now();
    let (mut answered, mut busy, mut om_bytes, mut text_bytes) = (0, 0, 0, 0);
    for _ in 0..ROUNDS {
        let threads: Vec<_> = (0..SCRAPERS)
            .map(|i| {
                let port = agent.port;
                std::thread::spawn(move || (i % 2 == 0, scrape(port, i % 2 == 0)))
            })
            .collect();
        for t in threads {
            let (om, r) = t.join().map_err(|_| anyhow::anyhow!("scraper panicked"))?;
            match r? {
                (200, n) => {
                    answered += 1;
                    if om {
                        om_bytes = n;
                    } else {
                        text_bytes = n;
                    }
                }
                (503, _) => busy += 1,
                (code, _) => bail!("/metrics answered {code}"),
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let after = mem_of(pid)?;
    drop(sink);
    Ok(Run {
        series,
        rss_before_mib: mib(before.rss_kib),
        peak_mib: mib(after.hwm_kib),
        om_bytes,
        text_bytes,
        answered,
        busy,
        wall,
    })
}

/// Runs the bench and writes `scrape_parallel.json`.
pub fn run() -> Result<()> {
    let runs = routes_setup("scrape", "XTASK_BENCH_SCRAPE_BASELINE")?.side_by_side(
        "scrape",
        |bin, nginx, script, dir, _| measure(bin, nginx, script, dir),
        Run::summary,
    )?;
    let run = &runs.run;
    let mut value = json!({
        "name": "scrape_parallel",
        "scrapers": SCRAPERS,
        "rounds": ROUNDS,
        "routes": ROUTES,
        "gray_tags": GRAY_TAGS,
        "throughput_per_sec": run.peak_mib - run.rss_before_mib,
        "unit": "MiB peak RSS over RSS before, 10 parallel scrapes",
    });
    runs.add_runs(&mut value, Run::json)?;
    if let Some((_, r)) = &runs.baseline {
        value["peak_over_before_ratio_to_baseline"] =
            json!((run.peak_mib - run.rss_before_mib) / (r.peak_mib - r.rss_before_mib));
    }
    let path = crate::bench::write_bench_json("scrape_parallel", &value)?;
    println!("bench: scrape: {} -> {}", run.summary(), path.display());
    Ok(())
}
