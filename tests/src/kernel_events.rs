//! Load the probes and collect their raw events, for tests that check what the
//! kernel side emits against ground truth (nstat, the client's own view).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_common::{TcpConnectEvent, TcpRetransmitEvent, TcpStateEvent};
use sloguard::kernel::probes::ProbesConfig;
use sloguard::kernel::probes::{ProbeError, Probes};

/// A decoded TCP event (other kinds are kept as their kind only).
#[derive(Clone, Copy, Debug)]
pub enum KernelEvent {
    Retransmit(TcpRetransmitEvent),
    Connect(TcpConnectEvent),
    State(TcpStateEvent),
    Other(u32),
}

/// Decode one ring-buffer record with the agent's own decoder; `None` when
/// it is too short for its kind or of an unknown kind.
pub fn decode(bytes: &[u8]) -> Option<KernelEvent> {
    use sloguard::kernel::events::{self as ev, Event};
    Some(match ev::decode(bytes).ok()? {
        Event::TcpRetransmit(r) => KernelEvent::Retransmit(r),
        Event::TcpConnect(c) => KernelEvent::Connect(c),
        Event::TcpState(s) => KernelEvent::State(s),
        other => KernelEvent::Other(other.kind() as u32),
    })
}

/// Attached probes plus a thread draining their ring buffer into memory.
pub struct EventRecorder {
    probes: Probes,
    events: Arc<Mutex<Vec<KernelEvent>>>,
    undecodable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl EventRecorder {
    /// Load the TCP probes (no HTTP capture) and start recording.
    pub fn start() -> Result<Self, ProbeError> {
        let cfg = ProbesConfig {
            capture_http: false,
            ..ProbesConfig::default()
        };
        let mut probes = Probes::load(&cfg)?;
        let mut ring = probes.take_ring_buffer()?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let undecodable = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ev, bad, st) = (events.clone(), undecodable.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            // Polling keeps the helper free of an async runtime; 2 ms is far
            // below what fills an 8 MiB ring with TCP-only events.
            loop {
                let done = st.load(Ordering::Acquire);
                while let Some(item) = ring.next() {
                    match decode(&item) {
                        Some(e) => ev.lock().unwrap().push(e),
                        None => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Ok(Self {
            probes,
            events,
            undecodable,
            stop,
            reader: Some(reader),
        })
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Events recorded so far.
    pub fn snapshot(&self) -> Vec<KernelEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Records too short for their kind.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Wait until `done(events)` holds or `within` passes; returns the events
    /// either way, for the caller's assertions to explain.
    pub fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[KernelEvent]) -> bool,
    ) -> Vec<KernelEvent> {
        let deadline = Instant::now() + within;
        loop {
            let evs = self.snapshot();
            if done(&evs) || Instant::now() >= deadline {
                return evs;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for EventRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `::ffff:a.b.c.d` as the probes store IPv4 addresses.
pub fn v4_mapped(a: std::net::Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

pub fn retransmits(evs: &[KernelEvent]) -> impl Iterator<Item = &TcpRetransmitEvent> {
    evs.iter().filter_map(|e| match e {
        KernelEvent::Retransmit(r) => Some(r),
        _ => None,
    })
}

pub fn connects(evs: &[KernelEvent]) -> impl Iterator<Item = &TcpConnectEvent> {
    evs.iter().filter_map(|e| match e {
        KernelEvent::Connect(c) => Some(c),
        _ => None,
    })
}

pub fn states(evs: &[KernelEvent]) -> impl Iterator<Item = &TcpStateEvent> {
    evs.iter().filter_map(|e| match e {
        KernelEvent::State(s) => Some(s),
        _ => None,
    })
}
