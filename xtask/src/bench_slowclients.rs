//! The agent's memory under slow clients: 5,000 loopback connections to a
//! server this bench starts, each sending half of a 2 KiB request head and
//! then nothing. Every connection leaves an unfinished head in the agent's
//! reassembly buffers on both sides (the server's ingress and the client's
//! egress), which is what `http.max_head_buffer_bytes` bounds. Records the
//! agent's RSS idle and with every connection open, and what the agent
//! counted, for the default budget and for one too small to hold them all.
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench_kit::{AgentProc, agent_bin};
use crate::bench_memory::{mem_json, mem_of, mib};
use crate::util;

pub const CLIENTS: usize = 5_000;
/// The whole head would be this long; half of it is sent.
const HEAD_BYTES: usize = 2048;
/// Budget of the second run: room for a tenth of the partial heads.
const SMALL_BUDGET: usize = 1 << 20;

/// Half of a `HEAD_BYTES` request head for client `i` (no blank line).
pub fn half_head(i: usize) -> Vec<u8> {
    let start =
        format!("GET /slow/{i} HTTP/1.1\r\nHost: bench\r\nUser-Agent: slowclient\r\nX-Pad: ");
    let mut head = start.into_bytes();
    head.resize(HEAD_BYTES / 2, b'p');
    head
}

/// Raise the soft RLIMIT_NOFILE to the hard limit: both ends of every
/// connection live in this process.
fn raise_nofile(need: u64) -> Result<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if r.rlim_max < need {
        bail!(
            "RLIMIT_NOFILE hard limit {} < {need} (both ends of {CLIENTS} connections): raise it (ulimit -Hn)",
            r.rlim_max
        );
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        bail!(
            "setrlimit RLIMIT_NOFILE {need}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A server that accepts and holds connections, never answering.
struct HoldServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<TcpStream>>>,
}

impl HoldServer {
    fn start() -> Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.set_nonblocking(true)?;
        let port = l.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            held
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .map_or(0, |h| h.len())
    }
}

fn event(text: &str, name: &str) -> f64 {
    let prefix = format!("sloguard_http_events_total{{event=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn measure(
    bin: &std::path::Path,
    budget: Option<usize>,
    dir: &std::path::Path,
) -> Result<serde_json::Value> {
    let mut yaml = format!(
        "fuse:\n  state_file: {}/fuse-state.json\n  audit_file: null\n",
        dir.display()
    );
    if let Some(b) = budget {
        yaml.push_str(&format!("http:\n  max_head_buffer_bytes: {b}\n"));
    }
    let agent = AgentProc::start_with(bin, &yaml)?;
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(2));
    let idle = mem_of(pid)?;
    let mut server = HoldServer::start()?;
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = TcpStream::connect(("127.0.0.1", server.port))
            .with_context(|| format!("connection {i}"))?;
        c.write_all(&half_head(i))?;
        clients.push(c);
    }
    let opened = t0.elapsed().as_secs_f64();
    // Let the pipeline drain the events.
    std::thread::sleep(Duration::from_secs(3));
    let loaded = mem_of(pid)?;
    let text = agent.scrape()?;
    drop(clients);
    let held = server.stop();
    let lost = crate::bench_kit::sum_samples(&text, "sloguard_events_lost_total");
    Ok(json!({
        "budget_bytes": budget,
        "clients": CLIENTS,
        "held_by_server": held,
        "open_secs": opened,
        "idle": mem_json(idle),
        "loaded": mem_json(loaded),
        "rss_growth_mib": mib(loaded.rss_kib.saturating_sub(idle.rss_kib)),
        "head_budget_exhausted": event(&text, "head_budget_exhausted"),
        "truncated_heads": event(&text, "truncated_heads"),
        "events_lost": lost,
    }))
}

/// Runs the bench and writes `slowclients.json`: RSS with 5,000 half heads
/// open, at the default budget and at a 1 MiB one, side by side.
pub fn run() -> Result<()> {
    if !util::is_root() {
        bail!("the slow-clients bench loads eBPF programs: run as root");
    }
    raise_nofile(2 * CLIENTS as u64 + 256)?;
    let bin = agent_bin()?;
    let tmp = tempfile::tempdir()?;
    let default = measure(&bin, None, tmp.path())?;
    let small = measure(&bin, Some(SMALL_BUDGET), tmp.path())?;
    let rss = |v: &serde_json::Value| v["loaded"]["rss_mib"].as_f64().unwrap_or(0.0);
    let value = json!({
        "name": "slowclients",
        "throughput_per_sec": rss(&default),
        "unit": "MiB RSS with 5000 half request heads open (default budget)",
        "default_budget": default,
        "small_budget": small,
    });
    let path = crate::bench::write_bench_json("slowclients", &value)?;
    println!(
        "bench: slowclients: RSS {:.1} MiB (idle {:.1}) at the default budget, {:.1} MiB at {} KiB; budget-cut heads {} / {} -> {}",
        rss(&default),
        default["idle"]["rss_mib"].as_f64().unwrap_or(0.0),
        rss(&small),
        SMALL_BUDGET / 1024,
        default["head_budget_exhausted"],
        small["head_budget_exhausted"],
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_heads_are_half_and_unfinished() {
        let h = half_head(4999);
        assert_eq!(h.len(), HEAD_BYTES / 2);
        assert!(h.starts_with(b"GET /slow/4999 HTTP/1.1\r\n"));
        assert!(!h.windows(4).any(|w| w == b"\r\n\r\n"));
    }
}
