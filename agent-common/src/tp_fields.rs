//! Field offsets in the tracepoint records the probes read, from
//! `/sys/kernel/tracing/events/<category>/<name>/format` on Linux 6.18. The
//! `tests` crate checks every one of them against the running kernel's format
//! files (`tests/tests/kernel_tcp.rs`, the test that walks [`ALL`]).

/// `tcp:tcp_retransmit_skb`
pub mod tcp_retransmit_skb {
    pub const SKBADDR: usize = 8;
    pub const SKADDR: usize = 16;
    pub const STATE: usize = 24;
    pub const SPORT: usize = 28;
    pub const DPORT: usize = 30;
    pub const FAMILY: usize = 32;
    pub const SADDR_V6: usize = 42;
    pub const DADDR_V6: usize = 58;
    pub const ERR: usize = 76;
}
/// `tcp:tcp_retransmit_synack`
pub mod tcp_retransmit_synack {
    pub const SKADDR: usize = 8;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const SADDR_V6: usize = 38;
    pub const DADDR_V6: usize = 54;
}
/// `sock:inet_sock_set_state`
pub mod inet_sock_set_state {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
}
/// `syscalls:sys_enter_mmap` (the TLS probes' hint that a process mapped
/// a file executable, e.g. a `dlopen`ed libssl).
pub mod sys_enter_mmap {
    pub const PROT: usize = 32;
    pub const FD: usize = 48;
}
/// Every (tracepoint, field, offset) above, for the format check.
pub const ALL: &[(&str, &str, usize)] = &[
    (
        "tcp/tcp_retransmit_skb",
        "skbaddr",
        tcp_retransmit_skb::SKBADDR,
    ),
    (
        "tcp/tcp_retransmit_skb",
        "skaddr",
        tcp_retransmit_skb::SKADDR,
    ),
    ("tcp/tcp_retransmit_skb", "state", tcp_retransmit_skb::STATE),
    ("tcp/tcp_retransmit_skb", "sport", tcp_retransmit_skb::SPORT),
    ("tcp/tcp_retransmit_skb", "dport", tcp_retransmit_skb::DPORT),
    (
        "tcp/tcp_retransmit_skb",
        "family",
        tcp_retransmit_skb::FAMILY,
    ),
    (
        "tcp/tcp_retransmit_skb",
        "saddr_v6",
        tcp_retransmit_skb::SADDR_V6,
    ),
    (
        "tcp/tcp_retransmit_skb",
        "daddr_v6",
        tcp_retransmit_skb::DADDR_V6,
    ),
    ("tcp/tcp_retransmit_skb", "err", tcp_retransmit_skb::ERR),
    (
        "tcp/tcp_retransmit_synack",
        "skaddr",
        tcp_retransmit_synack::SKADDR,
    ),
    (
        "tcp/tcp_retransmit_synack",
        "sport",
        tcp_retransmit_synack::SPORT,
    ),
    (
        "tcp/tcp_retransmit_synack",
        "dport",
        tcp_retransmit_synack::DPORT,
    ),
    (
        "tcp/tcp_retransmit_synack",
        "family",
        tcp_retransmit_synack::FAMILY,
    ),
    (
        "tcp/tcp_retransmit_synack",
        "saddr_v6",
        tcp_retransmit_synack::SADDR_V6,
    ),
    (
        "tcp/tcp_retransmit_synack",
        "daddr_v6",
        tcp_retransmit_synack::DADDR_V6,
    ),
    (
        "sock/inet_sock_set_state",
        "skaddr",
        inet_sock_set_state::SKADDR,
    ),
    (
        "sock/inet_sock_set_state",
        "oldstate",
        inet_sock_set_state::OLDSTATE,
    ),
    (
        "sock/inet_sock_set_state",
        "newstate",
        inet_sock_set_state::NEWSTATE,
    ),
    (
        "sock/inet_sock_set_state",
        "sport",
        inet_sock_set_state::SPORT,
    ),
    (
        "sock/inet_sock_set_state",
        "dport",
        inet_sock_set_state::DPORT,
    ),
    (
        "sock/inet_sock_set_state",
        "family",
        inet_sock_set_state::FAMILY,
    ),
    (
        "sock/inet_sock_set_state",
        "protocol",
        inet_sock_set_state::PROTOCOL,
    ),
    (
        "sock/inet_sock_set_state",
        "saddr_v6",
        inet_sock_set_state::SADDR_V6,
    ),
    (
        "sock/inet_sock_set_state",
        "daddr_v6",
        inet_sock_set_state::DADDR_V6,
    ),
    ("syscalls/sys_enter_mmap", "prot", sys_enter_mmap::PROT),
    ("syscalls/sys_enter_mmap", "fd", sys_enter_mmap::FD),
];
