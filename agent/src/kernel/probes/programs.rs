//! Every eBPF program the agent attaches: (program name in the object,
//! tracepoint category, tracepoint name). One line per program; the kernel
//! side's `#[tracepoint]` function names must match.
pub struct TracepointProgram {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// A raw tracepoint (`#[raw_tracepoint]`: the TP_PROTO arguments, no perf
    /// record); `category` is then only for messages.
    pub raw: bool,
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
        raw: false,
    }
}

const fn raw_tp(
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> TracepointProgram {
    TracepointProgram {
        raw: true,
        ..tp(program, category, name)
    }
}

pub const TRACEPOINTS: &[TracepointProgram] = &[
    // TCP signals (kernel side: agent-ebpf/src/tcp/).
    tp("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    tp("tcp_retransmit_synack", "tcp", "tcp_retransmit_synack"),
    tp("inet_sock_set_state", "sock", "inet_sock_set_state"),
    // HTTP capture (kernel side: agent-ebpf/src/http.rs).
    // Socket I/O: owner announcements always, HTTP capture when enabled
    // (kernel side: agent-ebpf/src/sock.rs, http.rs). `sock_forget_closed`
    // clears per-socket state so a reused socket address starts fresh.
    raw_tp("sock_recv_length", "sock", "sock_recv_length"),
    raw_tp("sock_send_length", "sock", "sock_send_length"),
    tp("sock_forget_closed", "sock", "inet_sock_set_state"),
];
