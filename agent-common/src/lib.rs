//! Events that cross the ring buffer from `agent-ebpf` to `agent`.
//!
//! Every event starts with an [`EventHeader`]; its `kind` says which struct
//! follows. Layouts are `#[repr(C)]` with explicit padding so the kernel and
//! userspace agree byte for byte. Kernel pointers (`sk`, `skaddr`) travel only as
//! join keys: userspace never exports them.
#![no_std]

pub mod http_prefix;

mod data;
mod header;
mod probe_config;
mod tcp;
pub mod tp_fields;

pub use data::*;
pub use header::*;
pub use probe_config::*;
pub use tcp::*;
