//! sloguard: the userspace half of an eBPF host agent that turns kernel-observed
//! TCP and HTTP/1.x traffic into request-level SLO figures, alerts and route
//! fuses. The modules are the stages of the data flow, in order (see
//! docs/design.md for the map from each probe to its decoder, state, metric
//! and tests); every stage can be driven by synthetic events without a kernel.

// 1. Probes and ring-buffer decoding.
pub mod kernel;

// 2. The socket table and TCP signals.
pub mod conn;

// 3. Protocol trackers: bytes on a connection to completed requests.
pub mod protocol;

// 4. The request and its route, trace and service.
pub mod request;

// 5. RED metrics and the SLO engine with its detectors.
pub mod measure;

// 6. Alerts, fuses, request snapshots.
pub mod respond;

// 7. What leaves the agent: /metrics, OTLP, request logs, status, admin API.
pub mod export;

// Wiring (the pipeline thread, the runtime) and plumbing.
pub mod cli;
pub mod clock;
pub mod config;
pub mod fault;
pub mod fuzz;
pub mod log;
pub mod malloc;
pub mod pipeline;
pub mod runtime;
