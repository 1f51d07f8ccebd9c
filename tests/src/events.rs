//! Reading the probes' ring buffer in tests: decode records into owned values,
//! or drain in a background thread (benchmarks).
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_common::{EventKind, SockOwnerEvent, header_of, read_data_event, read_event};
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

fn comm(c: &[u8]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

pub fn decode(bytes: &[u8]) -> Event {
    let Some(h) = header_of(bytes) else {
        return Event::Malformed;
    };
    match EventKind::from_u32(h.kind) {
        Some(EventKind::Data) => match read_data_event(bytes) {
            Some((d, payload)) => Event::Data(Data {
                tgid: h.tgid,
                pid: h.pid,
                comm: comm(&h.comm),
                ts_ns: h.ts_ns,
                sk: d.sk,
                fd: d.fd,
                direction: d.direction,
                source: d.source,
                len: d.len,
                flags: d.flags,
                payload: payload.to_vec(),
            }),
            None => Event::Malformed,
        },
        // SAFETY: SockOwnerEvent is plain data.
        Some(EventKind::SockOwner) => match unsafe { read_event::<SockOwnerEvent>(bytes) } {
            Some(o) => Event::Owner(Owner {
                tgid: h.tgid,
                comm: comm(&h.comm),
                sk: o.sk,
            }),
            None => Event::Malformed,
        },
        _ => Event::Other(h.kind),
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

/// Reads the ring buffer in a thread the way the agent does (sleep in poll,
/// wake on data, read everything), counting records and bytes.
pub struct Drainer {
    stop: Arc<AtomicBool>,
    pub records: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drainer {
    pub fn start(mut rb: RingBuf<MapData>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (s, r, b) = (stop.clone(), records.clone(), bytes.clone());
        let thread = std::thread::spawn(move || {
            let fd = rb.as_raw_fd();
            while !s.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let ms = sloguard::probes::RING_BUFFER_POLL_MS as i32;
                unsafe { libc::poll(&mut pfd, 1, ms) };
                let (mut n, mut nb) = (0u64, 0u64);
                while let Some(item) = rb.next() {
                    n += 1;
                    nb += item.len() as u64;
                    std::hint::black_box(header_of(&item));
                }
                r.fetch_add(n, Ordering::Relaxed);
                b.fetch_add(nb, Ordering::Relaxed);
            }
        });
        Self {
            stop,
            records,
            bytes,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}
