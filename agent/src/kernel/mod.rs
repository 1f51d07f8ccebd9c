//! Stage 1, the kernel boundary: loading and attaching the eBPF programs
//! (`probes`), reading their ring buffer and decoding each record into a typed
//! event (`events`), and keeping the TLS library uprobes on the files that
//! processes map (`tls`). Everything later sees only [`events::Event`].
pub mod events;
pub mod probes;
pub mod scope;
pub mod tls;
