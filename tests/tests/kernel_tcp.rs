//! The TCP probes' raw events against ground truth on the real kernel: the
//! kernel's own counters (`nstat` in the sender's namespace), nftables drop
//! counters, and what the connecting process itself saw.
//!
//! Tests run in parallel: each uses its own namespaces, subnet and port, and
//! its own copy of the probes; traffic comes from `sg-traffic` child processes
//! because the probes ignore connects of the agent's own process (this one).
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use agent_common::{
    AF_INET, ConnectOutcome, KernelCounter, TcpConnectEvent, TcpRetransmitEvent, tcp_state,
};
use sloguard::kernel::probes::ProbeError;
use tests::child::Spawned;
use tests::env;
use tests::kernel_events::{EventRecorder, KernelEvent, connects, retransmits, states, v4_mapped};
use tests::netns::{NetPair, Netns, rules};
use tests::tcp_traffic::ConnectReport;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_sg-traffic");
const TOOLS: &[&str] = &["ip", "nft", "nstat", "sysctl"];

/// Probes attached and recording, or `None` when the test must be skipped.
fn recorder(test: &str) -> Option<EventRecorder> {
    if !env::ready(test, TOOLS) {
        return None;
    }
    match EventRecorder::start() {
        Ok(r) => Some(r),
        Err(e @ (ProbeError::NoBtf | ProbeError::NotPermitted { .. })) => {
            env::skip(test, &e.to_string());
            None
        }
        Err(e) => panic!("{test}: loading the probes failed: {e}"),
    }
}

fn traffic(ns: Option<&Netns>) -> std::process::Command {
    match ns {
        Some(ns) => ns.command(TRAFFIC),
        None => std::process::Command::new(TRAFFIC),
    }
}

/// Start `sg-traffic serve` and wait until it listens.
fn server(ns: Option<&Netns>, addr: &str, count: usize, secs: u64) -> Spawned {
    let mut cmd = traffic(ns);
    cmd.args(["serve", addr, &count.to_string(), &secs.to_string()]);
    let mut s = Spawned::spawn(cmd).expect("spawn server");
    assert_eq!(s.line().expect("server ready line"), "ready");
    s
}

/// Run `sg-traffic connect ADDR COUNT`; returns its pid and one report per connect.
fn connect(
    ns: Option<&Netns>,
    addr: &str,
    count: usize,
    within: Duration,
) -> (u32, Vec<ConnectReport>) {
    let mut cmd = traffic(ns);
    cmd.args(["connect", addr, &count.to_string()]);
    let c = Spawned::spawn(cmd).expect("spawn client");
    let pid = c.pid();
    let out = c.finish(within).expect("client");
    let reports = out
        .lines()
        .map(|l| ConnectReport::parse_line(l).unwrap_or_else(|| panic!("bad line {l:?}")))
        .collect();
    (pid, reports)
}

/// One connect from namespace `a` to a one-shot server in `b`, with an nft
/// input `rule` on one side first: the client's pid and report, and the
/// server namespace's `TcpRetransSegs` before the connect.
struct RuledConnect {
    net: NetPair,
    port: u16,
    pid: u32,
    report: ConnectReport,
    retrans_b_before: u64,
}

/// Where the nft rule of a [`RuledConnect`] goes.
enum RuleOn {
    Client,
    Server,
}

fn ruled_connect(prefix: &str, subnet: u8, rule_on: RuleOn, rule: &str) -> RuledConnect {
    let net = NetPair::create(prefix, subnet).expect("namespaces");
    let port = 5000 + subnet as u16;
    let addr = format!("{}:{port}", net.b_addr);
    let side = match rule_on {
        RuleOn::Client => &net.a,
        RuleOn::Server => &net.b,
    };
    side.nft_input_rule(rule).expect("nft");
    let retrans_b_before = net.b.nstat("TcpRetransSegs").expect("nstat");
    let srv = server(Some(&net.b), &addr, 1, 10);
    let (pid, mut reports) = connect(Some(&net.a), &addr, 1, Duration::from_secs(10));
    srv.finish(Duration::from_secs(5)).expect("server");
    RuledConnect {
        port,
        pid,
        report: reports.remove(0),
        retrans_b_before,
        net,
    }
}

/// The events so far, once the one connect of `pid` is among them.
fn single_connect(rec: &EventRecorder, pid: u32) -> (Vec<KernelEvent>, TcpConnectEvent) {
    let evs = rec.wait_for(Duration::from_secs(3), |evs| {
        !connects_of(evs, pid).is_empty()
    });
    let conn = connects_of(&evs, pid);
    assert_eq!(conn.len(), 1, "{conn:?}");
    let c = conn[0];
    (evs, c)
}

fn assert_established(c: &TcpConnectEvent) {
    assert_eq!(
        ConnectOutcome::from_u32(c.outcome),
        ConnectOutcome::Established,
        "{c:?}"
    );
}

fn connects_of(evs: &[KernelEvent], tgid: u32) -> Vec<TcpConnectEvent> {
    connects(evs)
        .filter(|c| c.header.tgid == tgid)
        .copied()
        .collect()
}

/// Time of the first CLOSE of the connect's socket after it connected.
fn close_of(evs: &[KernelEvent], c: &TcpConnectEvent) -> Option<u64> {
    states(evs)
        .find(|s| {
            s.sk == c.sk && s.newstate == tcp_state::CLOSE && s.header.ts_ns >= c.header.ts_ns
        })
        .map(|s| s.header.ts_ns)
}

fn comm(c: &TcpConnectEvent) -> String {
    let end = c
        .header
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(c.header.comm.len());
    String::from_utf8_lossy(&c.header.comm[..end]).into_owned()
}

/// Sum of the retransmitted segments the probes reported for a 30 MB transfer
/// with 1 in 20 packets dropped at the receiver, against `TcpRetransSegs` in
/// the sender's namespace (the only traffic there). With the veth's default
/// offloads one skb carries tens of segments.
#[test]
fn retransmit_segments_match_nstat() {
    retransmit_scenario("retransmit_segments_match_nstat", 201, None);
}

/// The same with the sender limited to one segment per GSO skb, so drops hit
/// single segments and retransmissions are small (partly coalesced) skbs.
#[test]
fn retransmit_segments_match_nstat_without_gso() {
    retransmit_scenario("retransmit_segments_match_nstat_without_gso", 205, Some(1));
}

fn retransmit_scenario(test: &str, subnet: u8, gso_max_segs: Option<u32>) {
    let Some(rec) = recorder(test) else {
        return;
    };
    let net = NetPair::create(&format!("rt{subnet}"), subnet).expect("namespaces");
    if let Some(segs) = gso_max_segs {
        net.a
            .ip(&["link", "set", "veth0", "gso_max_segs", &segs.to_string()])
            .expect("gso_max_segs");
    }
    let port = 5000 + subnet as u16;
    let addr = format!("{}:{port}", net.b_addr);
    net.b
        .nft_input_rule(&rules::drop_one_in(port, 20))
        .expect("nft");
    let before = net.a.nstat("TcpRetransSegs").expect("nstat");
    let not_sent_before = rec
        .probes()
        .kernel_counter(KernelCounter::RetransmitNotSent);

    let srv = server(Some(&net.b), &addr, 1, 25);
    let mut cmd = traffic(Some(&net.a));
    cmd.args(["bulk", &addr, "30000000", "25"]);
    let client = Spawned::spawn(cmd).expect("spawn bulk");
    let pid = client.pid();
    let out = client.finish(Duration::from_secs(28)).expect("bulk");
    let received = srv.finish(Duration::from_secs(5)).expect("server");
    assert_eq!(received.trim(), "received 30000000");
    let local: u16 = out
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("bulk line");
    // The client waited for the server's close, so its data is all acked; once
    // its socket reported CLOSE nothing more can be retransmitted on it.
    let evs = rec.wait_for(Duration::from_secs(3), |evs| {
        connects_of(evs, pid)
            .first()
            .is_some_and(|c| close_of(evs, c).is_some())
    });
    let delta = net.a.nstat("TcpRetransSegs").expect("nstat") - before;
    let drops = net.b.input_counter().expect("nft counter");
    let conn = connects_of(&evs, pid);
    assert_eq!(conn.len(), 1, "one connect from the bulk client: {conn:?}");
    let c = conn[0];
    let closed_at = close_of(&evs, &c).expect("CLOSE of the bulk socket");
    // A socket address is reused once freed (other tests and processes run
    // beside this one): match the address within this socket's lifetime and tuple.
    let opened_at = c.header.ts_ns - c.duration_ns;
    let ours: Vec<_> = retransmits(&evs)
        .filter(|r| r.sk == c.sk && (opened_at..=closed_at).contains(&r.header.ts_ns))
        .collect();
    let segs: u64 = ours.iter().map(|r| r.segs as u64).sum();
    let dropped_locally = ours.iter().filter(|r| r.err != 0).count();
    let not_sent = rec
        .probes()
        .kernel_counter(KernelCounter::RetransmitNotSent)
        - not_sent_before;
    eprintln!(
        "{test}: {} events, {segs} segments, nstat TcpRetransSegs +{delta}; {drops} packets \
         dropped by nft; {dropped_locally} events with a local transmit error; \
         {not_sent} attempts given up (all sockets); {} probe runs skipped by the kernel; \
         kernel counters {:?}; client: {}",
        ours.len(),
        rec.probes().recursion_misses(),
        rec.probes().kernel_counters().unwrap_or_default(),
        out.trim()
    );
    // GRO merges segments before the input hook, so one drop loses several.
    assert!(drops >= 10, "the loss rule dropped too little ({drops})");
    assert!(delta > 50, "too few retransmissions to compare ({delta})");
    let diff = segs.abs_diff(delta) as f64 / delta as f64;
    assert!(
        diff <= 0.05,
        "probe segments {segs} vs nstat {delta}: {:.1} % apart",
        diff * 100.0
    );
    assert!(
        ours.iter().all(|r| r.tuple.saddr == v4_mapped(net.a_addr)
            && r.tuple.daddr == v4_mapped(net.b_addr)
            && (r.tuple.sport, r.tuple.dport) == (local, port)),
        "tuple"
    );
    if gso_max_segs.is_none() {
        assert!(
            ours.iter().any(|r| r.segs > 1),
            "GSO skbs carry several segments"
        );
    }
    assert_eq!(rec.probes().kernel_counter(KernelCounter::RingbufFull), 0);
    assert_eq!(rec.undecodable(), 0);
}

/// A loopback connect: Established, well under 10 ms, attributed to the
/// connecting process; then both sockets report CLOSE.
#[test]
fn loopback_connect_is_fast_and_attributed() {
    let Some(rec) = recorder("loopback_connect_is_fast_and_attributed") else {
        return;
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || tests::tcp_traffic::serve(&l, 1, Duration::from_secs(10)));
    let (pid, reports) = connect(
        None,
        &format!("127.0.0.1:{port}"),
        1,
        Duration::from_secs(10),
    );
    srv.join().unwrap().expect("server");
    let local = reports[0].local_port.expect("connected");

    let (_, c) = single_connect(&rec, pid);
    eprintln!(
        "loopback connect: {} µs in the kernel, {:?} seen by the client",
        c.duration_ns / 1000,
        reports[0].duration
    );
    assert_established(&c);
    assert_eq!(c.error, 0);
    assert!(
        c.duration_ns > 0 && c.duration_ns < 10_000_000,
        "{} ns",
        c.duration_ns
    );
    assert_eq!(
        (c.tuple.sport, c.tuple.dport, c.tuple.family),
        (local, port, AF_INET)
    );
    assert_eq!(c.tuple.daddr, v4_mapped(Ipv4Addr::LOCALHOST));
    assert_eq!(comm(&c), "sg-traffic");
    assert_ne!(c.header.cgroup_id, 0);
}

/// Every socket of a few loopback connections is reported: the passive side's
/// SYN_RECV → ESTABLISHED once, and exactly one CLOSE per socket.
#[test]
fn lifecycle_reports_passive_opens_and_every_close() {
    let Some(rec) = recorder("lifecycle_reports_passive_opens_and_every_close") else {
        return;
    };
    const N: usize = 5;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || tests::tcp_traffic::serve(&l, N, Duration::from_secs(10)));
    let (pid, reports) = connect(
        None,
        &format!("127.0.0.1:{port}"),
        N,
        Duration::from_secs(10),
    );
    srv.join().unwrap().expect("server");
    let locals: Vec<u16> = reports
        .iter()
        .map(|r| r.local_port.expect("connected"))
        .collect();

    let server_side =
        |s: &agent_common::TcpStateEvent| s.tuple.sport == port && locals.contains(&s.tuple.dport);
    let client_side =
        |s: &agent_common::TcpStateEvent| s.tuple.dport == port && locals.contains(&s.tuple.sport);
    let closes = |evs: &[KernelEvent], side: &dyn Fn(&agent_common::TcpStateEvent) -> bool| {
        states(evs)
            .filter(|s| s.newstate == tcp_state::CLOSE && side(s))
            .count()
    };
    let evs = rec.wait_for(Duration::from_secs(5), |evs| {
        closes(evs, &server_side) >= N && closes(evs, &client_side) >= N
    });
    let passive: Vec<_> = states(&evs)
        .filter(|s| s.newstate == tcp_state::ESTABLISHED && server_side(s))
        .collect();
    assert_eq!(passive.len(), N, "passive opens: {passive:?}");
    assert!(passive.iter().all(|s| s.oldstate == tcp_state::SYN_RECV));
    assert_eq!(closes(&evs, &server_side), N, "server sockets closed");
    assert_eq!(closes(&evs, &client_side), N, "client sockets closed");
    // The client's CLOSE carries the sk of its connect event.
    let conn = connects_of(&evs, pid);
    assert_eq!(conn.len(), N);
    for c in &conn {
        // A socket address (and port) can be reused by another connection on
        // the busy host: count only this socket's lifetime, up to the next
        // connect on the same address.
        let next = connects(&evs)
            .filter(|o| o.sk == c.sk && o.header.ts_ns > c.header.ts_ns)
            .map(|o| o.header.ts_ns)
            .min()
            .unwrap_or(u64::MAX);
        let n = states(&evs)
            .filter(|s| {
                s.sk == c.sk
                    && s.newstate == tcp_state::CLOSE
                    && client_side(s)
                    && (c.header.ts_ns..next).contains(&s.header.ts_ns)
            })
            .count();
        assert_eq!(n, 1, "CLOSE for the connect of port {}", c.tuple.sport);
    }
    // Nothing else about these sockets (no FIN_WAIT, TIME_WAIT... events).
    let other = states(&evs)
        .filter(|s| {
            (server_side(s) || client_side(s))
                && s.newstate != tcp_state::CLOSE
                && s.newstate != tcp_state::ESTABLISHED
        })
        .count();
    assert_eq!(other, 0);
}

/// The first SYN is dropped at the server: the kernel retransmits it after its
/// 1 s initial RTO and the connect takes about a second.
#[test]
fn connect_with_first_syn_dropped_takes_a_second() {
    let Some(rec) = recorder("connect_with_first_syn_dropped_takes_a_second") else {
        return;
    };
    let RuledConnect {
        net, pid, report, ..
    } = ruled_connect("syn", 202, RuleOn::Server, &rules::drop_first_syn(5202));
    assert!(report.local_port.is_some(), "{report:?}");
    assert_eq!(
        net.b.input_counter().unwrap(),
        1,
        "exactly the first SYN dropped"
    );

    let (evs, c) = single_connect(&rec, pid);
    eprintln!(
        "first SYN dropped: connect took {} ms (client saw {:?})",
        c.duration_ns / 1_000_000,
        report.duration
    );
    assert_established(&c);
    assert!(
        (900_000_000..3_000_000_000).contains(&c.duration_ns),
        "{} ns",
        c.duration_ns
    );
    // The SYN retransmission itself is a retransmit event of that socket.
    let syn_rtx: Vec<_> = retransmits(&evs).filter(|r| r.sk == c.sk).collect();
    assert_eq!(syn_rtx.len(), 1, "{syn_rtx:?}");
    assert_eq!(
        (syn_rtx[0].state, syn_rtx[0].segs, syn_rtx[0].synack),
        (tcp_state::SYN_SENT, 1, 0)
    );
    assert_eq!(net.a.nstat("TcpRetransSegs").unwrap(), 1);
}

/// 20 connects to a port nothing listens on: 20 Refused events, no more.
#[test]
fn refused_connects_are_counted_one_for_one() {
    let Some(rec) = recorder("refused_connects_are_counted_one_for_one") else {
        return;
    };
    const N: usize = 20;
    // A fresh namespace: nothing listens on its loopback.
    let ns = Netns::create(&format!("sg-ref-{}", std::process::id())).expect("namespace");
    let (pid, reports) = connect(Some(&ns), "127.0.0.1:5203", N, Duration::from_secs(10));
    assert_eq!(reports.len(), N);
    assert!(
        reports.iter().all(|r| r.errno == Some(libc::ECONNREFUSED)),
        "{reports:?}"
    );

    rec.wait_for(Duration::from_secs(3), |evs| {
        connects_of(evs, pid).len() >= N
    });
    // Late duplicates would show up after the first N.
    std::thread::sleep(Duration::from_millis(200));
    let evs = rec.snapshot();
    let conn = connects_of(&evs, pid);
    assert_eq!(conn.len(), N, "exactly one event per connect");
    for c in &conn {
        assert_eq!(
            ConnectOutcome::from_u32(c.outcome),
            ConnectOutcome::Refused,
            "{c:?}"
        );
        assert_eq!(c.error, libc::ECONNREFUSED as u32);
        assert_eq!(c.tuple.dport, 5203);
    }
    let closes = states(&evs)
        .filter(|s| {
            s.oldstate == tcp_state::SYN_SENT
                && s.newstate == tcp_state::CLOSE
                && s.tuple.dport == 5203
        })
        .count();
    assert!(closes == N, "one CLOSE per refused connect ({closes})");
}

/// SYNs blackholed at the server and one SYN retry allowed in the client's
/// namespace: the kernel gives up with ETIMEDOUT after 1 s + 2 s.
#[test]
fn blackholed_connect_times_out() {
    let Some(rec) = recorder("blackholed_connect_times_out") else {
        return;
    };
    let net = NetPair::create("tmo", 204).expect("namespaces");
    let port = 5204;
    let addr = format!("{}:{port}", net.b_addr);
    net.a
        .sysctl("net.ipv4.tcp_syn_retries", "1")
        .expect("sysctl");
    net.b.nft_input_rule(&rules::drop_syns(port)).expect("nft");
    let (pid, reports) = connect(Some(&net.a), &addr, 1, Duration::from_secs(10));
    assert_eq!(reports[0].errno, Some(libc::ETIMEDOUT), "{reports:?}");

    let (evs, c) = single_connect(&rec, pid);
    eprintln!(
        "blackholed connect gave up after {} ms",
        c.duration_ns / 1_000_000
    );
    assert_eq!(
        ConnectOutcome::from_u32(c.outcome),
        ConnectOutcome::TimedOut
    );
    assert_eq!(c.error, libc::ETIMEDOUT as u32);
    assert!(
        (2_500_000_000..5_000_000_000).contains(&c.duration_ns),
        "{} ns",
        c.duration_ns
    );
    // SYN retries as the kernel counted them (1 retry, plus one more when the
    // 3 s budget had not quite elapsed at the second timer).
    let syn_rtx: u64 = retransmits(&evs)
        .filter(|r| r.sk == c.sk)
        .map(|r| r.segs as u64)
        .sum();
    let nstat = net.a.nstat("TcpRetransSegs").unwrap();
    eprintln!("blackholed connect: {syn_rtx} SYN retransmits, nstat {nstat}");
    assert!(syn_rtx >= 1);
    assert_eq!(syn_rtx, nstat);
    assert_eq!(
        net.b.input_counter().unwrap(),
        1 + nstat,
        "every SYN dropped"
    );
}

/// The probes read tracepoint records at fixed offsets: they must be the
/// running kernel's.
#[test]
fn tracepoint_fields_match_this_kernel() {
    if !env::ready("tracepoint_fields_match_this_kernel", &[]) {
        return;
    }
    let root = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let Some(root) = root else {
        env::skip(
            "tracepoint_fields_match_this_kernel",
            "tracefs is not mounted",
        );
        return;
    };
    for (tp, field, offset) in agent_common::tp_fields::ALL {
        let format = std::fs::read_to_string(format!("{root}/{tp}/format"))
            .unwrap_or_else(|e| panic!("{tp}: {e}"));
        let found = format.lines().find_map(|l| {
            let decl = l.split(';').next()?.trim();
            let name = decl.rsplit([' ', '*']).next()?;
            let name = name.split('[').next()?;
            (decl.starts_with("field:") && name == *field).then(|| {
                l.split(';')
                    .find_map(|p| p.trim().strip_prefix("offset:"))
                    .and_then(|o| o.parse::<usize>().ok())
            })?
        });
        assert_eq!(found, Some(*offset), "{tp} field {field}");
    }
}

/// Connects made by the agent's own process (here: this test binary) are
/// never reported, and are not miscounted as unmatched either.
#[test]
fn own_connects_are_not_reported() {
    let Some(rec) = recorder("own_connects_are_not_reported") else {
        return;
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let unmatched = rec.probes().kernel_counter(KernelCounter::ConnectUnmatched);
    let own = std::net::TcpStream::connect(addr).expect("own connect");
    let local = own.local_addr().unwrap().port();
    drop(own);
    // Someone else's connect afterwards: once it shows, ours would have too.
    let (pid, _) = connect(None, &addr.to_string(), 1, Duration::from_secs(10));
    let evs = rec.wait_for(Duration::from_secs(3), |evs| {
        !connects_of(evs, pid).is_empty()
    });
    assert_eq!(connects_of(&evs, pid).len(), 1);
    let me = std::process::id();
    assert!(
        !connects(&evs).any(|c| c.header.tgid == me || c.tuple.sport == local),
        "the agent's own connect was reported"
    );
    // Its close is still reported: userspace ignores sockets it does not know.
    assert_eq!(
        rec.probes().kernel_counter(KernelCounter::ConnectUnmatched),
        unmatched
    );
}

/// IPv6 tuples travel as they are (not v4-mapped) with family AF_INET6.
#[test]
fn ipv6_loopback_connect() {
    let Some(rec) = recorder("ipv6_loopback_connect") else {
        return;
    };
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        env::skip("ipv6_loopback_connect", "no IPv6 loopback");
        return;
    };
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || tests::tcp_traffic::serve(&l, 1, Duration::from_secs(10)));
    let (pid, reports) = connect(None, &format!("[::1]:{port}"), 1, Duration::from_secs(10));
    srv.join().unwrap().expect("server");
    let local = reports[0].local_port.expect("connected");
    let evs = rec.wait_for(Duration::from_secs(3), |evs| {
        !connects_of(evs, pid).is_empty()
    });
    let c = connects_of(&evs, pid)[0];
    assert_established(&c);
    assert_eq!(c.tuple.family, agent_common::AF_INET6);
    assert_eq!(c.tuple.daddr, std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!((c.tuple.sport, c.tuple.dport), (local, port));
}

/// The first SYN-ACK is dropped at the client: the server retransmits it,
/// reported with `synack = 1`, and that is what its namespace's
/// `TcpRetransSegs` counts.
#[test]
fn synack_retransmits_match_nstat() {
    let Some(rec) = recorder("synack_retransmits_match_nstat") else {
        return;
    };
    let RuledConnect {
        net,
        port,
        pid,
        report,
        retrans_b_before: before,
    } = ruled_connect("sa", 206, RuleOn::Client, &rules::drop_first_synack(5206));
    let local = report.local_port.expect("connected");
    assert_eq!(net.a.input_counter().unwrap(), 1, "one SYN-ACK dropped");

    // The server's SYN-ACK timer and the client's SYN retransmit both fire
    // after about a second, so the server may send a second SYN-ACK after
    // the client is already established: read the counter once the
    // connection is over, then wait until the events account for it (or
    // time out and fail below), rather than stopping at the connect event.
    // The counter also counts what the established connection retransmits
    // (a tail loss probe of the server's reply when the namespaces are slow
    // to ACK): those are `tcp_retransmit_skb` events of the same tuple, so
    // every retransmit event of the server's side is summed.
    let delta = net.b.nstat("TcpRetransSegs").expect("nstat") - before;
    let ours = |evs: &[KernelEvent]| -> Vec<TcpRetransmitEvent> {
        retransmits(evs)
            .filter(|r| {
                r.tuple.saddr == v4_mapped(net.b_addr)
                    && (r.tuple.sport, r.tuple.dport) == (port, local)
            })
            .copied()
            .collect()
    };
    let evs = rec.wait_for(Duration::from_secs(3), |evs| {
        !connects_of(evs, pid).is_empty()
            && ours(evs).iter().map(|r| r.segs as u64).sum::<u64>() >= delta
    });
    let all = ours(&evs);
    let segs: u64 = all.iter().map(|r| r.segs as u64).sum();
    let synacks: Vec<&TcpRetransmitEvent> = all.iter().filter(|r| r.synack == 1).collect();
    eprintln!(
        "SYN-ACK retransmits: {} events, other retransmits of the connection: {} segments; nstat in the server's namespace +{delta}",
        synacks.len(),
        segs - synacks.len() as u64
    );
    // On a mismatch, every retransmit recorded (any tuple) and the ring's
    // health say whether an event was lost or went to another tuple.
    let explain = || {
        format!(
            "all retransmit events: {:?}; undecodable records: {}; server {}:{port}, client port {local}",
            retransmits(&evs).collect::<Vec<_>>(),
            rec.undecodable(),
            net.b_addr
        )
    };
    assert!(!synacks.is_empty(), "{}", explain());
    assert_eq!(segs, delta, "{}", explain());
    assert!(
        synacks
            .iter()
            .all(|r| r.state == tcp_state::SYN_RECV && r.segs == 1)
    );
    assert_established(&connects_of(&evs, pid)[0]);
}
