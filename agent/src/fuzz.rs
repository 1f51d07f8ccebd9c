//! Fuzz harnesses: one function per fuzz target of `agent/fuzz` (cargo-fuzz,
//! `cargo xtask fuzz`). Each takes arbitrary bytes and panics when an
//! invariant breaks, so a finding is more than "it did not crash". They are
//! plain library code so that the unit tests run them over the seed corpus
//! and every crash input kept in `agent/fuzz/regressions/` on every build.
use agent_common::{
    DATA_EVENT_FIXED, EventHeader, EventKind, MAX_PAYLOAD, SockOwnerEvent, TcpConnectEvent,
    TcpRetransmitEvent, TcpStateEvent, header_of,
};

use crate::config::Config;
use crate::config::error::ConfigError;
use crate::kernel::events::{DecodeError, Event, decode};
use crate::request::trace::context::{
    extract, format_traceparent, parse_b3_single, parse_traceparent, validate_tracestate,
};
use crate::request::{Header, RequestHeaders};

pub use crate::protocol::http1::fuzz::{chunked, head, stream};
pub use crate::protocol::http2::fuzz::frames as http2_frames;

/// One fuzz harness: takes libFuzzer's input, panics on a broken invariant.
pub type Harness = fn(&[u8]);

/// Every target by name, as `agent/fuzz/fuzz_targets/<name>.rs` calls it.
pub const TARGETS: &[(&str, Harness)] = &[
    ("http_head", head),
    ("http_chunked", chunked),
    ("http_stream", stream),
    ("http2_frames", http2_frames),
    ("trace_headers", trace_headers),
    ("events", events),
    ("config", config),
];

/// The trace headers a request may carry, in the order input lines fill them.
const TRACE_HEADERS: [Header; 8] = [
    Header::Traceparent,
    Header::Tracestate,
    Header::B3,
    Header::XB3TraceId,
    Header::XB3SpanId,
    Header::XB3Sampled,
    Header::XB3Flags,
    Header::XB3ParentSpanId,
];

/// Trace headers: each input line through every parser alone, then the lines
/// as the headers of one request. Accepted ids are never zero, a parsed
/// `traceparent` re-serialises to its input, a kept `tracestate` is valid.
pub fn trace_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut h = RequestHeaders::default();
    for (which, line) in TRACE_HEADERS.iter().zip(text.split('\n')) {
        check_trace_value(line);
        if !line.is_empty() {
            h.set(*which, line);
        }
    }
    let e = extract(&h);
    if let Some(c) = &e.context {
        assert!(c.trace_id != [0; 16] && c.parent_span_id != [0; 8], "{c:?}");
        if let Some(ts) = &c.tracestate {
            assert_eq!(validate_tracestate(ts), Ok(()), "kept tracestate {ts:?}");
            assert!(!ts.is_empty() && ts.len() <= data.len());
        }
    }
    if e.context.is_none()
        && h.traceparent()
            .is_some_and(|tp| parse_traceparent(tp).is_ok())
    {
        panic!("valid traceparent not used");
    }
}

fn check_trace_value(v: &str) {
    if let Ok(c) = parse_traceparent(v) {
        assert!(c.trace_id != [0; 16] && c.parent_span_id != [0; 8]);
        let t = v.trim_matches([' ', '\t']);
        assert_eq!(t[3..35], c.trace_id_hex());
        assert_eq!(t[36..52], c.parent_span_id_hex());
        let sampled = c.sampled == Some(true);
        let again = format_traceparent(&c.trace_id, &c.parent_span_id, sampled);
        // Version 00 with a defined flag set is exactly what we would write.
        if t.starts_with("00-") && matches!(&t[53..], "00" | "01") {
            assert_eq!(again, t, "traceparent does not re-serialise to itself");
        }
        assert_eq!(parse_traceparent(&again), Ok(c));
    }
    if validate_tracestate(v).is_ok() {
        // What we forward in a header: no control bytes, nothing beyond ASCII.
        assert!(
            v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)),
            "tracestate {v:?} accepted"
        );
        assert!(v.split(',').filter(|m| !m.trim().is_empty()).count() <= 32);
    }
    if let Ok(Some(c)) = parse_b3_single(v) {
        assert!(c.trace_id != [0; 16] && c.parent_span_id != [0; 8]);
        let first = v.trim().split('-').next().unwrap_or("");
        assert!(
            c.trace_id_hex().ends_with(&first.to_ascii_lowercase()),
            "b3 trace id {first:?} read as {}",
            c.trace_id_hex()
        );
    }
}

/// Ring-buffer records: the input is a sequence of records, each preceded by
/// its length (u16, little-endian). Each is decoded, checked against the
/// bytes it came from, then the whole sequence goes through a [`Pipeline`]
/// (connection table, HTTP, routes, RED and SLO metrics) whose Prometheus
/// text must stay well-formed.
///
/// [`Pipeline`]: crate::pipeline::Pipeline
pub fn events(data: &[u8]) {
    let mut records = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let (rec, tail) = rest[2..].split_at(n.min(rest.len() - 2));
        records.push(rec);
        rest = tail;
    }
    for rec in &records {
        check_record(rec);
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let self_metrics = crate::export::metrics::SelfMetrics::default();
    self_metrics.register(&mut registry);
    let mut pipeline =
        crate::pipeline::Pipeline::new(&Config::default(), &mut registry, self_metrics);
    // No process facts from this host: the pids are made up.
    pipeline.set_proc_root("/nonexistent/sloguard-fuzz");
    for rec in &records {
        pipeline.handle_record(rec);
    }
    pipeline.tick();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    check_exposition(&text);
}

fn check_record(b: &[u8]) {
    let size = std::mem::size_of::<EventHeader>();
    match decode(b) {
        Err(DecodeError::Short) => assert!(b.len() < size),
        Err(DecodeError::UnknownKind(k)) => {
            assert!(EventKind::from_u32(k).is_none());
            assert_eq!(header_of(b).map(|h| h.kind), Some(k));
        }
        Err(DecodeError::Truncated) => assert!(b.len() >= size),
        Ok(ev) => {
            assert_eq!(header_of(b).map(|h| h.kind), Some(ev.kind() as u32));
            let need = match ev {
                Event::TcpRetransmit(_) => std::mem::size_of::<TcpRetransmitEvent>(),
                Event::TcpConnect(_) => std::mem::size_of::<TcpConnectEvent>(),
                Event::TcpState(_) => std::mem::size_of::<TcpStateEvent>(),
                Event::SockOwner(_) => std::mem::size_of::<SockOwnerEvent>(),
                Event::Data(d) => {
                    let p = d.payload;
                    assert!(p.len() <= MAX_PAYLOAD && p.len() <= d.head.captured as usize);
                    assert!(p.len() as u64 <= u64::from(d.head.len));
                    // The payload is the record's own bytes after the fixed part.
                    assert!(
                        p.is_empty() || std::ptr::eq(p.as_ptr(), b[DATA_EVENT_FIXED..].as_ptr())
                    );
                    DATA_EVENT_FIXED + p.len()
                }
            };
            assert!(b.len() >= need, "{} bytes decoded as {need}", b.len());
        }
    }
}

/// Prometheus text exposition, line by line: every value read from the
/// network went into a label escaped, so each sample line is
/// `name{label="value",...} number` with nothing raw inside the quotes.
fn check_exposition(text: &str) {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("sample without value: {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':'),
            "metric name {name:?}"
        );
        let mut rest = &line[name_end..];
        if let Some(labels) = rest.strip_prefix('{') {
            rest = skip_labels(labels).unwrap_or_else(|| panic!("bad labels: {line:?}"));
        }
        let value = rest
            .strip_prefix(' ')
            .and_then(|v| v.split(' ').next())
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN"),
            "value {value:?} in {line:?}"
        );
        // An exemplar (trace id of a request) is a label set of its own.
        if let Some((_, exemplar)) = rest.split_once(" # {") {
            assert!(skip_labels(exemplar).is_some(), "bad exemplar: {line:?}");
        }
    }
}

/// Past `name="value",...}`; `None` when a quote or escape is unbalanced.
/// The format escapes only `\\`, `"` and line feeds (which the line split
/// catches): other control bytes, e.g. from a process name, may stay raw.
fn skip_labels(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'}') {
            return s.get(i + 1..);
        }
        let eq = i + s[i..].find('=')?;
        if !s[i..eq]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return None;
        }
        if b.get(eq + 1) != Some(&b'"') {
            return None;
        }
        i = eq + 2;
        loop {
            match *b.get(i)? {
                b'\\' => {
                    if !matches!(b.get(i + 1)?, b'\\' | b'"' | b'n') {
                        return None;
                    }
                    i += 2;
                }
                b'"' => break,
                _ => i += 1,
            }
        }
        i += 1;
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

/// The config loader behind `sloguard --config` and `check-config`: YAML
/// text (a first line `SLOGUARD_A__B=value` is an environment override)
/// either loads to a config that validates and survives a YAML round trip,
/// or fails with an error that names what is wrong.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = Vec::new();
    let mut yaml = text;
    if let Some((first, rest)) = text.split_once('\n')
        && let Some((var, value)) = first.split_once('=')
        && var.starts_with("SLOGUARD_")
    {
        env.push((var.to_string(), value.to_string()));
        yaml = rest;
    }
    match Config::from_yaml_with_env(yaml, env) {
        Ok(cfg) => {
            if let Err(e) = cfg.validate() {
                panic!("a loaded config does not validate: {e}");
            }
            let out = serde_yaml_ng::to_string(&cfg).expect("a config serialises");
            match Config::from_yaml_with_env(&out, Vec::new()) {
                Ok(again) => assert_eq!(again, cfg, "YAML round trip changed the config"),
                Err(e) => panic!("a loaded config does not load again: {e}\n{out}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let ConfigError::Key { key, message } = &e {
                assert!(!key.is_empty() && !message.is_empty(), "{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
