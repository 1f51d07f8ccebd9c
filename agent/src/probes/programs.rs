//! Every eBPF program the agent attaches: (program name in the object,
//! tracepoint category, tracepoint name). One line per program; the kernel
//! side's `#[tracepoint]` function names must match.
pub struct TracepointProgram {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// Needed for HTTP capture only (skipped when `probes.capture_http` is off).
    pub http: bool,
}

const fn tp(
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> TracepointProgram {
    TracepointProgram {
        program,
        category,
        name,
        http: false,
    }
}

#[allow(dead_code)]
const fn http_tp(
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> TracepointProgram {
    TracepointProgram {
        program,
        category,
        name,
        http: true,
    }
}

pub const TRACEPOINTS: &[TracepointProgram] = &[
    // TCP signals (kernel side: agent-ebpf/src/tcp/).
    tp("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    tp("tcp_retransmit_synack", "tcp", "tcp_retransmit_synack"),
    tp("inet_sock_set_state", "sock", "inet_sock_set_state"),
    // HTTP capture (kernel side: agent-ebpf/src/http.rs).
];
