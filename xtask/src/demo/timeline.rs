//! The demo's timeline: healthy, fault, L2 + fuse, lift, half-open, closed;
//! printed as it happens and judged against time bounds.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::peers::{FAULTY_PATH, Proc};
use super::traffic::{self, Load, ReceivedAlert};

const L2: &str = "SloguardP99SpikeWith5xxBurst";
const GRAY_ROLLBACK: &str = "SloguardGrayRollback";
/// The fused route as the agent names it (service from the port rule).
const SERVICE: &str = "shop";
/// Fault onset to L2 webhook and to the fuse opening, at most.
const DETECT_WITHIN: Duration = Duration::from_secs(30);
/// How long the fault stays after the fuse opened (shows the gateway answering).
const HOLD_FAULT: Duration = Duration::from_secs(5);
/// Lifting the fault to the route closed again, at most (open_for is 10 s).
const RECOVER_WITHIN: Duration = Duration::from_secs(45);
/// Shown after recovery: the fused count no longer grows.
const TAIL: Duration = Duration::from_secs(6);

pub struct Setup<'a> {
    pub healthy: Duration,
    pub fault: &'a Path,
    pub metrics_port: u16,
    pub load: &'a Load,
    pub alerts: &'a Receiver<Result<Vec<ReceivedAlert>, String>>,
}

#[derive(Default)]
pub struct Summary {
    pub duration: Duration,
    pub requests: Vec<(&'static str, [u64; 4])>,
    pub alerts: Vec<ReceivedAlert>,
    /// (seconds since the load started, state) of the shop's faulty route.
    pub transitions: Vec<(f64, String)>,
    pub fault_at: Option<f64>,
    pub lifted_at: Option<f64>,
    pub l2_at: Option<f64>,
    /// The snapshot id the L2 alert carried.
    pub l2_snapshot: Option<String>,
    /// The shop's canary cohort raised the gray rollback alert.
    pub rollback_at: Option<f64>,
    pub open_at: Option<f64>,
    pub half_open_at: Option<f64>,
    pub closed_at: Option<f64>,
    pub resolved_at: Option<f64>,
    /// Fused answers counted after the route left `open`.
    pub fused_after_open: u64,
    pub failure: Option<String>,
}

fn stamp(t: f64) -> String {
    format!("[{:>2}:{:04.1}]", (t / 60.0) as u64, t % 60.0)
}

pub fn run(s: &Setup<'_>, procs: &mut [&mut Proc]) -> Result<Summary> {
    let t0 = Instant::now();
    let since = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
    let now = || t0.elapsed().as_secs_f64();
    let say = |m: String| println!("{} {m}", stamp(now()));
    let orders = s
        .load
        .counters_of(FAULTY_PATH)
        .expect("faulty path is loaded");
    let mut sum = Summary::default();
    let mut states: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut last_scrape = Instant::now() - Duration::from_secs(5);
    let mut last_report = Instant::now();
    let (mut last_total, mut last_orders) = (0u64, [0u64; 3]);
    let mut fused_at_leave_open = None;
    let mut done_at: Option<f64> = None;
    let mut scrape_failed = false;
    let healthy = s.healthy.as_secs_f64();
    let hard_end =
        healthy + DETECT_WITHIN.as_secs_f64() * 2.0 + RECOVER_WITHIN.as_secs_f64() + 30.0;
    say(format!(
        "load started: 5 paths (one a canary) x 4 keep-alive clients x 6 req/s through nginx; healthy for {} s while the agent learns the baseline",
        s.healthy.as_secs()
    ));
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if super::interrupted() {
            bail!("interrupted");
        }
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        let t = now();

        // Alerts as they arrive.
        while let Ok(msg) = s.alerts.try_recv() {
            match msg {
                Ok(list) => {
                    for a in list {
                        let when = since(a.at);
                        println!(
                            "{} ALERT {:<8} {} {} {} {} | {}",
                            stamp(when),
                            a.status,
                            a.alertname,
                            a.service,
                            a.method,
                            a.route,
                            if a.status == "firing" { &a.summary } else { "" }
                        );
                        if a.status == "firing" && !a.diagnosis.is_empty() {
                            println!("{:>10} diagnosis: {}", "", a.diagnosis);
                        }
                        if a.status == "firing" && !a.snapshot_id.is_empty() {
                            println!(
                                "{:>10} snapshots: {} (sloguard snapshots get {} / diff {})",
                                "", a.snapshot_id, a.snapshot_id, a.snapshot_id
                            );
                        }
                        let ours =
                            a.alertname == L2 && a.service == SERVICE && a.route == FAULTY_PATH;
                        if ours && a.status == "firing" && sum.l2_at.is_none() {
                            sum.l2_at = Some(when);
                            sum.l2_snapshot = Some(a.snapshot_id.clone()).filter(|s| !s.is_empty());
                        }
                        if a.alertname == GRAY_ROLLBACK
                            && a.service == SERVICE
                            && a.status == "firing"
                            && sum.rollback_at.is_none()
                        {
                            sum.rollback_at = Some(when);
                        }
                        if ours && a.status == "resolved" && sum.l2_at.is_some() {
                            sum.resolved_at = Some(when);
                        }
                        sum.alerts.push(a);
                    }
                }
                Err(e) => say(format!("webhook receiver got a bad message: {e}")),
            }
        }

        // Fuse state from the agent's metrics, once a second.
        if last_scrape.elapsed() >= Duration::from_secs(1) {
            last_scrape = Instant::now();
            let scrape = traffic::get(s.metrics_port, "/metrics");
            if let Err(e) = &scrape
                && !scrape_failed
            {
                scrape_failed = true;
                say(format!(
                    "cannot scrape the agent's /metrics (fuse state): {e:#}"
                ));
            }
            if let Ok((200, text)) = scrape {
                for (key, state) in traffic::fuse_states(&text) {
                    let prev = states.get(&key).cloned().unwrap_or_else(|| "closed".into());
                    if prev != state && key.0 == SERVICE {
                        let fused = orders.fused.load(Ordering::Relaxed);
                        say(format!(
                            "FUSE  {} {} {}: {prev} -> {state}{}",
                            key.0,
                            key.1,
                            key.2,
                            match state.as_str() {
                                "open" => " (nginx map rewritten + reloaded: the gateway answers 503 itself)".to_string(),
                                "half_open" => format!(" (map cleared: traffic reaches the shop again; {fused} fused answers so far)"),
                                _ => String::new(),
                            }
                        ));
                        if key.2 == FAULTY_PATH {
                            sum.transitions.push((t, state.clone()));
                            match state.as_str() {
                                "open" if sum.open_at.is_none() => sum.open_at = Some(t),
                                "half_open" if sum.open_at.is_some() => {
                                    sum.half_open_at.get_or_insert(t);
                                    fused_at_leave_open.get_or_insert(fused);
                                }
                                "closed" if sum.half_open_at.is_some() => {
                                    sum.closed_at.get_or_insert(t);
                                }
                                _ => {}
                            }
                        }
                    }
                    states.insert(key, state);
                }
            }
        }

        // Load every 5 s during the incident, every 10 s while healthy.
        let every = if sum.fault_at.is_some() { 5 } else { 10 };
        if last_report.elapsed() >= Duration::from_secs(every) {
            let secs = last_report.elapsed().as_secs_f64();
            last_report = Instant::now();
            let total = s.load.total();
            let o = [
                orders.ok.load(Ordering::Relaxed),
                orders.failed.load(Ordering::Relaxed),
                orders.fused.load(Ordering::Relaxed),
            ];
            say(format!(
                "load {:>4.0} req/s | /api/orders last {every}s: {:>3} ok, {:>3} 5xx from shop, {:>3} fused by nginx",
                (total - last_total) as f64 / secs,
                o[0] - last_orders[0],
                o[1] - last_orders[1],
                o[2] - last_orders[2],
            ));
            last_total = total;
            last_orders = o;
        }

        // The script.
        if sum.fault_at.is_none() && t >= healthy {
            std::fs::write(s.fault, "")?;
            // The canary stays bad to the end: only a rollback would fix it.
            std::fs::write(s.fault.with_extension("canary"), "")?;
            sum.fault_at = Some(t);
            say("FAULT injected: /api/orders now takes 300 ms and fails 40 % of the time".into());
            say("FAULT injected: the canary of /api/search (?gray=version:canary) takes 300 ms and fails half the time".into());
        }
        if let (Some(f), None) = (sum.fault_at, sum.lifted_at) {
            if let Some(open) = sum.open_at
                && t >= open + HOLD_FAULT.as_secs_f64()
            {
                std::fs::remove_file(s.fault)?;
                sum.lifted_at = Some(t);
                say(
                    "FAULT lifted: /api/orders is fast and healthy again (still fused at nginx)"
                        .into(),
                );
            } else if t > f + DETECT_WITHIN.as_secs_f64() {
                let what = if sum.l2_at.is_none() {
                    "L2 webhook"
                } else {
                    "fuse open"
                };
                sum.failure = Some(format!(
                    "no {what} within {} s of the fault",
                    DETECT_WITHIN.as_secs()
                ));
                break;
            }
        }
        if let Some(l) = sum.lifted_at {
            let recovered =
                sum.closed_at.is_some() && sum.resolved_at.is_some() && sum.rollback_at.is_some();
            if recovered && done_at.is_none() {
                done_at = Some(t);
                say("recovered: fuse closed and L2 resolved; watching a few more seconds".into());
            }
            if done_at.is_some_and(|d| t >= d + TAIL.as_secs_f64()) {
                break;
            }
            if !recovered && t > l + RECOVER_WITHIN.as_secs_f64() {
                sum.failure = Some(format!(
                    "no recovery within {} s of lifting the fault (half_open: {}, closed: {}, L2 resolved: {}, canary rollback alert: {})",
                    RECOVER_WITHIN.as_secs(),
                    sum.half_open_at.is_some(),
                    sum.closed_at.is_some(),
                    sum.resolved_at.is_some(),
                    sum.rollback_at.is_some()
                ));
                break;
            }
        }
        if t > hard_end {
            sum.failure = Some("the demo ran out of time".into());
            break;
        }
    }
    if let Some(f) = fused_at_leave_open {
        sum.fused_after_open = orders.fused.load(Ordering::Relaxed) - f;
    }
    sum.duration = t0.elapsed();
    sum.requests = s
        .load
        .counters
        .iter()
        .map(|(p, c)| {
            (
                *p,
                [
                    c.ok.load(Ordering::Relaxed),
                    c.failed.load(Ordering::Relaxed),
                    c.fused.load(Ordering::Relaxed),
                    c.other.load(Ordering::Relaxed),
                ],
            )
        })
        .collect();
    Ok(sum)
}

impl Summary {
    pub fn print(&self) {
        println!();
        println!(
            "summary ({} of traffic):",
            crate::util::fmt_duration(self.duration)
        );
        for (p, [ok, failed, fused, other]) in &self.requests {
            println!(
                "  {p:<40} {ok:>6} ok {failed:>5} 5xx {fused:>5} fused by nginx {other:>4} other"
            );
        }
        let firing = self.alerts.iter().filter(|a| a.status == "firing").count();
        println!(
            "  alerts received: {firing} firing, {} resolved",
            self.alerts.len() - firing
        );
        let rel = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.1} s", b - a),
            _ => "-".into(),
        };
        println!(
            "  fault -> L2 webhook {}, fault -> fuse open {}, lift -> half_open {}, lift -> closed {}",
            rel(self.fault_at, self.l2_at),
            rel(self.fault_at, self.open_at),
            rel(self.lifted_at, self.half_open_at),
            rel(self.lifted_at, self.closed_at),
        );
        println!(
            "  fault -> gray rollback of the {SERVICE} canary (version=canary, no gray configuration) {}",
            rel(self.fault_at, self.rollback_at),
        );
        let path: Vec<String> = self
            .transitions
            .iter()
            .map(|(t, s)| format!("{s} {}", stamp(*t)))
            .collect();
        println!(
            "  fuse {SERVICE} GET {FAULTY_PATH}: closed -> {}",
            path.join(" -> ")
        );
        println!(
            "  fused answers after the route left open: {}",
            self.fused_after_open
        );
    }

    /// Ok when the expected sequence happened in time and the gateway stopped
    /// answering for the route once it left `open`.
    pub fn verdict(&self) -> Result<()> {
        if let Some(f) = &self.failure {
            bail!("demo failed: {f}");
        }
        if self.requests.iter().all(|(_, c)| c[2] == 0) {
            bail!("demo failed: nginx never answered a fused request");
        }
        if self.rollback_at.is_none() {
            bail!("demo failed: the canary cohort never raised {GRAY_ROLLBACK}");
        }
        if self.fused_after_open > 0 {
            bail!(
                "demo failed: nginx answered {} requests as fused after the fuse left open",
                self.fused_after_open
            );
        }
        println!(
            "demo: OK (L2 fired, the fuse opened at the gateway, half-opened and closed, L2 resolved; the canary cohort raised the gray rollback)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_minutes_and_seconds() {
        assert_eq!(stamp(0.0), "[ 0:00.0]");
        assert_eq!(stamp(75.3), "[ 1:15.3]");
    }

    #[test]
    fn verdict_needs_the_whole_sequence() {
        let ok = Summary {
            requests: vec![("/api/orders", [10, 5, 7, 0])],
            rollback_at: Some(8.0),
            ..Summary::default()
        };
        assert!(ok.verdict().is_ok());
        let no_rollback = Summary {
            rollback_at: None,
            requests: vec![("/api/orders", [10, 5, 7, 0])],
            ..Summary::default()
        };
        assert!(
            no_rollback
                .verdict()
                .unwrap_err()
                .to_string()
                .contains("canary")
        );
        let failed = Summary {
            failure: Some("no L2".into()),
            ..Summary::default()
        };
        assert!(failed.verdict().unwrap_err().to_string().contains("no L2"));
        let never_fused = Summary {
            requests: vec![("/api/orders", [10, 5, 0, 0])],
            ..Summary::default()
        };
        assert!(never_fused.verdict().is_err());
        let leaked = Summary {
            requests: vec![("/api/orders", [10, 5, 7, 0])],
            rollback_at: Some(8.0),
            fused_after_open: 3,
            ..Summary::default()
        };
        assert!(leaked.verdict().is_err());
    }
}
