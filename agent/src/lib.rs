//! sloguard: the userspace half of an eBPF host agent that turns kernel-observed
//! TCP and HTTP/1.x traffic into request-level SLO figures, alerts and route
//! fuses. One module per box of the data flow in docs/design.md; every module can
//! be driven by synthetic events without a kernel.
pub mod admin;
pub mod alert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod events;
pub mod fault;
pub mod fuse;
pub mod fuzz;
pub mod http;
pub mod k8s;
pub mod malloc;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod probes;
pub mod red;
pub mod redact;
pub mod reqlog;
pub mod request;
pub mod route;
pub mod runtime;
pub mod service;
pub mod slo;
pub mod snapshot;
pub mod status;
pub mod tcp_stats;
pub mod trace;
