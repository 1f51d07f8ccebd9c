//! The harnesses over the seed corpus and the kept crash inputs, on every
//! test run; and the generator of the binary seeds.
use std::path::{Path, PathBuf};

use super::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn every_target_has_seeds_and_passes_them() {
    for (name, harness) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {name}");
        for f in seeds {
            let data = std::fs::read(&f).expect("seed");
            assert!(
                data.len() <= 16 * 1024,
                "{} is not a small seed",
                f.display()
            );
            harness(&data);
        }
    }
}

/// Inputs that once broke an invariant stay fixed.
#[test]
fn kept_crash_inputs_pass() {
    for (name, harness) in TARGETS {
        for f in files(&fuzz_dir().join("regressions").join(name)) {
            harness(&std::fs::read(&f).expect("regression input"));
        }
    }
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} not in agent/fuzz/Cargo.toml"
        );
        let src = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{name}.rs: {e}"));
        assert!(src.contains("sloguard::fuzz::"), "{name}");
    }
}

/// The exposition check is not vacuous: it refuses what an unescaped label
/// value, a bad escape or a broken exemplar would produce.
#[test]
fn exposition_check_refuses_raw_label_values() {
    check_exposition("# HELP x y\nx_total{a=\"b\\\"c\",d=\"e\"} 1\ny 2.5\n");
    check_exposition("x_bucket{le=\"0.5\"} 1 # {trace_id=\"ab\"} 0.3 1.5\n");
    check_exposition("x_total{service_name=\"\u{1}\"} 2\n");
    for bad in [
        "x_total{a=\"b\"c\"} 1\n",
        "x_total{a=\"b\nc\"} 1\n",
        "x_total{a=\"b\\qc\"} 1\n",
        "x_total{a=b} 1\n",
        "x_total 1x\n",
        "x_bucket{le=\"0.5\"} 1 # {trace_id=\"a\"b\"} 0.3\n",
    ] {
        let r = std::panic::catch_unwind(|| check_exposition(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

/// The `events` seeds are today's encoding of a few real records: when an
/// event layout changes this fails, and `SG_WRITE_SEEDS=1 cargo test -p
/// agent --lib fuzz::tests::event_seeds_match_the_encoding` rewrites them.
#[test]
fn event_seeds_match_the_encoding() {
    use crate::kernel::events::encode::*;
    use agent_common::ConnectOutcome;
    let write = std::env::var("SG_WRITE_SEEDS").as_deref() == Ok("1");
    let dir = fuzz_dir().join("seeds/events");
    let tuple = tuple_v4([127, 0, 0, 1], 40000, [127, 0, 0, 1], 8080);
    let owner = bytes_of(&SockOwnerEvent {
        header: header(EventKind::SockOwner, 100, 1, "nginx"),
        sk: 7,
    });
    let connect = bytes_of(&TcpConnectEvent {
        header: header(EventKind::TcpConnect, 100, 2, "curl"),
        sk: 7,
        tuple,
        duration_ns: 50_000,
        outcome: ConnectOutcome::Established as u32,
        error: 0,
    });
    let refused = bytes_of(&TcpConnectEvent {
        header: header(EventKind::TcpConnect, 101, 2, "curl"),
        sk: 8,
        tuple,
        duration_ns: 10_000,
        outcome: ConnectOutcome::Refused as u32,
        error: 111,
    });
    let retrans = bytes_of(&TcpRetransmitEvent {
        header: header(EventKind::TcpRetransmit, 0, 3, "swapper/0"),
        sk: 7,
        tuple,
        segs: 2,
        state: 1,
        synack: 0,
        err: 0,
    });
    let close = bytes_of(&TcpStateEvent {
        header: header(EventKind::TcpState, 0, 9, "swapper/1"),
        sk: 7,
        tuple,
        oldstate: 1,
        newstate: 7,
    });
    let get: &[u8] = b"GET /api/users/42 HTTP/1.1\r\nHost: shop\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
    let req = data(
        header(EventKind::Data, 100, 4, ""),
        7,
        0,
        get.len() as u32,
        get,
    );
    let resp = data(
        header(EventKind::Data, 100, 6, ""),
        7,
        1,
        5000,
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4962\r\n\r\n",
    );
    let framed = |recs: &[&Vec<u8>]| {
        let mut out = Vec::new();
        for r in recs {
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend_from_slice(r);
        }
        out
    };
    let seeds: [(&str, Vec<u8>); 5] = [
        (
            "connect_retransmit_close",
            framed(&[&connect, &retrans, &close]),
        ),
        ("refused", framed(&[&refused])),
        ("server_exchange", framed(&[&owner, &req, &resp, &close])),
        (
            "truncated_record",
            framed(&[&owner[..owner.len() - 3].to_vec()]),
        ),
        ("unknown_kind", {
            let mut b = owner.clone();
            b[0] = 42;
            framed(&[&b])
        }),
    ];
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else {
            let kept = std::fs::read(&path).unwrap_or_default();
            assert!(
                kept == bytes,
                "{} is not today's encoding: regenerate with SG_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
}

/// Found by fuzzing: prometheus-client writes label values unescaped, and
/// httparse lets `"` and `\` into a request target, so a client could break
/// the `/metrics` text of the `http_route` label (fixed by `metrics::label`).
#[test]
fn quote_in_request_target_keeps_exposition_valid() {
    use crate::kernel::events::encode::*;
    let owner = bytes_of(&SockOwnerEvent {
        header: header(EventKind::SockOwner, 100, 1, "nginx"),
        sk: 7,
    });
    let get: &[u8] = b"GET /a\"b\\c HTTP/1.1\r\nHost: shop\r\n\r\n";
    let req = data(
        header(EventKind::Data, 100, 4, ""),
        7,
        0,
        get.len() as u32,
        get,
    );
    let r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let resp = data(header(EventKind::Data, 100, 6, ""), 7, 1, r.len() as u32, r);
    let mut input = Vec::new();
    for rec in [&owner, &req, &resp] {
        input.extend_from_slice(&(rec.len() as u16).to_le_bytes());
        input.extend_from_slice(rec);
    }
    events(&input);
}
