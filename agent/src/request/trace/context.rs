//! Incoming trace context: W3C `traceparent`/`tracestate` and B3 (single
//! `b3` header and multi `X-B3-*`), validated. Invalid headers are reported
//! with a reason and treated as absent; W3C wins when both kinds are valid.

use crate::request::{Header, RequestHeaders};

/// The caller's span, which a server span takes as its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The incoming span id (the caller's span).
    pub parent_span_id: [u8; 8],
    /// The caller's sampling decision, when it sent one.
    pub sampled: Option<bool>,
    /// W3C `tracestate`, kept only when valid.
    pub tracestate: Option<String>,
}

impl TraceContext {
    pub fn trace_id_hex(&self) -> String {
        hex_lower(&self.trace_id)
    }

    pub fn parent_span_id_hex(&self) -> String {
        hex_lower(&self.parent_span_id)
    }
}

/// Why a trace header was rejected (a metric label value via [`as_str`](Self::as_str)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// `traceparent` version `ff`, or not two hex digits.
    TraceparentVersion,
    /// Wrong length or separators.
    TraceparentFormat,
    /// A field is not lowercase hex.
    TraceparentHex,
    /// All-zero trace id or parent id.
    TraceparentZeroId,
    /// `tracestate` malformed (the `traceparent` is still used).
    Tracestate,
    /// B3 header with wrong fields, lengths or sampling state.
    B3Format,
    /// B3 id that is not hex.
    B3Hex,
    /// B3 all-zero trace id or span id.
    B3ZeroId,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 8] = [
        Self::TraceparentVersion,
        Self::TraceparentFormat,
        Self::TraceparentHex,
        Self::TraceparentZeroId,
        Self::Tracestate,
        Self::B3Format,
        Self::B3Hex,
        Self::B3ZeroId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TraceparentVersion => "traceparent_version",
            Self::TraceparentFormat => "traceparent_format",
            Self::TraceparentHex => "traceparent_hex",
            Self::TraceparentZeroId => "traceparent_zero_id",
            Self::Tracestate => "tracestate",
            Self::B3Format => "b3_format",
            Self::B3Hex => "b3_hex",
            Self::B3ZeroId => "b3_zero_id",
        }
    }
}

/// What a request carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub context: Option<TraceContext>,
    /// The first invalid header met (the request may still have a context
    /// from another, valid header).
    pub invalid: Option<InvalidReason>,
}

/// Counts of rejected headers per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvalidCounts([u64; 8]);

impl InvalidCounts {
    pub fn record(&mut self, reason: InvalidReason) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: InvalidReason) -> u64 {
        self.0[reason as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (InvalidReason, u64)> + '_ {
        InvalidReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// Read the trace context of a request.
pub fn extract(h: &RequestHeaders) -> Extracted {
    let mut invalid = None;
    if let Some(tp) = h.traceparent() {
        match parse_traceparent(tp) {
            Ok(mut ctx) => {
                if let Some(ts) = h.tracestate() {
                    match validate_tracestate(ts) {
                        Ok(()) if !ts.trim().is_empty() => ctx.tracestate = Some(ts.trim().into()),
                        Ok(()) => {}
                        Err(r) => invalid = Some(r),
                    }
                }
                return Extracted {
                    context: Some(ctx),
                    invalid,
                };
            }
            Err(r) => invalid = Some(r),
        }
    }
    let b3 = match h.get(Header::B3) {
        Some(v) => parse_b3_single(v),
        None => parse_b3_multi(h),
    };
    match b3 {
        Ok(context) => Extracted { context, invalid },
        Err(r) => Extracted {
            context: None,
            invalid: invalid.or(Some(r)),
        },
    }
}

fn hex_val(c: u8, upper_ok: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if upper_ok => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode exactly `out.len() * 2` hex characters.
fn decode_hex(s: &[u8], out: &mut [u8], upper_ok: bool) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_val(pair[0], upper_ok)? << 4 | hex_val(pair[1], upper_ok)?;
    }
    Some(())
}

/// Lowercase hex of `bytes`. A table lookup per nibble: this runs for every
/// exported or logged request, and `write!` per byte showed in profiles.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_lower_into(bytes, &mut out).to_string()
}

/// Lowercase hex of `bytes` written into `out` (at least twice as long),
/// without allocating; the written part as text.
pub fn hex_lower_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len().min(out.len() / 2);
    for (b, pair) in bytes[..n].iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    // Only ASCII hex digits were written: the conversion cannot fail.
    std::str::from_utf8(&out[..2 * n]).unwrap_or_default()
}

/// The request headers that carry trace context (W3C and B3), lower case.
pub const TRACE_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// A version-00 `traceparent` value.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> String {
    format!(
        "00-{}-{}-{}",
        hex_lower(trace_id),
        hex_lower(span_id),
        if sampled { "01" } else { "00" }
    )
}

/// Parse a W3C `traceparent` (trace-context level 1 rules).
pub fn parse_traceparent(v: &str) -> Result<TraceContext, InvalidReason> {
    use InvalidReason::*;
    let b = v.trim_matches([' ', '\t']).as_bytes();
    if b.len() < 2 {
        return Err(TraceparentFormat);
    }
    let mut version = [0u8; 1];
    decode_hex(&b[..2], &mut version, false).ok_or(TraceparentVersion)?;
    if version[0] == 0xff {
        return Err(TraceparentVersion);
    }
    // Version 00 has an exact length; later versions may append fields.
    let exact = version[0] == 0;
    if b.len() < 55 || (exact && b.len() != 55) || (!exact && b.len() > 55 && b[55] != b'-') {
        return Err(TraceparentFormat);
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err(TraceparentFormat);
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    decode_hex(&b[3..35], &mut trace_id, false).ok_or(TraceparentHex)?;
    decode_hex(&b[36..52], &mut span_id, false).ok_or(TraceparentHex)?;
    decode_hex(&b[53..55], &mut flags, false).ok_or(TraceparentHex)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return Err(TraceparentZeroId);
    }
    Ok(TraceContext {
        trace_id,
        parent_span_id: span_id,
        sampled: Some(flags[0] & 1 == 1),
        tracestate: None,
    })
}

fn valid_tracestate_key(k: &[u8]) -> bool {
    let simple = |k: &[u8], first_digit_ok: bool, max: usize| {
        !k.is_empty()
            && k.len() <= max
            && (k[0].is_ascii_lowercase() || (first_digit_ok && k[0].is_ascii_digit()))
            && k[1..].iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match k.iter().position(|&c| c == b'@') {
        None => simple(k, false, 256),
        Some(at) => simple(&k[..at], true, 241) && simple(&k[at + 1..], false, 14),
    }
}

fn valid_tracestate_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && v.last() != Some(&b' ')
}

/// Validate a W3C `tracestate` list (at most 32 members, unique keys).
pub fn validate_tracestate(v: &str) -> Result<(), InvalidReason> {
    let mut keys: [&[u8]; 32] = [&[]; 32];
    let mut n = 0;
    for member in v.split(',') {
        let m = member.trim_matches([' ', '\t']).as_bytes();
        if m.is_empty() {
            continue;
        }
        let eq = m
            .iter()
            .position(|&c| c == b'=')
            .ok_or(InvalidReason::Tracestate)?;
        let (k, val) = (&m[..eq], &m[eq + 1..]);
        if !valid_tracestate_key(k)
            || !valid_tracestate_value(val)
            || n == 32
            || keys[..n].contains(&k)
        {
            return Err(InvalidReason::Tracestate);
        }
        keys[n] = k;
        n += 1;
    }
    Ok(())
}

fn b3_trace_id(s: &[u8]) -> Result<[u8; 16], InvalidReason> {
    let mut id = [0u8; 16];
    match s.len() {
        32 => decode_hex(s, &mut id, true).ok_or(InvalidReason::B3Hex)?,
        // 64-bit ids are the low half of a 128-bit id.
        16 => decode_hex(s, &mut id[8..], true).ok_or(InvalidReason::B3Hex)?,
        _ => return Err(InvalidReason::B3Format),
    }
    if id == [0; 16] {
        return Err(InvalidReason::B3ZeroId);
    }
    Ok(id)
}

fn b3_span_id(s: &[u8]) -> Result<[u8; 8], InvalidReason> {
    let mut id = [0u8; 8];
    if s.len() != 16 {
        return Err(InvalidReason::B3Format);
    }
    decode_hex(s, &mut id, true).ok_or(InvalidReason::B3Hex)?;
    if id == [0; 8] {
        return Err(InvalidReason::B3ZeroId);
    }
    Ok(id)
}

fn b3_sampling(s: &[u8]) -> Result<bool, InvalidReason> {
    match s {
        b"1" | b"d" | b"true" => Ok(true),
        b"0" | b"false" => Ok(false),
        _ => Err(InvalidReason::B3Format),
    }
}

/// Parse the single `b3` header: `{trace}-{span}[-{sampled}[-{parent}]]`, or
/// a lone sampling state (no context).
pub fn parse_b3_single(v: &str) -> Result<Option<TraceContext>, InvalidReason> {
    let v = v.trim().as_bytes();
    let mut parts = v.split(|&c| c == b'-');
    let first = parts.next().unwrap_or(b"");
    let Some(span) = parts.next() else {
        // Only a sampling decision: nothing to join.
        return b3_sampling(first).map(|_| None);
    };
    let trace_id = b3_trace_id(first)?;
    let parent_span_id = b3_span_id(span)?;
    let sampled = parts.next().map(b3_sampling).transpose()?;
    if let Some(parent) = parts.next() {
        b3_span_id(parent)?;
    }
    if parts.next().is_some() {
        return Err(InvalidReason::B3Format);
    }
    Ok(Some(TraceContext {
        trace_id,
        parent_span_id,
        sampled,
        tracestate: None,
    }))
}

/// Parse the multi-header form (`X-B3-TraceId`, `X-B3-SpanId`, ...).
pub fn parse_b3_multi(h: &RequestHeaders) -> Result<Option<TraceContext>, InvalidReason> {
    let flags_debug = match h.get(Header::XB3Flags).map(str::trim) {
        None => false,
        Some("1") => true,
        Some("0") => false,
        Some(_) => return Err(InvalidReason::B3Format),
    };
    let sampled = h
        .get(Header::XB3Sampled)
        .map(|s| b3_sampling(s.trim().as_bytes()))
        .transpose()?;
    let sampled = if flags_debug { Some(true) } else { sampled };
    let (trace, span) = match (h.get(Header::XB3TraceId), h.get(Header::XB3SpanId)) {
        (None, None) => return Ok(None),
        (Some(t), Some(s)) => (t.trim(), s.trim()),
        _ => return Err(InvalidReason::B3Format),
    };
    let trace_id = b3_trace_id(trace.as_bytes())?;
    let parent_span_id = b3_span_id(span.as_bytes())?;
    if let Some(p) = h.get(Header::XB3ParentSpanId) {
        b3_span_id(p.trim().as_bytes())?;
    }
    Ok(Some(TraceContext {
        trace_id,
        parent_span_id,
        sampled,
        tracestate: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers() -> RequestHeaders {
        RequestHeaders::default()
    }

    #[test]
    fn valid_traceparent() {
        let c = parse_traceparent(TP).unwrap();
        assert_eq!(c.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(c.parent_span_id_hex(), "b7ad6b7169203331");
        assert_eq!(c.sampled, Some(true));
        assert_eq!(format_traceparent(&c.trace_id, &c.parent_span_id, true), TP);
    }

    #[test]
    fn traceparent_rules() {
        use InvalidReason::*;
        let cases = [
            (
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                TraceparentVersion,
            ),
            (
                "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                TraceparentVersion,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
                TraceparentFormat,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
                TraceparentFormat,
            ),
            (
                "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                TraceparentFormat,
            ),
            (
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                TraceparentHex,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",
                TraceparentHex,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
                TraceparentHex,
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                TraceparentZeroId,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                TraceparentZeroId,
            ),
            ("", TraceparentFormat),
            (
                "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
                TraceparentFormat,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(parse_traceparent(v), Err(want), "{v}");
        }
        // A future version may carry more fields and is read leniently.
        let c =
            parse_traceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-what-ever")
                .unwrap();
        assert_eq!(c.sampled, Some(false));
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09").is_ok()
        );
    }

    #[test]
    fn tracestate_rules() {
        assert!(validate_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").is_ok());
        assert!(validate_tracestate("a@b=1, ,c=2 ").is_ok());
        assert!(validate_tracestate("").is_ok());
        for bad in [
            "Rojo=1", "a=1,a=2", "a", "a=", "a=b=c", "1a=x", "a@=1", "a=ü",
        ] {
            assert_eq!(
                validate_tracestate(bad),
                Err(InvalidReason::Tracestate),
                "{bad}"
            );
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(validate_tracestate(&many.join(",")).is_err());
        assert!(validate_tracestate(&many[..32].join(",")).is_ok());
    }

    #[test]
    fn b3_single_forms() {
        let c =
            parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .unwrap()
                .unwrap();
        assert_eq!(c.trace_id_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(c.parent_span_id_hex(), "e457b5a2e4d86bd1");
        assert_eq!(c.sampled, Some(true));
        let c = parse_b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1")
            .unwrap()
            .unwrap();
        assert_eq!(c.trace_id_hex(), "000000000000000064fe8b2a57d3eff7");
        assert_eq!(c.sampled, None);
        assert_eq!(parse_b3_single("d").unwrap(), None);
        assert_eq!(parse_b3_single("0").unwrap(), None);
        use InvalidReason::*;
        for (bad, why) in [
            ("x", B3Format),
            ("64fe8b2a57d3eff7-e457b5a2e4d86bd1-2", B3Format),
            ("64fe8b2a57d3eff-e457b5a2e4d86bd1", B3Format),
            ("64fe8b2a57d3effz-e457b5a2e4d86bd1", B3Hex),
            ("0000000000000000-e457b5a2e4d86bd1", B3ZeroId),
            ("64fe8b2a57d3eff7-0000000000000000", B3ZeroId),
            (
                "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
                B3Format,
            ),
        ] {
            assert_eq!(parse_b3_single(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn b3_multi_forms() {
        let mut h = headers();
        h.set(Header::XB3TraceId, "80f198ee56343ba864fe8b2a57d3eff7");
        h.set(Header::XB3SpanId, "e457b5a2e4d86bd1");
        h.set(Header::XB3Sampled, "0");
        let c = parse_b3_multi(&h).unwrap().unwrap();
        assert_eq!(c.sampled, Some(false));
        h.set(Header::XB3Flags, "1");
        assert_eq!(parse_b3_multi(&h).unwrap().unwrap().sampled, Some(true));
        h.remove(Header::XB3SpanId);
        assert_eq!(parse_b3_multi(&h), Err(InvalidReason::B3Format));
        assert_eq!(parse_b3_multi(&headers()), Ok(None));
    }

    #[test]
    fn extract_precedence_and_invalid_reports() {
        let mut h = headers();
        assert_eq!(extract(&h), Extracted::default());
        h.set(
            Header::B3,
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        );
        h.set(Header::Traceparent, TP);
        h.set(Header::Tracestate, "rojo=1");
        let e = extract(&h);
        let c = e.context.unwrap();
        assert_eq!(c.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(c.tracestate.as_deref(), Some("rojo=1"));
        assert_eq!(e.invalid, None);
        // Invalid traceparent: B3 is used, and the reason is reported.
        h.set(Header::Traceparent, &TP.replace("00-", "ff-"));
        let e = extract(&h);
        assert_eq!(
            e.context.unwrap().trace_id_hex(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(e.invalid, Some(InvalidReason::TraceparentVersion));
        // Invalid tracestate is dropped, traceparent kept.
        h.set(Header::Traceparent, TP);
        h.set(Header::Tracestate, "BAD");
        let e = extract(&h);
        assert_eq!(
            (e.context.unwrap().tracestate, e.invalid),
            (None, Some(InvalidReason::Tracestate))
        );
        let mut counts = InvalidCounts::default();
        counts.record(InvalidReason::Tracestate);
        assert_eq!(counts.get(InvalidReason::Tracestate), 1);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parsers_never_panic(s in ".{0,80}", t in "[0-9a-fA-F-]{0,80}") {
            for v in [&s, &t] {
                let _ = parse_traceparent(v);
                let _ = validate_tracestate(v);
                let _ = parse_b3_single(v);
                let mut h = RequestHeaders::default();
                for which in [Header::Traceparent, Header::Tracestate, Header::B3,
                    Header::XB3TraceId, Header::XB3SpanId] {
                    h.set(which, v);
                }
                let _ = extract(&h);
                let _ = parse_b3_multi(&h);
            }
        }

        #[test]
        fn traceparent_round_trips(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), sampled in any::<bool>()) {
            let v = format_traceparent(&trace, &span, sampled);
            match parse_traceparent(&v) {
                Ok(c) => {
                    prop_assert_eq!(c.trace_id, trace);
                    prop_assert_eq!(c.parent_span_id, span);
                    prop_assert_eq!(c.sampled, Some(sampled));
                    prop_assert_eq!(format_traceparent(&c.trace_id, &c.parent_span_id, sampled), v);
                }
                Err(r) => {
                    prop_assert_eq!(r, InvalidReason::TraceparentZeroId);
                    prop_assert!(trace == [0; 16] || span == [0; 8]);
                }
            }
        }

        #[test]
        fn b3_round_trips(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>()) {
            prop_assume!(trace != [0; 16] && span != [0; 8]);
            let v = format!("{}-{}-1", hex_lower(&trace), hex_lower(&span));
            let c = parse_b3_single(&v).unwrap().unwrap();
            prop_assert_eq!((c.trace_id, c.parent_span_id, c.sampled), (trace, span, Some(true)));
        }
    }
}
