//! Running the agent: probes, the ring-buffer reader thread, the pipeline
//! thread, the metrics endpoint, and a clean shutdown on SIGTERM/SIGINT.
//!
//! Threads, not tasks, for the hot path: the reader only copies records into
//! batches and never blocks on the pipeline (a full channel drops the batch
//! and counts it); the pipeline is CPU-bound synchronous work.
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use agent_common::KernelCounter;
use aya::maps::{MapData, RingBuf};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::metrics::{MetricsState, ReasonLabels, SelfMetrics, lost};
use crate::pipeline::Pipeline;
use crate::probes::{ProbeError, Probes};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
}

/// Records per batch handed from the reader to the pipeline.
const BATCH_RECORDS: usize = 256;

/// Raw records copied out of the ring buffer, back to back.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl Batch {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0usize;
        self.ends.iter().map(move |&e| {
            let r = &self.data[start..e as usize];
            start = e as usize;
            r
        })
    }
}

/// Run until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sloguard-rt")
        .build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let self_metrics = SelfMetrics::default();
    self_metrics.register(&mut registry);
    let pipeline = Pipeline::new(&cfg, &mut registry, self_metrics.clone());

    // Bind before loading probes so a port clash fails fast and cheaply.
    let listener = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .map_err(|source| RunError::MetricsBind {
            addr: cfg.metrics.listen,
            source,
        })?;
    let ready = Arc::new(AtomicBool::new(false));
    let state = MetricsState {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::metrics::serve_on(listener, state, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    tracing::info!(listen = %cfg.metrics.listen, "metrics endpoint up");

    let mut probes = Probes::load(&cfg.probes)?;
    let ring = probes.take_ring_buffer()?;
    self_metrics.probes_attached.set(probes.attached() as i64);
    tracing::info!(programs = probes.attached(), "probes attached");

    let stop = Arc::new(AtomicBool::new(false));
    let cap = (cfg.probes.channel_capacity / BATCH_RECORDS).max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(cap);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel::<Batch>(cap + 2);
    let channel_lost = self_metrics
        .lost
        .get_or_create(&ReasonLabels {
            reason: lost::CHANNEL_FULL,
        })
        .clone();
    let reader = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("sloguard-reader".into())
            .spawn(move || read_loop(ring, tx, recycle_rx, channel_lost, stop))?
    };
    let worker = std::thread::Builder::new()
        .name("sloguard-pipeline".into())
        .spawn(move || pipeline_loop(pipeline, rx, recycle_tx))?;
    ready.store(true, Ordering::Relaxed);

    // Kernel-side losses are read from the probes' counter map.
    let ringbuf_lost = self_metrics
        .lost
        .get_or_create(&ReasonLabels {
            reason: lost::RINGBUF_FULL,
        })
        .clone();
    let mut reported_full = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let full = probes.kernel_counter(KernelCounter::RingbufFull);
                ringbuf_lost.inc_by(full.saturating_sub(reported_full));
                reported_full = full;
            }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
        }
    }

    ready.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    // Detach every program before anything else: no probe outlives the agent.
    drop(probes);
    let _ = reader.join();
    let _ = worker.join();
    let _ = stop_tx.send(true);
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

fn read_loop(
    mut ring: RingBuf<MapData>,
    tx: SyncSender<Batch>,
    recycle: Receiver<Batch>,
    lost_counter: Counter,
    stop: Arc<AtomicBool>,
) {
    let fd = ring.as_raw_fd();
    let mut batch = Batch::default();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a timeout lets us notice `stop`.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        while let Some(item) = ring.next() {
            batch.data.extend_from_slice(&item);
            batch.ends.push(batch.data.len() as u32);
            drop(item);
            if batch.ends.len() >= BATCH_RECORDS {
                batch = send_batch(&tx, &recycle, batch, &lost_counter);
            }
        }
        if !batch.ends.is_empty() {
            batch = send_batch(&tx, &recycle, batch, &lost_counter);
        }
    }
}

/// Hand a batch to the pipeline without blocking; returns an empty batch
/// to fill next (recycled when possible).
fn send_batch(
    tx: &SyncSender<Batch>,
    recycle: &Receiver<Batch>,
    batch: Batch,
    lost_counter: &Counter,
) -> Batch {
    match tx.try_send(batch) {
        Ok(()) => recycle.try_recv().unwrap_or_default(),
        Err(TrySendError::Full(mut b)) | Err(TrySendError::Disconnected(mut b)) => {
            lost_counter.inc_by(b.ends.len() as u64);
            b.clear();
            b
        }
    }
}

fn pipeline_loop(mut pipeline: Pipeline, rx: Receiver<Batch>, recycle: SyncSender<Batch>) {
    let mut last_tick = std::time::Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(mut batch) => {
                for r in batch.records() {
                    pipeline.handle_record(r);
                }
                batch.clear();
                let _ = recycle.try_send(batch);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            pipeline.tick();
            last_tick = std::time::Instant::now();
        }
    }
    pipeline.tick();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_records_round_trip() {
        let mut b = Batch::default();
        for r in [&b"abc"[..], b"", b"defgh"] {
            b.data.extend_from_slice(r);
            b.ends.push(b.data.len() as u32);
        }
        let got: Vec<&[u8]> = b.records().collect();
        assert_eq!(got, vec![&b"abc"[..], b"", b"defgh"]);
    }
}
