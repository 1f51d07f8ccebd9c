//! `cargo xtask demo`: the whole story on loopback in a few minutes. A shop
//! service behind nginx takes load; after a healthy spell `/api/orders` turns
//! slow and failing; the agent's L1/L2 alerts arrive at a webhook, the fuse
//! makes nginx answer the route itself, and once the fault is lifted the route
//! goes half-open and closes again. The request snapshots frozen with the L2
//! alert are then diffed and replayed through the gateway to verify the
//! recovery. Fails when that sequence does not happen within its time bounds.
mod peers;
mod snapshots;
mod timeline;
mod traffic;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, is_root};
use peers::{AgentSetup, Proc, listening};
use testbed::env::free_port;

#[derive(Clone, Copy, Debug)]
pub struct DemoOpts {
    /// Seconds of healthy traffic before the fault (the agent learns its baseline).
    pub healthy_secs: u64,
}

/// Set by SIGINT/SIGTERM; the timeline checks it and everything is stopped.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn demo(opts: DemoOpts) -> Result<()> {
    if !is_root() {
        bail!("the demo starts the agent, which loads eBPF programs: run it as root");
    }
    for (tool, arg) in [("nginx", "-v"), ("python3", "--version")] {
        if !util::succeeds(Command::new(tool).arg(arg)) {
            bail!("the demo needs {tool} (cargo xtask setup installs it)");
        }
    }
    // SAFETY: plain handlers that only store to an atomic, installed before any thread.
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let agent_bin = crate::run::build(false)?;
    let dir = tempfile::Builder::new()
        .prefix("sloguard-demo")
        .tempdir()
        .context("creating the demo's temp dir")?;
    let result = run(opts, dir.path(), &agent_bin);
    if result.is_err() {
        // Keep the logs of a failed run for a look.
        let kept = dir.keep();
        eprintln!("demo files and logs kept in {}", kept.display());
    }
    result
}

/// Sets the flag when dropped: the load and webhook threads end with the demo,
/// whichever way it ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn run(opts: DemoOpts, dir: &Path, agent_bin: &Path) -> Result<()> {
    let say = |m: &str| println!("demo: {m}");
    let shop_port = free_port();
    let gw_port = free_port();
    let metrics_port = free_port();
    let webhook = std::net::TcpListener::bind("127.0.0.1:0")?;
    let webhook_port = webhook.local_addr()?.port();
    let fault = dir.join("fault");
    let admin_port = free_port();
    let token_file = dir.join("admin-token");
    // A fresh token per run: the admin API can fuse routes.
    let token: String = (0..4).map(|_| format!("{:016x}", rand_u64())).collect();
    std::fs::write(&token_file, format!("{token}\n"))?;

    // The shop.
    let shop_py = dir.join("shop.py");
    std::fs::write(&shop_py, peers::SHOP_PY)?;
    let mut shop = Proc::spawn(
        "shop (python3)",
        Command::new("python3")
            .arg(&shop_py)
            .arg(shop_port.to_string())
            .arg(&fault),
        dir.join("shop.log"),
        libc::SIGTERM,
    )?;
    shop.wait_until(Duration::from_secs(15), || listening(shop_port))?;
    say(&format!(
        "shop service (python3 pid {}) on 127.0.0.1:{shop_port}: /api/users/<id>, /api/orders, /api/search",
        shop.pid()
    ));

    // nginx in front; the map must exist before it starts.
    let ngx = dir.join("nginx");
    std::fs::create_dir_all(&ngx)?;
    let map = ngx.join("sloguard-fuses.map");
    std::fs::write(&map, "")?;
    let conf = ngx.join("nginx.conf");
    std::fs::write(&conf, peers::nginx_conf(&ngx, gw_port, shop_port, &map))?;
    let mut nginx = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", ngx.display()))
            .arg("-e")
            .arg(ngx.join("error.log"))
            .arg("-c")
            .arg(&conf),
        dir.join("nginx.log"),
        libc::SIGQUIT,
    )?;
    nginx.wait_until(Duration::from_secs(15), || {
        listening(gw_port) && ngx.join("nginx.pid").exists()
    })?;
    say(&format!(
        "nginx gateway (pid {}) on 127.0.0.1:{gw_port} -> shop; fused routes come from {}",
        nginx.pid(),
        map.display()
    ));

    // The webhook receiver.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let (tx, alerts) = std::sync::mpsc::channel();
    let receiver = traffic::webhook_receiver(webhook, tx, stop.clone())?;
    say(&format!(
        "webhook receiver on 127.0.0.1:{webhook_port}/alerts"
    ));

    // The agent.
    let cfg_path = dir.join("sloguard-demo.yaml");
    std::fs::write(
        &cfg_path,
        peers::agent_config(&AgentSetup {
            dir,
            metrics_port,
            shop_port,
            webhook_port,
            map: &map,
            nginx_conf: &conf,
            admin_port,
            token_file: &token_file,
        }),
    )?;
    let mut check = Command::new(agent_bin);
    check.arg("check-config").arg(&cfg_path);
    util::stdout_of(&mut check).context("the demo's agent config does not validate")?;
    let mut agent_cmd = Command::new(agent_bin);
    agent_cmd.arg("--config").arg(&cfg_path).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("SLOGUARD_") || k_str.starts_with("OTEL_") {
            agent_cmd.env_remove(&k);
        }
    }
    let mut agent = Proc::spawn(
        "sloguard",
        &mut agent_cmd,
        dir.join("agent.log"),
        libc::SIGTERM,
    )?;
    agent.wait_until(Duration::from_secs(90), || {
        traffic::get(metrics_port, "/readyz").is_ok_and(|(s, _)| s == 200)
    })?;
    say(&format!(
        "sloguard (pid {}) ready: metrics 127.0.0.1:{metrics_port}, slo.period 2s, fuse enforce via nginx map + reload",
        agent.pid()
    ));
    println!();

    let load = traffic::Load::start(gw_port, &peers::PATHS, 4, 6.0, &stop);
    let mut procs = [&mut shop, &mut nginx, &mut agent];
    let outcome = timeline::run(
        &timeline::Setup {
            healthy: Duration::from_secs(opts.healthy_secs),
            fault: &fault,
            metrics_port,
            load: &load,
            alerts: &alerts,
        },
        &mut procs,
    );

    // The operator's view of the node, taken while the agent still runs.
    let status = node_status(agent_bin, &cfg_path);

    // The frozen failed requests, replayed through the gateway once recovered.
    let replayed = match &outcome {
        Ok(sum) if sum.failure.is_none() => match &sum.l2_snapshot {
            Some(id) => {
                println!();
                let admin = snapshots::Admin {
                    agent_bin,
                    url: format!("http://127.0.0.1:{admin_port}"),
                    token_file: &token_file,
                };
                snapshots::verify_recovery(&admin, id, &format!("http://127.0.0.1:{gw_port}"), dir)
            }
            None => Err(anyhow::anyhow!("the L2 alert carried no snapshot_id")),
        },
        _ => Ok(String::new()),
    };

    stop.store(true, Ordering::SeqCst);
    load.join();
    let _ = receiver.join();
    agent.stop();
    nginx.stop();
    shop.stop();
    say("stopped the load, the agent, nginx and the shop");
    let summary = outcome?;
    summary.print();
    println!("\n$ sloguard --config {} status", cfg_path.display());
    match &status {
        Ok(text) => print!("{text}"),
        Err(e) => println!("{e}"),
    }
    summary.verdict()?;
    let replay = replayed?;
    println!("demo: OK, replay of the L2 snapshot verified the recovery: {replay}");
    status.map(|_| ())
}

/// `sloguard status` of the demo's agent (the CLI an operator would run on
/// the node); an error when it fails, since the CLI is part of the product.
fn node_status(agent_bin: &Path, cfg: &Path) -> Result<String> {
    let mut cmd = Command::new(agent_bin);
    cmd.arg("--config").arg(cfg).arg("status");
    // As for the agent: the demo's file, not the caller's overrides.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLOGUARD_") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd.output().context("run sloguard status")?;
    if !out.status.success() {
        bail!(
            "sloguard status failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// 64 random bits from the kernel (no RNG crate needed for one token).
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // Fall back to the clock: the token only guards a loopback demo.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_ne_bytes(b)
}
