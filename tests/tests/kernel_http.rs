//! HTTP capture on the real kernel, checked against nginx's own access log and
//! curl: every request nginx logged is seen from both sides with the right
//! bytes; non-HTTP streams produce no data events but are counted.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::{DataSource, Direction, KernelCounter};
use sloguard::kernel::probes::Probes;
use sloguard::kernel::probes::ProbesConfig;
use tests::env::{has_program, is_root, missing as require};
use tests::events::{Data, Event, drain, drain_until_quiet};
use tests::nginx::{Nginx, NginxOptions};

fn probes_or_skip(extra: &[(&str, bool)]) -> Option<Probes> {
    let mut checks = vec![
        ("root", is_root()),
        (
            "kernel BTF",
            std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        ),
    ];
    checks.extend_from_slice(extra);
    if let Some(reason) = require(&checks) {
        eprintln!("skipped: {reason}");
        return None;
    }
    Some(Probes::load(&ProbesConfig::default()).expect("probes load"))
}

fn data_of(events: &[Event], tgid: u32) -> Vec<&Data> {
    data_between(events, tgid, (0, u64::MAX))
}

/// Data events of `tgid` stamped within `window` (CLOCK_MONOTONIC ns): a
/// closed socket's address is soon reused, so `sk` alone names a connection
/// only within its lifetime.
fn data_between(events: &[Event], tgid: u32, window: (u64, u64)) -> Vec<&Data> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.tgid == tgid && d.ts_ns >= window.0 && d.ts_ns <= window.1 => {
                Some(d)
            }
            _ => None,
        })
        .collect()
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn owners_of(events: &[Event], tgid: u32) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Owner(o) if o.tgid == tgid => Some(o.sk),
            _ => None,
        })
        .collect()
}

fn first_line(payload: &[u8]) -> Option<String> {
    let end = payload.windows(2).position(|w| w == b"\r\n")?;
    Some(String::from_utf8_lossy(&payload[..end]).into_owned())
}

const METHODS: [&str; 2] = ["GET ", "HEAD "];

/// One side of one connection as the probes reported it.
#[derive(Debug, Default)]
struct Side {
    requests: Vec<String>,
    ingress: u64,
    egress: u64,
    sendfile_events: usize,
    first_ingress: Vec<u8>,
}

fn side(data: &[&Data], sk: u64) -> Side {
    let mut s = Side::default();
    for d in data.iter().filter(|d| d.sk == sk) {
        if d.direction == Direction::Ingress as u32 {
            if s.ingress == 0 {
                s.first_ingress = d.payload.clone();
            }
            s.ingress += d.len as u64;
        } else {
            s.egress += d.len as u64;
        }
        if d.source == DataSource::Sendfile as u32 {
            assert_eq!(d.payload.len(), 0, "sendfile carries no payload");
            s.sendfile_events += 1;
        }
        if let Some(line) = first_line(&d.payload)
            && METHODS.iter().any(|m| line.starts_with(m))
        {
            s.requests.push(line);
        }
    }
    s
}

/// The sk of the event that carries `request_line` in direction `dir`.
fn sk_with_request(data: &[&Data], dir: Direction, request_line: &str) -> Option<u64> {
    data.iter()
        .find(|d| {
            d.direction == dir as u32 && first_line(&d.payload).as_deref() == Some(request_line)
        })
        .map(|d| d.sk)
}

#[test]
fn nginx_and_curl_bytes_match_the_access_log() {
    let Some(mut probes) = probes_or_skip(&[
        ("nginx (apt-get install nginx)", has_program("nginx")),
        ("curl (apt-get install curl)", has_program("curl")),
    ]) else {
        return;
    };
    let mut rb = probes.take_ring_buffer().unwrap();
    let large: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let nginx = Nginx::start(&NginxOptions {
        files: vec![
            ("small.txt".into(), b"hello from nginx\n".to_vec()),
            ("large.bin".into(), large),
        ],
        ..Default::default()
    })
    .expect("nginx starts");
    let workers = nginx.workers();
    assert_eq!(workers.len(), 1, "one nginx worker");
    let worker = workers[0];

    let mut events = Vec::new();
    let mut curl_runs = Vec::new();
    const CONNECTIONS: usize = 3;
    for c in 0..CONNECTIONS {
        let paths = [
            format!("/small.txt?c={c}&r=1"),
            format!("/large.bin?c={c}&r=2"),
            format!("/small.txt?c={c}&r=3"),
            format!("/missing?c={c}&r=4"),
        ];
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--http1.1", "--max-time", "20"]);
        for p in &paths {
            cmd.arg("-o").arg("/dev/null").arg(nginx.url(p));
        }
        let t0 = monotonic_ns();
        let mut child = cmd.stdout(Stdio::null()).spawn().expect("curl runs");
        let start = Instant::now();
        loop {
            drain(&mut rb, &mut events);
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "curl failed: {st}");
                curl_runs.push((child.id(), (t0, monotonic_ns())));
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "curl hung");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    events.extend(drain_until_quiet(
        &mut rb,
        Duration::from_millis(300),
        Duration::from_secs(5),
    ));
    let log = nginx.access_log().expect("access log");
    assert_eq!(log.len(), CONNECTIONS * 4, "nginx logged every request");
    assert_eq!(
        probes.kernel_counter(KernelCounter::RingbufFull),
        0,
        "ring buffer never full"
    );

    let nginx_owned = owners_of(&events, worker);
    for (c, (curl_pid, window)) in curl_runs.iter().enumerate() {
        let nginx_data = data_between(&events, worker, *window);
        let entries: Vec<_> = log
            .iter()
            .filter(|e| e.request.contains(&format!("?c={c}&")))
            .collect();
        assert_eq!(entries.len(), 4, "connection {c}: {entries:?}");
        assert!(
            entries
                .iter()
                .all(|e| e.connection == entries[0].connection),
            "curl reused one connection: {entries:?}"
        );
        let lines: Vec<String> = entries.iter().map(|e| e.request.clone()).collect();
        let request_bytes: u64 = entries.iter().map(|e| e.request_length).sum();
        let response_bytes: u64 = entries.iter().map(|e| e.bytes_sent).sum();

        // nginx's side: reads the requests, writes the responses.
        let sk = sk_with_request(&nginx_data, Direction::Ingress, &lines[0])
            .unwrap_or_else(|| panic!("no ingress event for {:?} on nginx", lines[0]));
        let s = side(&nginx_data, sk);
        assert_eq!(s.requests, lines, "nginx side requests, connection {c}");
        assert_eq!(s.ingress, request_bytes, "nginx read $request_length");
        assert_eq!(s.egress, response_bytes, "nginx wrote $bytes_sent");
        assert!(s.sendfile_events > 0, "large body went through sendfile");
        assert!(nginx_owned.contains(&sk), "owner event for nginx's socket");

        // curl's side: the mirror.
        let curl_data = data_of(&events, *curl_pid);
        let sk = sk_with_request(&curl_data, Direction::Egress, &lines[0])
            .unwrap_or_else(|| panic!("no egress event for {:?} from curl", lines[0]));
        let s = side(&curl_data, sk);
        assert_eq!(s.requests, lines, "curl side requests, connection {c}");
        assert_eq!(s.egress, request_bytes, "curl wrote the requests");
        assert_eq!(s.ingress, response_bytes, "curl read every response byte");
        assert!(
            s.first_ingress.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "response head captured: {:?}",
            String::from_utf8_lossy(&s.first_ingress)
        );
        assert!(owners_of(&events, *curl_pid).contains(&sk));
        eprintln!(
            "connection {c}: {} requests, {request_bytes} B in, {response_bytes} B out, both sides agree",
            lines.len()
        );
    }
}

#[test]
fn non_http_stream_is_counted_not_sent() {
    // Another protocol: counted as non-HTTP.
    stream_is_counted_not_sent(
        "SSH-2.0-",
        KernelCounter::NonHttpBytes,
        KernelCounter::NonHttpSyscalls,
    );
}

/// TLS records are ciphertext whose plaintext the TLS probes read: counted
/// as TLS, not as non-HTTP garbage.
#[test]
fn tls_stream_is_counted_as_tls_not_sent() {
    stream_is_counted_not_sent(
        "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01",
        KernelCounter::TlsBytes,
        KernelCounter::TlsSyscalls,
    );
}

/// A 256 KiB stream starting with `prefix` (a Python bytes literal body)
/// between two sockets of one child process: no data events, its bytes and
/// syscalls counted in `bytes_counter`/`calls_counter`.
fn stream_is_counted_not_sent(
    prefix: &str,
    bytes_counter: KernelCounter,
    calls_counter: KernelCounter,
) {
    let Some(mut probes) = probes_or_skip(&[("python3", has_program("python3"))]) else {
        return;
    };
    let mut rb = probes.take_ring_buffer().unwrap();
    let before = probes.kernel_counters().unwrap();
    let script = format!(
        r#"
import os, socket, threading
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
got = [0]
def serve():
    s, _ = l.accept()
    while True:
        b = s.recv(65536)
        if not b: break
        got[0] += len(b)
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(l.getsockname())
p = b"{prefix}"
c.sendall(p + os.urandom(262144 - len(p)))
c.close(); t.join()
assert got[0] == 262144, got
"#
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .expect("python3 runs");
    let pid = child.id();
    let st = child.wait().unwrap();
    assert!(st.success());
    let events = drain_until_quiet(&mut rb, Duration::from_millis(200), Duration::from_secs(5));
    let after = probes.kernel_counters().unwrap();
    let data = data_of(&events, pid);
    assert!(
        data.is_empty(),
        "non-HTTP bytes produced data events: {data:?}"
    );
    assert!(
        owners_of(&events, pid).len() >= 2,
        "both sockets announced their owner"
    );
    let bytes = after[bytes_counter as usize] - before[bytes_counter as usize];
    let calls = after[calls_counter as usize] - before[calls_counter as usize];
    // Sent once and received once (other traffic on the machine may add more).
    assert!(bytes >= 2 * 262_144, "{bytes_counter:?}: {bytes}");
    assert!(calls >= 2, "{calls_counter:?}: {calls}");
}

/// One curl GET of nginx's `/small.txt`, then every event until the ring is quiet.
fn curl_and_drain(nginx: &Nginx, rb: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<Event> {
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null", &nginx.url("/small.txt")])
        .status()
        .expect("curl runs");
    assert!(st.success());
    drain_until_quiet(rb, Duration::from_millis(300), Duration::from_secs(5))
}

#[test]
fn owners_are_announced_without_http_capture() {
    let Some(_) = probes_or_skip(&[("curl (apt-get install curl)", has_program("curl"))]) else {
        return;
    };
    let mut probes = Probes::load(&ProbesConfig {
        capture_http: false,
        ..Default::default()
    })
    .expect("probes load without HTTP capture");
    let mut rb = probes.take_ring_buffer().unwrap();
    let nginx = Nginx::start(&NginxOptions {
        files: vec![("small.txt".into(), b"hello\n".to_vec())],
        ..Default::default()
    })
    .expect("nginx starts");
    let worker = nginx.workers()[0];
    let events = curl_and_drain(&nginx, &mut rb);
    assert_eq!(nginx.access_log().unwrap().len(), 1);
    assert!(
        !owners_of(&events, worker).is_empty(),
        "nginx's accepted socket announced its owner"
    );
    assert!(
        data_of(&events, worker).is_empty(),
        "no data events without capture"
    );
}

/// `probes.cost_stage` (the stages bench) stops the probes where it says:
/// `attach` sends nothing, `classify` only owners, `transfer` a data event per
/// socket syscall with its length but no payload.
#[test]
fn cost_stages_stop_the_probes_where_asked() {
    use sloguard::kernel::probes::CostStage;
    let Some(_) = probes_or_skip(&[("curl (apt-get install curl)", has_program("curl"))]) else {
        return;
    };
    let nginx = Nginx::start(&NginxOptions {
        files: vec![("small.txt".into(), b"hello\n".to_vec())],
        ..Default::default()
    })
    .expect("nginx starts");
    let worker = nginx.workers()[0];
    for stage in [CostStage::Attach, CostStage::Classify, CostStage::Transfer] {
        let mut probes = Probes::load(&ProbesConfig {
            cost_stage: stage,
            ..Default::default()
        })
        .expect("probes load");
        let mut rb = probes.take_ring_buffer().unwrap();
        let events = curl_and_drain(&nginx, &mut rb);
        let owners = owners_of(&events, worker);
        let data = data_of(&events, worker);
        match stage {
            CostStage::Attach => {
                assert!(
                    owners.is_empty() && data.is_empty(),
                    "{stage:?}: {events:?}"
                )
            }
            CostStage::Classify => {
                assert!(!owners.is_empty(), "{stage:?}: owner announced");
                assert!(data.is_empty(), "{stage:?}: no data events");
            }
            _ => {
                assert!(!owners.is_empty(), "{stage:?}: owner announced");
                let ingress: Vec<_> = data
                    .iter()
                    .filter(|d| d.direction == Direction::Ingress as u32)
                    .collect();
                assert!(!ingress.is_empty(), "{stage:?}: the request's read is sent");
                assert!(
                    data.iter().all(|d| d.payload.is_empty() && d.len > 0),
                    "{stage:?}: lengths only, no payload: {data:?}"
                );
            }
        }
    }
    assert_eq!(nginx.access_log().unwrap().len(), 3);
}

/// Every read/write-family syscall is decoded from the task's registers: each
/// one yields its source, fd, length and the start of its (first) buffer. Over
/// IPv6 loopback.
#[test]
fn every_syscall_family_is_decoded() {
    let Some(mut probes) = probes_or_skip(&[("python3", has_program("python3"))]) else {
        return;
    };
    let mut rb = probes.take_ring_buffer().unwrap();
    const SCRIPT: &str = r#"
import os, socket
l = socket.socket(socket.AF_INET6); l.bind(("::1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname()[:2]); s, _ = l.accept()
print(c.fileno(), s.fileno(), flush=True)
os.write(c.fileno(), b"GET /write HTTP/1.1\r\n\r\n")
assert os.read(s.fileno(), 4096) == b"GET /write HTTP/1.1\r\n\r\n"
c.sendmsg([b"GET /sendmsg HTTP/1.1\r\n", b"\r\n"])
assert s.recvmsg(4096)[0] == b"GET /sendmsg HTTP/1.1\r\n\r\n"
os.writev(c.fileno(), [b"GET /writev HTTP/1.1\r\n", b"\r\n"])
a, b = bytearray(10), bytearray(4096)
assert os.readv(s.fileno(), [a, b]) == 24
s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
assert c.recv(4096).startswith(b"HTTP/1.1 200")
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fds: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let (cfd, sfd) = (fds[0], fds[1]);
    // The child's pid is its tgid; find it through its events' fds and payloads.
    let events = drain_until_quiet(&mut rb, Duration::from_millis(200), Duration::from_secs(5));
    let pid = events
        .iter()
        .find_map(|e| match e {
            Event::Data(d) if d.payload.starts_with(b"GET /write ") => Some(d.tgid),
            _ => None,
        })
        .expect("python's first write was captured");
    let got: Vec<(i32, u32, u32, u32, Vec<u8>)> = data_of(&events, pid)
        .iter()
        .map(|d| (d.fd, d.direction, d.source, d.len, d.payload.clone()))
        .collect();
    let (i, e) = (Direction::Ingress as u32, Direction::Egress as u32);
    let want: Vec<(i32, u32, u32, u32, Vec<u8>)> = vec![
        (
            cfd,
            e,
            DataSource::Write as u32,
            23,
            b"GET /write HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            sfd,
            i,
            DataSource::Read as u32,
            23,
            b"GET /write HTTP/1.1\r\n\r\n".to_vec(),
        ),
        // Only the first iovec is captured.
        (
            cfd,
            e,
            DataSource::Sendmsg as u32,
            25,
            b"GET /sendmsg HTTP/1.1\r\n".to_vec(),
        ),
        (
            sfd,
            i,
            DataSource::Recvmsg as u32,
            25,
            b"GET /sendmsg HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            cfd,
            e,
            DataSource::Writev as u32,
            24,
            b"GET /writev HTTP/1.1\r\n".to_vec(),
        ),
        (sfd, i, DataSource::Readv as u32, 24, b"GET /write".to_vec()),
        (
            sfd,
            e,
            DataSource::Sendto as u32,
            38,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            cfd,
            i,
            DataSource::Recvfrom as u32,
            38,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
    ];
    let show = |v: &[(i32, u32, u32, u32, Vec<u8>)]| {
        v.iter()
            .map(|(f, d, s, l, p)| {
                format!(
                    "fd{f} dir{d} src{s} len{l} {:?}",
                    String::from_utf8_lossy(p)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(got, want, "got:\n{}\nwant:\n{}", show(&got), show(&want));
}

/// A closed socket's address is soon reused by a new one: the new connection
/// must be judged on its own bytes, not inherit "not HTTP" from the old one.
#[test]
fn reused_socket_addresses_start_fresh() {
    let Some(mut probes) = probes_or_skip(&[("python3", has_program("python3"))]) else {
        return;
    };
    let mut rb = probes.take_ring_buffer().unwrap();
    const ROUNDS: usize = 40;
    const SCRIPT: &str = r#"
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(8)
for i in range(int(sys.argv[1])):
    for first in (b"\x00\x01binary", b"GET /reuse/%d HTTP/1.1\r\n\r\n" % i):
        c = socket.create_connection(l.getsockname()); s, _ = l.accept()
        c.sendall(first); assert s.recv(4096) == first
        c.close(); s.close()
"#;
    let st = Command::new("python3")
        .args(["-c", SCRIPT, &ROUNDS.to_string()])
        .status()
        .expect("python3 runs");
    assert!(st.success());
    let events = drain_until_quiet(&mut rb, Duration::from_millis(200), Duration::from_secs(5));
    let gets: Vec<&Data> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.payload.starts_with(b"GET /reuse/") => Some(d),
            _ => None,
        })
        .collect();
    let pid = gets.first().map(|d| d.tgid).expect("some GET captured");
    // More than one owner announcement for a socket that carried a GET: its
    // address was reused by a later connection and judged afresh.
    let http_sks: std::collections::HashSet<u64> = gets.iter().map(|d| d.sk).collect();
    let owned = owners_of(&events, pid);
    let reused = owned
        .iter()
        .filter(|sk| http_sks.contains(sk))
        .count()
        .saturating_sub(http_sks.len());
    eprintln!("{reused} socket addresses were reused between connections");
    // Each GET is seen on the client's write and the server's read.
    assert_eq!(gets.len(), 2 * ROUNDS, "every HTTP connection captured");
}
