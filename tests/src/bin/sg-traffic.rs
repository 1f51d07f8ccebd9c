//! Traffic for the kernel tests, from a process other than the agent's.
//!
//! ```text
//! sg-traffic serve ADDR:PORT COUNT SECS   listen, print "ready", accept COUNT
//!                                         connections (read each to EOF), print "received N..."
//! sg-traffic bulk ADDR:PORT BYTES SECS    send BYTES, print "bulk LOCAL_PORT SENT MICROS"
//! sg-traffic connect ADDR:PORT COUNT      COUNT blocking connects, one line each:
//!                                         "ok LOCAL_PORT MICROS" or "err ERRNO MICROS"
//! ```
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tests::tcp_traffic::{connect_once, send_bulk, serve};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; see the source's usage"))
    };
    let addr: SocketAddr = arg(1)?.parse().context("ADDR:PORT")?;
    let mut out = std::io::stdout().lock();
    match arg(0)? {
        "serve" => {
            let count: usize = arg(2)?.parse()?;
            let secs: u64 = arg(3)?.parse()?;
            let l = TcpListener::bind(addr)?;
            writeln!(out, "ready")?;
            out.flush()?;
            let got = serve(&l, count, Duration::from_secs(secs))?;
            let got: Vec<String> = got.iter().map(u64::to_string).collect();
            writeln!(out, "received {}", got.join(" "))?;
        }
        "bulk" => {
            let bytes: u64 = arg(2)?.parse()?;
            let secs: u64 = arg(3)?.parse()?;
            let r = send_bulk(addr, bytes, Duration::from_secs(secs))?;
            writeln!(
                out,
                "bulk {} {} {}",
                r.local_port,
                r.sent,
                r.duration.as_micros()
            )?;
        }
        "connect" => {
            let count: usize = arg(2)?.parse()?;
            for _ in 0..count {
                writeln!(out, "{}", connect_once(addr).to_line())?;
            }
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}
