//! Traffic generator for the integration tests, run as a separate process so
//! its connections have their own owner (the agent attributes by process).
//! Copy it under another file name to get another `comm`.
//!
//!   tcpgen refused ADDR COUNT        connect COUNT times to a closed port
//!   tcpgen connect ADDR COUNT        connect and close COUNT times
//!   tcpgen send ADDR BYTES           connect once and write BYTES bytes
//!   tcpgen sink ADDR SECONDS         accept and discard for at most SECONDS
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "refused" | "connect" => {
            let addr = arg(2);
            let n: u64 = arg(3).parse()?;
            let mut ok = 0u64;
            let mut refused = 0u64;
            for _ in 0..n {
                match TcpStream::connect(&addr) {
                    Ok(_) => ok += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                    Err(e) => anyhow::bail!("connect {addr}: {e}"),
                }
            }
            println!("ok={ok} refused={refused}");
        }
        "send" => {
            let mut s = TcpStream::connect(arg(2))?;
            let total: u64 = arg(3).parse()?;
            let buf = vec![0x5au8; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                let n = ((total - sent) as usize).min(buf.len());
                s.write_all(&buf[..n])?;
                sent += n as u64;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            println!("sent={sent}");
        }
        "sink" => {
            let l = TcpListener::bind(arg(2))?;
            let secs: u64 = arg(3).parse()?;
            l.set_nonblocking(true)?;
            let t0 = Instant::now();
            let mut buf = vec![0u8; 256 * 1024];
            while t0.elapsed() < Duration::from_secs(secs) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)?;
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        other => anyhow::bail!("unknown mode {other:?}; see the source header"),
    }
    Ok(())
}
