//! The agent's memory at 1000 routes × 5 gray tags: nginx (`return 200` on
//! every path) driven by wrk cycling 1000 distinct paths and 5 `X-Gray-Tag`
//! values, so both the server side (nginx) and the client side (wrk) make
//! 5000 route × tag series each. OTLP export goes to a local sink so the RED
//! buckets carry exemplars, as in a deployment with tracing on. Records the
//! agent's VmRSS / VmHWM after the load, after 2 SLO periods and after a
//! scrape of `/metrics`, with the series counts the scrape shows.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench_kit::{AgentProc, agent_bin, bench_nginx, scrape_openmetrics};
use crate::util;
use testbed::nginx::Nginx;

pub const ROUTES: usize = 1000;
pub const GRAY_TAGS: [&str; 5] = ["canary", "blue", "green", "beta", "alpha"];
/// The goal of the requirements: agent RSS at this load.
pub const GOAL_MIB: f64 = 64.0;
pub(crate) const PERIOD_SECS: u64 = 2;
pub(crate) const WRK_ARGS: [&str; 4] = ["-t2", "-c16", "-d10s", "--timeout=5s"];

/// wrk script: request `n` goes to path `n % 1000` with tag `(n / 1000) % 5`,
/// so every (route, tag) pair comes round once per 5000 requests. Path
/// segments are three letters: the id heuristic keeps them as names.
pub fn wrk_script() -> String {
    let tags = GRAY_TAGS.map(|t| format!("\"{t}\"")).join(", ");
    format!(
        r#"local paths = {{}}
for i = 0, {last} do
  local a = string.char(97 + i % 26)
  local b = string.char(97 + math.floor(i / 26) % 26)
  local c = string.char(97 + math.floor(i / 676) % 26)
  paths[i] = "/catalog/" .. c .. b .. a .. "/items"
end
local tags = {{ {tags} }}
local n = 0
request = function()
  local i = n % {routes}
  local t = math.floor(n / {routes}) % {ntags} + 1
  n = n + 1
  return wrk.format("GET", paths[i], {{ ["X-Gray-Tag"] = tags[t] }})
end
"#,
        last = ROUTES - 1,
        routes = ROUTES,
        ntags = GRAY_TAGS.len(),
    )
}

/// The agent's config for the bench (metrics and admin ports are added by
/// [`AgentProc::start_with`]).
pub(crate) fn agent_yaml(otlp_port: u16, dir: &Path) -> String {
    let tags = GRAY_TAGS.join(", ");
    let d = dir.display();
    format!(
        "routes:\n  max_per_service: {cap}\n  gray_tags: [{tags}]\n\
         slo:\n  period: {PERIOD_SECS}s\n  max_routes: {slo_cap}\n\
         otlp:\n  endpoint: http://127.0.0.1:{otlp_port}\n  protocol: http/protobuf\n\
         fuse:\n  state_file: {d}/fuse-state.json\n  audit_file: null\n",
        cap = ROUTES + 200,
        // Both sides of every route × tag, and room for other traffic.
        slo_cap = 2 * ROUTES * GRAY_TAGS.len() + 2000,
    )
}

/// VmRSS, VmHWM, RssAnon, RssFile in KiB from /proc/<pid>/status, and Pss
/// from smaps_rollup (the ring buffer's data pages, mapped twice, count once).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub pss_kib: u64,
}

pub fn parse_status(status: &str) -> Option<Mem> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
        file_kib: field("RssFile:").unwrap_or(0),
        pss_kib: field("Pss:").unwrap_or(0),
    })
}

pub(crate) fn mem_of(pid: u32) -> Result<Mem> {
    let mut s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    // Pss only; absent on kernels without smaps_rollup (then 0).
    if let Ok(r) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        s.extend(
            r.lines()
                .filter(|l| l.starts_with("Pss:"))
                .map(|l| format!("\n{l}")),
        );
    }
    parse_status(&s).context("no VmRSS/VmHWM in /proc/<agent>/status")
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn mem_json(m: Mem) -> serde_json::Value {
    json!({"rss_mib": mib(m.rss_kib), "hwm_mib": mib(m.hwm_kib),
        "rss_anon_mib": mib(m.anon_kib), "rss_file_mib": mib(m.file_kib),
        "pss_mib": mib(m.pss_kib)})
}

/// Distinct (route, gray tag) pairs and series per service in the
/// `<family>_count` lines of a Prometheus text scrape.
#[derive(Debug, Default, PartialEq)]
pub struct SeriesCount {
    pub series: usize,
    pub routes: usize,
    pub tags: usize,
}

pub fn count_series(text: &str, family: &str, service: &str) -> SeriesCount {
    let prefix = format!("{family}_count{{");
    let svc = format!("service_name=\"{service}\"");
    let (mut routes, mut tags, mut series) = (BTreeSet::new(), BTreeSet::new(), 0);
    for l in text.lines().filter(|l| l.starts_with(&prefix)) {
        if !l.contains(&svc) {
            continue;
        }
        series += 1;
        if let Some(r) = label(l, "http_route") {
            routes.insert(r);
        }
        if let Some(t) = label(l, "gray_tag") {
            tags.insert(t);
        }
    }
    SeriesCount {
        series,
        routes: routes.len(),
        tags: tags.len(),
    }
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// An OTLP/HTTP sink on loopback: answers 200 to every request and counts
/// them; stopped on drop.
pub(crate) struct OtlpSink {
    pub(crate) port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
}

impl OtlpSink {
    pub(crate) fn start() -> Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.set_nonblocking(true)?;
        let port = l.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (st, rq) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (st, rq) = (st.clone(), rq.clone());
                        std::thread::spawn(move || serve_otlp(c, &st, &rq));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            port,
            stop,
            requests,
        })
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Keep-alive HTTP/1.1: read a head, its Content-Length body, answer 200.
fn serve_otlp(c: TcpStream, stop: &AtomicBool, requests: &AtomicU64) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut w) = c.try_clone() else { return };
    let mut r = BufReader::new(c);
    while !stop.load(Ordering::Relaxed) {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len.min(64 << 20)];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let ok =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if w.write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}

/// One agent's figures under the load.
struct Run {
    requests: u64,
    wall: f64,
    otlp_requests: u64,
    server: SeriesCount,
    client: SeriesCount,
    scrape_bytes: usize,
    /// The agent's own counters from the scrape (events lost, spans).
    self_metrics: Vec<String>,
    idle: Mem,
    after_load: Mem,
    after_periods: Mem,
    after_scrape: Mem,
}

impl Run {
    /// The goal's figure: RSS after the load, after 2 periods and after a
    /// scrape (Prometheus scrapes a deployed agent all the time).
    fn rss_kib(&self) -> u64 {
        self.after_load
            .rss_kib
            .max(self.after_periods.rss_kib)
            .max(self.after_scrape.rss_kib)
    }

    fn json(&self, bin: &Path) -> serde_json::Value {
        json!({
            "agent": bin.display().to_string(),
            "requests": self.requests,
            "wall_seconds": self.wall,
            "requests_per_pair": self.requests as f64 / (ROUTES * GRAY_TAGS.len()) as f64,
            "otlp_export_requests": self.otlp_requests,
            "series": {
                "server": {"service": "nginx", "series": self.server.series, "routes": self.server.routes, "gray_tags": self.server.tags},
                "client": {"service": "wrk", "series": self.client.series, "routes": self.client.routes, "gray_tags": self.client.tags},
            },
            "metrics_scrape_bytes": self.scrape_bytes,
            "agent_counters": self.self_metrics,
            "idle": mem_json(self.idle),
            "after_load": mem_json(self.after_load),
            "after_2_periods": mem_json(self.after_periods),
            "after_scrape": mem_json(self.after_scrape),
            "rss_mib": mib(self.rss_kib()),
            "hwm_mib": mib(self.after_scrape.hwm_kib),
        })
    }

    fn summary(&self) -> String {
        format!(
            "{} requests, server {}x{} ({} series), client {}x{} ({} series); agent RSS idle {:.1} MiB, after load {:.1}, after 2 periods {:.1}, after scrape {:.1} ({} KiB OpenMetrics), HWM {:.1} MiB, PSS after 2 periods {:.1} MiB",
            self.requests,
            self.server.routes,
            self.server.tags,
            self.server.series,
            self.client.routes,
            self.client.tags,
            self.client.series,
            mib(self.idle.rss_kib),
            mib(self.after_load.rss_kib),
            mib(self.after_periods.rss_kib),
            mib(self.after_scrape.rss_kib),
            self.scrape_bytes / 1024,
            mib(self.after_scrape.hwm_kib),
            mib(self.after_periods.pss_kib),
        )
    }
}

/// Starts `bin`, drives the load through nginx, and measures.
/// wrk through nginx with the routes script (`WRK_ARGS`).
pub(crate) fn wrk_routes(nginx: &Nginx, script: &Path) -> Result<std::process::Output> {
    Command::new("wrk")
        .args(WRK_ARGS)
        .arg("-s")
        .arg(script)
        .arg(format!("http://127.0.0.1:{}/", nginx.port))
        .output()
        .context("run wrk")
}

fn measure(bin: &Path, nginx: &Nginx, script: &Path, dir: &Path, extra: &str) -> Result<Run> {
    let sink = OtlpSink::start()?;
    let agent = AgentProc::start_with(bin, &(agent_yaml(sink.port, dir) + extra))?;
    let pid = agent.pid();
    let idle = mem_of(pid)?;

    let t0 = Instant::now();
    let out = wrk_routes(nginx, script)?;
    let wall = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .with_context(|| format!("unreadable wrk output:\n{text}"))?;
    let after_load = mem_of(pid)?;
    // Two SLO periods: every entry is evaluated and its period rolled over.
    std::thread::sleep(Duration::from_secs(2 * PERIOD_SECS + 1));
    let after_periods = mem_of(pid)?;
    let scrape = scrape_openmetrics(agent.port, "/metrics")?;
    std::thread::sleep(Duration::from_millis(500));
    let after_scrape = mem_of(pid)?;
    // XTASK_BENCH_MEMORY_HOLD_SECS: keep the loaded agent for inspection
    // (gdb, heaptrack -p, /proc/<pid>/smaps) before it is stopped.
    if let Some(secs) = std::env::var("XTASK_BENCH_MEMORY_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        println!("bench: memory: agent pid {pid} held for {secs} s");
        std::thread::sleep(Duration::from_secs(secs.min(3600)));
    }
    Ok(Run {
        requests,
        wall,
        otlp_requests: sink.requests.load(Ordering::Relaxed),
        server: count_series(&scrape, "http_server_request_duration_seconds", "nginx"),
        client: count_series(&scrape, "http_client_request_duration_seconds", "wrk"),
        scrape_bytes: scrape.len(),
        self_metrics: scrape
            .lines()
            .filter(|l| {
                [
                    "sloguard_events_",
                    "sloguard_spans_",
                    "sloguard_http_events_total{event=\"exchanges\"",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_string)
            .collect(),
        idle,
        after_load,
        after_periods,
        after_scrape,
    })
}

/// What the 1000-route benches (memory, scrape) share: root, the release
/// agent and an optional baseline binary (`baseline_var`) to measure beside
/// it, a temp dir with the wrk script, nginx answering 200 on every path.
pub(crate) struct RoutesSetup {
    pub(crate) bin: PathBuf,
    pub(crate) baseline: Option<PathBuf>,
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) script: PathBuf,
    pub(crate) nginx: Nginx,
}

pub(crate) fn routes_setup(bench: &str, baseline_var: &str) -> Result<RoutesSetup> {
    if !util::is_root() {
        bail!("the {bench} bench loads eBPF programs: run as root");
    }
    let bin = agent_bin()?;
    let baseline = std::env::var_os(baseline_var).map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let script = tmp.path().join("routes.lua");
    std::fs::write(&script, wrk_script())?;
    let nginx = bench_nginx("location / { return 200 \"ok\\n\"; }")?;
    Ok(RoutesSetup {
        bin,
        baseline,
        tmp,
        script,
        nginx,
    })
}

/// A routes bench's runs: the agent under test and, when a baseline binary
/// was given, that one measured right before it under the same conditions.
pub(crate) struct SideBySide<R> {
    pub(crate) bin: PathBuf,
    pub(crate) run: R,
    pub(crate) baseline: Option<(PathBuf, R)>,
}

impl RoutesSetup {
    /// Measures the baseline (if any, told apart by `is_baseline`) and then
    /// the agent, each with `measure(binary, nginx, wrk script, dir, is_baseline)`.
    pub(crate) fn side_by_side<R>(
        self,
        bench: &str,
        measure: impl Fn(&Path, &Nginx, &Path, &Path, bool) -> Result<R>,
        summary: impl Fn(&R) -> String,
    ) -> Result<SideBySide<R>> {
        let baseline = match self.baseline {
            Some(b) => {
                let r = measure(&b, &self.nginx, &self.script, self.tmp.path(), true)?;
                println!("bench: {bench}: baseline {}: {}", b.display(), summary(&r));
                Some((b, r))
            }
            None => None,
        };
        let run = measure(&self.bin, &self.nginx, &self.script, self.tmp.path(), false)?;
        Ok(SideBySide {
            bin: self.bin,
            run,
            baseline,
        })
    }
}

impl<R> SideBySide<R> {
    /// Adds the measured run's fields (`json(run, binary)`) to a bench's JSON
    /// `value`, and the baseline's under `baseline` when one was measured.
    pub(crate) fn add_runs(
        &self,
        value: &mut serde_json::Value,
        json: impl Fn(&R, &Path) -> serde_json::Value,
    ) -> Result<()> {
        let obj = value.as_object_mut().context("JSON object")?;
        if let serde_json::Value::Object(m) = json(&self.run, &self.bin) {
            obj.extend(m);
        }
        if let Some((b, r)) = &self.baseline {
            obj.insert("baseline".into(), json(r, b));
        }
        Ok(())
    }
}

/// Runs the bench and writes `memory.json`. With
/// `XTASK_BENCH_MEMORY_BASELINE` (another agent binary, e.g. a build of an
/// older commit) that one is measured too, right before, for a side-by-side
/// figure under the same host conditions. `XTASK_BENCH_MEMORY_YAML`: config
/// appended for the measured agent only (experiments with a setting).
pub fn run() -> Result<()> {
    let extra = std::env::var("XTASK_BENCH_MEMORY_YAML").unwrap_or_default();
    let runs = routes_setup("memory", "XTASK_BENCH_MEMORY_BASELINE")?.side_by_side(
        "memory",
        |bin, nginx, script, dir, is_baseline| {
            measure(
                bin,
                nginx,
                script,
                dir,
                if is_baseline { "" } else { &extra },
            )
        },
        Run::summary,
    )?;
    let run = &runs.run;

    let met = mib(run.rss_kib()) <= GOAL_MIB;
    let mut value = json!({
        "name": "memory",
        "routes": ROUTES,
        "gray_tags": GRAY_TAGS,
        "slo_period_secs": PERIOD_SECS,
        "wrk": WRK_ARGS.join(" "),
        "extra_yaml": extra,
        "goal_rss_mib": GOAL_MIB,
        "goal_met": met,
        "throughput_per_sec": mib(run.rss_kib()),
        "unit": "MiB RSS (max of after load, after 2 periods, after scrape)",
    });
    runs.add_runs(&mut value, Run::json)?;
    let path = crate::bench::write_bench_json("memory", &value)?;
    println!(
        "bench: memory: {}; goal RSS <= {GOAL_MIB} MiB {} -> {}",
        run.summary(),
        if met { "met" } else { "NOT met" },
        path.display()
    );
    if run.server.series < ROUTES * GRAY_TAGS.len() * 9 / 10 {
        bail!(
            "only {} server series of {} expected: the load did not reach every route × tag",
            run.server.series,
            ROUTES * GRAY_TAGS.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_gives_rss_and_hwm() {
        let s = "Name:\tsloguard\nVmHWM:\t  70000 kB\nVmRSS:\t  50000 kB\nRssAnon:\t  40000 kB\nRssFile:\t 10000 kB\n";
        assert_eq!(
            parse_status(s),
            Some(Mem {
                rss_kib: 50000,
                hwm_kib: 70000,
                anon_kib: 40000,
                file_kib: 10000,
                pss_kib: 0
            })
        );
        let with_pss = format!("{s}Pss:\t  45000 kB\n");
        assert_eq!(parse_status(&with_pss).unwrap().pss_kib, 45000);
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn series_are_counted_per_service() {
        let text = "# HELP x\n\
            h_count{service_name=\"nginx\",http_request_method=\"GET\",http_route=\"/a\",http_response_status_code=\"200\",gray_tag=\"blue\"} 3\n\
            h_count{service_name=\"nginx\",http_request_method=\"GET\",http_route=\"/a\",http_response_status_code=\"200\",gray_tag=\"beta\"} 3\n\
            h_count{service_name=\"nginx\",http_request_method=\"GET\",http_route=\"/b\",http_response_status_code=\"200\",gray_tag=\"blue\"} 3\n\
            h_count{service_name=\"wrk\",http_request_method=\"GET\",http_route=\"/c\",http_response_status_code=\"200\",gray_tag=\"blue\"} 3\n\
            h_bucket{service_name=\"nginx\",http_route=\"/z\",le=\"1\"} 3\n";
        assert_eq!(
            count_series(text, "h", "nginx"),
            SeriesCount {
                series: 3,
                routes: 2,
                tags: 2
            }
        );
        assert_eq!(count_series(text, "h", "wrk").series, 1);
    }

    #[test]
    fn script_paths_stay_distinct_names() {
        let s = wrk_script();
        assert!(s.contains("for i = 0, 999 do"), "{s}");
        assert!(s.contains("\"canary\", \"blue\", \"green\", \"beta\", \"alpha\""));
    }
}
