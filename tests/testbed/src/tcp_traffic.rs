//! Bounded TCP scenarios. Each function stops by itself (byte count, connect
//! count and a deadline). The `sg-traffic` binary runs them in another process
//! (and, through `ip netns exec`, in another namespace), because the probes
//! ignore connects made by the agent's own process, which in a test is the
//! test binary.
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// What one connect did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectReport {
    /// Local port when it connected.
    pub local_port: Option<u16>,
    /// `errno` when it failed.
    pub errno: Option<i32>,
    pub duration: Duration,
}

impl ConnectReport {
    /// `ok PORT MICROS` or `err ERRNO MICROS`: the line `sg-traffic connect` prints.
    pub fn to_line(&self) -> String {
        match (self.local_port, self.errno) {
            (Some(p), _) => format!("ok {p} {}", self.duration.as_micros()),
            (None, e) => format!("err {} {}", e.unwrap_or(0), self.duration.as_micros()),
        }
    }

    pub fn parse_line(line: &str) -> Option<Self> {
        let mut f = line.split_whitespace();
        let kind = f.next()?;
        let value: i64 = f.next()?.parse().ok()?;
        let micros: u64 = f.next()?.parse().ok()?;
        let duration = Duration::from_micros(micros);
        match kind {
            "ok" => Some(Self {
                local_port: Some(u16::try_from(value).ok()?),
                errno: None,
                duration,
            }),
            "err" => Some(Self {
                local_port: None,
                errno: Some(i32::try_from(value).ok()?),
                duration,
            }),
            _ => None,
        }
    }
}

/// One blocking connect with the kernel's own SYN retry budget (so a timeout
/// is the kernel's ETIMEDOUT, not ours); the socket is closed at once.
pub fn connect_once(addr: SocketAddr) -> ConnectReport {
    let t0 = Instant::now();
    match TcpStream::connect(addr) {
        Ok(s) => ConnectReport {
            local_port: s.local_addr().ok().map(|a| a.port()),
            errno: None,
            duration: t0.elapsed(),
        },
        Err(e) => ConnectReport {
            local_port: None,
            errno: Some(e.raw_os_error().unwrap_or(0)),
            duration: t0.elapsed(),
        },
    }
}

/// Accept connections on `listener` until `count` were accepted or `within`
/// passed; each is read to EOF (bounded by the deadline) and closed. Returns
/// the bytes received per connection.
pub fn serve(listener: &TcpListener, count: usize, within: Duration) -> io::Result<Vec<u64>> {
    let deadline = Instant::now() + within;
    listener.set_nonblocking(true)?;
    let mut received = Vec::new();
    while received.len() < count && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                received.push(read_to_eof(&mut s, deadline)?);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(received)
}

fn read_to_eof(s: &mut TcpStream, deadline: Instant) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer still sending",
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// What a bulk transfer did.
#[derive(Clone, Copy, Debug)]
pub struct BulkReport {
    pub local_port: u16,
    pub sent: u64,
    pub duration: Duration,
}

/// Connect to `addr`, send `bytes`, half-close, and wait for the server's
/// close: when this returns, the server has read every byte, so no
/// retransmission of this data can still be pending.
pub fn send_bulk(addr: SocketAddr, bytes: u64, within: Duration) -> io::Result<BulkReport> {
    let t0 = Instant::now();
    let deadline = t0 + within;
    let mut s = TcpStream::connect_timeout(&addr, within)?;
    let local_port = s.local_addr()?.port();
    s.set_write_timeout(Some(within))?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "bulk send too slow",
            ));
        }
        let n = chunk.len().min((bytes - sent) as usize);
        s.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    read_to_eof(&mut s, deadline)?;
    Ok(BulkReport {
        local_port,
        sent,
        duration: t0.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_round_trip() {
        for r in [
            ConnectReport {
                local_port: Some(40000),
                errno: None,
                duration: Duration::from_micros(123),
            },
            ConnectReport {
                local_port: None,
                errno: Some(111),
                duration: Duration::from_micros(45),
            },
        ] {
            assert_eq!(ConnectReport::parse_line(&r.to_line()), Some(r));
        }
        assert_eq!(ConnectReport::parse_line("ok 70000 1"), None);
        assert_eq!(ConnectReport::parse_line("garbage"), None);
    }

    #[test]
    fn bulk_over_loopback_delivers_every_byte() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || serve(&l, 1, Duration::from_secs(10)));
        let r = send_bulk(addr, 3_000_000, Duration::from_secs(10)).unwrap();
        assert_eq!(r.sent, 3_000_000);
        assert_eq!(server.join().unwrap().unwrap(), vec![3_000_000]);
    }
}
