//! SLO engine throughput (requests/s into `record` over 1,000 routes) and the
//! cost of closing a period; prints the engine's memory at 1,000 routes × 5
//! gray tags (RSS delta and the engine's own estimate).
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sloguard::clock::ManualClock;
use sloguard::measure::slo::{SloConfig, SloEngine, SloSample};
use sloguard::request::Endpoint;
use sloguard::request::route::RouteKey;

const ROUTES: usize = 1_000;
const TAGS: [&str; 5] = ["", "canary", "blue", "green", "beta"];

struct Req {
    route: usize,
    tag: usize,
    status: u16,
    duration_ns: u64,
    retransmits: u32,
}

fn routes() -> Vec<RouteKey> {
    (0..ROUTES)
        .map(|i| {
            RouteKey::new(
                &format!("svc-{}", i % 20),
                "GET",
                &format!("/api/v1/item{i}/{{id}}"),
            )
        })
        .collect()
}

/// Log-normal-ish latencies around a per-route median of 2..200 ms, 1 % 5xx,
/// 0.5 % with retransmits.
fn requests(n: usize, tags: usize, rng: &mut StdRng) -> Vec<Req> {
    (0..n)
        .map(|_| {
            let route = rng.random_range(0..ROUTES);
            let median_ms = 2.0 + (route % 100) as f64 * 2.0;
            let z: f64 = (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0;
            Req {
                route,
                tag: rng.random_range(0..tags),
                status: if rng.random_ratio(1, 100) { 503 } else { 200 },
                duration_ns: (median_ms * 1e6 * (z * 0.8).exp()) as u64,
                retransmits: u32::from(rng.random_ratio(1, 200)),
            }
        })
        .collect()
}

fn feed(eng: &mut SloEngine, keys: &[RouteKey], reqs: &[Req], peer: Endpoint) {
    for (i, r) in reqs.iter().enumerate() {
        eng.record(&SloSample {
            route: &keys[r.route],
            gray_tag: TAGS[r.tag],
            status: r.status,
            duration_ns: r.duration_ns,
            trace_id: Some([(i & 0xff) as u8; 16]),
            retransmits: r.retransmits,
            connect_duration_ns: None,
            peer: Some(peer),
        });
    }
}

/// CPU time of this thread: on a shared 2-core machine wall time mostly
/// measures the neighbours; CPU time is the per-core cost.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Engine memory at 1,000 routes × 5 gray tags after 40 periods of traffic
/// (baselines, histories and burn windows filled).
fn report_memory() {
    let clock = ManualClock::default();
    let keys = routes();
    let mut rng = StdRng::seed_from_u64(7);
    let reqs = requests(200_000, TAGS.len(), &mut rng);
    let peer = Endpoint {
        ip: [10, 0, 0, 1].into(),
        port: 5432,
    };
    let before = rss_bytes();
    let mut eng = SloEngine::new(SloConfig::default(), Arc::new(clock.clone()));
    for _ in 0..40 {
        feed(&mut eng, &keys, &reqs, peer);
        clock.advance(Duration::from_secs(10));
        black_box(eng.tick());
    }
    let after = rss_bytes();
    write_memory_json(
        eng.entries(),
        eng.heap_bytes(),
        after.saturating_sub(before),
    );
    eprintln!(
        "slo_engine memory: {} entries, estimate {:.1} MiB, RSS delta {:.1} MiB, process RSS {:.1} MiB",
        eng.entries(),
        eng.heap_bytes() as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
    );
}

/// `target/sloguard-bench/slo_engine__memory.json`, beside the other results
/// of `cargo xtask bench` (4.0 KiB per entry before 16-bit sketch counters:
/// 14.7 MiB estimate, 18.5 MiB RSS delta; now 12.3 and 15.6 MiB).
fn write_memory_json(entries: usize, heap: usize, rss_delta: usize) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let dir = target.join("sloguard-bench");
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let v = serde_json::json!({
        "name": "slo_engine/memory",
        "routes": ROUTES,
        "gray_tags": TAGS.len(),
        "entries": entries,
        "bytes_per_entry": heap / entries.max(1),
        "estimate_mib": mib(heap),
        "rss_delta_mib": mib(rss_delta),
        "throughput_per_sec": mib(rss_delta),
        "unit": "MiB RSS delta",
    });
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            dir.join("slo_engine__memory.json"),
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        )
    });
    if let Err(e) = written {
        eprintln!("slo_engine memory: cannot write {}: {e}", dir.display());
    }
}

fn bench(c: &mut Criterion) {
    report_memory();
    let keys = routes();
    let mut rng = StdRng::seed_from_u64(1);
    let reqs = requests(100_000, 1, &mut rng);
    let peer = Endpoint {
        ip: [10, 0, 0, 1].into(),
        port: 5432,
    };
    let clock = ManualClock::default();
    let mut eng = SloEngine::new(SloConfig::default(), Arc::new(clock.clone()));
    feed(&mut eng, &keys, &reqs, peer);

    let mut g = c.benchmark_group("slo_engine");
    g.throughput(Throughput::Elements(reqs.len() as u64));
    g.bench_function("record_1000_routes", |b| {
        b.iter(|| feed(&mut eng, &keys, black_box(&reqs), peer))
    });

    g.bench_function("record_1000_routes_cpu_time", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                feed(&mut eng, &keys, black_box(&reqs), peer);
            }
            thread_cpu() - t0
        })
    });

    let reqs5 = requests(100_000, TAGS.len(), &mut rng);
    let mut eng5 = SloEngine::new(SloConfig::default(), Arc::new(clock.clone()));
    feed(&mut eng5, &keys, &reqs5, peer);
    g.bench_function("record_1000_routes_x5_tags", |b| {
        b.iter(|| feed(&mut eng5, &keys, black_box(&reqs5), peer))
    });

    g.bench_function("record_1000_routes_x5_tags_cpu_time", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                feed(&mut eng5, &keys, black_box(&reqs5), peer);
            }
            thread_cpu() - t0
        })
    });

    // Closing one period of 5,000 entries (~2 requests each, so the close
    // dominates): elements are entries closed.
    g.throughput(Throughput::Elements(eng5.entries() as u64));
    let few = &reqs5[..10_000];
    g.bench_function("tick_5000_entries", |b| {
        b.iter(|| {
            feed(&mut eng5, &keys, few, peer);
            clock.advance(Duration::from_secs(10));
            black_box(eng5.tick())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
