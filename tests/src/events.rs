//! Reading the probes' ring buffer in tests: decode records into owned values.
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};

/// A decoded [`agent_common::DataEvent`].
#[derive(Clone, Debug)]
pub struct Data {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub ts_ns: u64,
    pub sk: u64,
    pub fd: i32,
    pub direction: u32,
    pub source: u32,
    pub len: u32,
    pub flags: u32,
    /// Where `payload` starts in the syscall's bytes (HTTP/2 segments).
    pub offset: u32,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Owner {
    pub tgid: u32,
    pub comm: String,
    pub sk: u64,
}

#[derive(Clone, Debug)]
pub enum Event {
    Data(Data),
    Owner(Owner),
    Other(u32),
    Malformed,
}

/// One record through the agent's own decoder (`sloguard::kernel::events::decode`),
/// kept as owned values so a test can hold many.
pub fn decode(bytes: &[u8]) -> Event {
    use sloguard::kernel::events::{self as ev, comm_str};
    match ev::decode(bytes) {
        Ok(ev::Event::Data(d)) => {
            let h = d.head.header;
            Event::Data(Data {
                tgid: h.tgid,
                pid: h.pid,
                comm: comm_str(&h.comm).into_owned(),
                ts_ns: h.ts_ns,
                sk: d.head.sk,
                fd: d.head.fd,
                direction: d.head.direction,
                source: d.head.source,
                len: d.head.len,
                flags: d.head.flags,
                offset: d.head.offset,
                payload: d.payload.to_vec(),
            })
        }
        Ok(ev::Event::SockOwner(o)) => Event::Owner(Owner {
            tgid: o.header.tgid,
            comm: comm_str(&o.header.comm).into_owned(),
            sk: o.sk,
        }),
        Ok(other) => Event::Other(other.kind() as u32),
        Err(_) => Event::Malformed,
    }
}

/// Everything in the ring buffer now.
pub fn drain(rb: &mut RingBuf<MapData>, out: &mut Vec<Event>) {
    while let Some(item) = rb.next() {
        out.push(decode(&item));
    }
}

/// Drain until nothing new arrived for `quiet` (bounded by `max`).
pub fn drain_until_quiet(rb: &mut RingBuf<MapData>, quiet: Duration, max: Duration) -> Vec<Event> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while start.elapsed() < max {
        let before = out.len();
        drain(rb, &mut out);
        if out.len() > before {
            last_new = Instant::now();
        } else if last_new.elapsed() >= quiet {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}
