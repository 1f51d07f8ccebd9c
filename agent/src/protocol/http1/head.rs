//! HTTP/1.x message heads: cheap recognition of a message start, parsing of
//! complete heads (httparse), and best-effort parsing of truncated ones.
use std::mem::MaybeUninit;

use crate::request::{Header, RequestHeaders};

/// Which kind of message a head starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MsgKind {
    Request,
    Response,
}

impl MsgKind {
    pub(crate) fn opposite(self) -> Self {
        match self {
            MsgKind::Request => MsgKind::Response,
            MsgKind::Response => MsgKind::Request,
        }
    }
}

/// What the first bytes of a message say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Classify {
    Request,
    Response,
    NotHttp,
    /// Too few bytes to decide, but consistent with HTTP/1.x so far.
    NeedMore,
}

/// Longest method we accept (registered methods are at most 17 characters).
const MAX_METHOD: usize = 24;
const RESPONSE_PREFIX: &[u8] = b"HTTP/1.";

fn is_method_byte(b: u8) -> bool {
    // Real methods are upper-case tokens; refusing lower case rejects text
    // protocols and garbage after a few bytes instead of a whole line.
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Lenient, prefix-based recognition used on the first bytes of a message.
pub(crate) fn classify(b: &[u8]) -> Classify {
    if b.is_empty() {
        return Classify::NeedMore;
    }
    let n = b.len().min(RESPONSE_PREFIX.len());
    if b[..n] == RESPONSE_PREFIX[..n] {
        return if n == RESPONSE_PREFIX.len() {
            Classify::Response
        } else if n >= 2 {
            Classify::NeedMore
        } else {
            // A lone "H" may still be HEAD.
            Classify::NeedMore
        };
    }
    let m = b
        .iter()
        .take(MAX_METHOD + 1)
        .take_while(|&&c| is_method_byte(c))
        .count();
    if m == 0 || m > MAX_METHOD {
        return Classify::NotHttp;
    }
    if m == b.len() {
        return Classify::NeedMore;
    }
    if b[m] != b' ' {
        return Classify::NotHttp;
    }
    // The HTTP/2 connection preface reads like a request line.
    if &b[..m] == b"PRI" {
        return Classify::NotHttp;
    }
    match b.get(m + 1) {
        None => Classify::NeedMore,
        Some(&c) if c == b'/' || c == b'*' || c.is_ascii_alphanumeric() => Classify::Request,
        Some(_) => Classify::NotHttp,
    }
}

/// Strict check that `b` begins with a whole start line of `kind`: used to
/// find the next message after framing was lost, where a false start costs more.
pub(crate) fn is_definite_start(b: &[u8], kind: MsgKind) -> bool {
    let b = skip_empty_lines(b);
    match kind {
        MsgKind::Response => {
            b.len() >= 13
                && b.starts_with(RESPONSE_PREFIX)
                && b[7].is_ascii_digit()
                && b[8] == b' '
                && b[9..12].iter().all(u8::is_ascii_digit)
                && matches!(b[12], b' ' | b'\r' | b'\n')
        }
        MsgKind::Request => {
            if classify(b) != Classify::Request {
                return false;
            }
            let Some(eol) = b.iter().position(|&c| c == b'\n') else {
                return false;
            };
            let line = b[..eol].strip_suffix(b"\r").unwrap_or(&b[..eol]);
            line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
        }
    }
}

pub(crate) fn skip_empty_lines(mut b: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = b {
        b = rest;
    }
    b
}

/// How a message's body is delimited, as its head declares it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Framing {
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` present.
    pub transfer_encoding: bool,
    /// The last transfer coding is `chunked`.
    pub chunked: bool,
    /// `Content-Length` unparsable or given twice with different values.
    pub bad_length: bool,
}

impl Framing {
    fn content_length(&mut self, value: &[u8]) {
        // Lists like "12, 12" are legal when all members agree.
        let mut parsed: Option<u64> = None;
        for part in value.split(|&c| c == b',') {
            match parse_decimal(trim(part)) {
                Some(v) if parsed.is_none_or(|p| p == v) => parsed = Some(v),
                _ => {
                    self.bad_length = true;
                    return;
                }
            }
        }
        match (self.content_length, parsed) {
            (Some(a), Some(b)) if a != b => self.bad_length = true,
            (_, p) => self.content_length = p,
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        let last = value.rsplit(|&c| c == b',').next().map(trim).unwrap_or(b"");
        self.chunked = last.eq_ignore_ascii_case(b"chunked");
    }
}

fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub method: String,
    pub target: String,
    pub version_minor: u8,
    pub headers: RequestHeaders,
    pub framing: Framing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub version_minor: u8,
    pub framing: Framing,
}

// Transient return values: boxing would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

impl Head {
    pub(crate) fn kind(&self) -> MsgKind {
        match self {
            Head::Request(_) => MsgKind::Request,
            Head::Response(_) => MsgKind::Response,
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadParse {
    /// A whole head of `len` bytes (the body starts after it).
    Complete { head: Head, len: usize },
    /// The head does not end within these bytes.
    Partial,
    /// Not a valid HTTP/1.x head.
    Invalid,
}

/// Headers parsed on the stack before falling back to the heap.
const STACK_HEADERS: usize = 64;

fn parser_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_obsolete_multiline_headers_in_responses(true);
    c
}

/// Parse a head at the start of `buf` (leading empty lines allowed).
pub(crate) fn parse_head(buf: &[u8]) -> HeadParse {
    match classify(skip_empty_lines(buf)) {
        Classify::Request => parse_request(buf),
        Classify::Response => parse_response(buf),
        Classify::NotHttp => HeadParse::Invalid,
        Classify::NeedMore => HeadParse::Partial,
    }
}

fn header_lines(buf: &[u8]) -> usize {
    buf.iter().filter(|&&c| c == b'\n').count() + 1
}

type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; STACK_HEADERS];

fn parse_request(buf: &[u8]) -> HeadParse {
    // Uninitialised slots: no 2 KiB fill per head.
    let mut slots: HeaderSlots<'_> = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match parser_config().parse_request_with_uninit_headers(&mut req, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => HeadParse::Complete {
            head: request_head(&req),
            len,
        },
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            // Rare: size the heap array by the lines present.
            let mut heap = vec![httparse::EMPTY_HEADER; header_lines(buf)];
            let mut req = httparse::Request::new(&mut heap);
            match parser_config().parse_request(&mut req, buf) {
                Ok(httparse::Status::Complete(len)) => HeadParse::Complete {
                    head: request_head(&req),
                    len,
                },
                Ok(httparse::Status::Partial) => HeadParse::Partial,
                Err(_) => HeadParse::Invalid,
            }
        }
        Err(_) => HeadParse::Invalid,
    }
}

fn parse_response(buf: &[u8]) -> HeadParse {
    let mut slots: HeaderSlots<'_> = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match parser_config().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => complete_response(&resp, len),
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            let mut heap = vec![httparse::EMPTY_HEADER; header_lines(buf)];
            let mut resp = httparse::Response::new(&mut heap);
            match parser_config().parse_response(&mut resp, buf) {
                Ok(httparse::Status::Complete(len)) => complete_response(&resp, len),
                Ok(httparse::Status::Partial) => HeadParse::Partial,
                Err(_) => HeadParse::Invalid,
            }
        }
        Err(_) => HeadParse::Invalid,
    }
}

fn request_head(req: &httparse::Request<'_, '_>) -> Head {
    let mut headers = RequestHeaders::default();
    let mut framing = Framing::default();
    for h in req.headers.iter() {
        request_header(&mut headers, &mut framing, h.name.as_bytes(), h.value);
    }
    Head::Request(RequestHead {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        version_minor: req.version.unwrap_or(1),
        headers,
        framing,
    })
}

/// Lowest status code: httparse takes any three digits, but below 100 there
/// is no HTTP status, and 0 means "no response" in a record.
const MIN_STATUS: u16 = 100;

fn complete_response(resp: &httparse::Response<'_, '_>, len: usize) -> HeadParse {
    if resp.code.unwrap_or(0) < MIN_STATUS {
        return HeadParse::Invalid;
    }
    HeadParse::Complete {
        head: response_head(resp),
        len,
    }
}

fn response_head(resp: &httparse::Response<'_, '_>) -> Head {
    let mut framing = Framing::default();
    for h in resp.headers.iter() {
        framing_header(&mut framing, h.name.as_bytes(), h.value);
    }
    Head::Response(ResponseHead {
        status: resp.code.unwrap_or(0),
        version_minor: resp.version.unwrap_or(1),
        framing,
    })
}

fn framing_header(framing: &mut Framing, name: &[u8], value: &[u8]) -> bool {
    if name.eq_ignore_ascii_case(b"content-length") {
        framing.content_length(value);
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        framing.transfer_encoding(value);
    } else {
        return false;
    }
    true
}

fn set_once(h: &mut RequestHeaders, which: Header, value: &[u8]) {
    if h.get(which).is_none() {
        let v = trim(value);
        match std::str::from_utf8(v) {
            Ok(s) => h.set(which, s),
            Err(_) => h.set(which, &String::from_utf8_lossy(v)),
        }
    }
}

/// Keep the request headers later stages read; names compare case-insensitively.
pub(crate) fn request_header(
    h: &mut RequestHeaders,
    framing: &mut Framing,
    name: &[u8],
    value: &[u8],
) {
    let which = match name.len() {
        2 if name.eq_ignore_ascii_case(b"b3") => Header::B3,
        4 if name.eq_ignore_ascii_case(b"host") => Header::Host,
        10 if name.eq_ignore_ascii_case(b"user-agent") => Header::UserAgent,
        10 if name.eq_ignore_ascii_case(b"tracestate") => Header::Tracestate,
        10 if name.eq_ignore_ascii_case(b"x-b3-flags") => Header::XB3Flags,
        11 if name.eq_ignore_ascii_case(b"traceparent") => Header::Traceparent,
        11 if name.eq_ignore_ascii_case(b"x-b3-spanid") => Header::XB3SpanId,
        12 if name.eq_ignore_ascii_case(b"x-b3-traceid") => Header::XB3TraceId,
        12 if name.eq_ignore_ascii_case(b"x-b3-sampled") => Header::XB3Sampled,
        12 if name.eq_ignore_ascii_case(b"x-request-id") => Header::XRequestId,
        18 if name.eq_ignore_ascii_case(b"x-b3-parentspanid") => Header::XB3ParentSpanId,
        // Credentials: whether they were sent, never what (request snapshots).
        6 if name.eq_ignore_ascii_case(b"cookie") => return h.mark(Header::Cookie),
        13 if name.eq_ignore_ascii_case(b"authorization") => return h.mark(Header::Authorization),
        19 if name.eq_ignore_ascii_case(b"proxy-authorization") => {
            return h.mark(Header::ProxyAuthorization);
        }
        _ => {
            if !framing_header(framing, name, value)
                && crate::request::route::gray::is_gray_header(name)
            {
                append_gray(h, value);
            }
            return;
        }
    };
    set_once(h, which, value);
}

/// Bytes of gray header values kept per request (a tag is a few pairs).
const GRAY_VALUES_CAP: usize = 2048;

/// Gray tags from every gray header (and repeated ones) in order, joined by
/// `,`: the cohort parser gives the first occurrence of a key priority.
fn append_gray(h: &mut RequestHeaders, value: &[u8]) {
    let v = String::from_utf8_lossy(trim(value));
    match h.x_gray_tag() {
        None => h.set(Header::XGrayTag, &v),
        // Bounded: a head of repeated gray headers must not cost quadratic copies.
        Some(old) if old.len() >= GRAY_VALUES_CAP => {}
        Some(old) => {
            let joined = format!("{old},{v}");
            h.set(Header::XGrayTag, &joined);
        }
    }
}

/// Parse what a truncated capture holds: the whole lines present, and a
/// request line cut short if need be. `None` when not even the start line
/// can be read. Framing from a truncated head is not trusted by callers.
pub(crate) fn parse_truncated(buf: &[u8], scratch: &mut Vec<u8>) -> Option<Head> {
    let buf = skip_empty_lines(buf);
    let kind = match classify(buf) {
        Classify::Request => MsgKind::Request,
        Classify::Response => MsgKind::Response,
        _ => return None,
    };
    if let Some(last_nl) = buf.iter().rposition(|&c| c == b'\n') {
        scratch.clear();
        scratch.extend_from_slice(&buf[..=last_nl]);
        scratch.extend_from_slice(b"\r\n");
        let parsed = match kind {
            MsgKind::Request => parse_request(scratch),
            MsgKind::Response => parse_response(scratch),
        };
        if let HeadParse::Complete { head, .. } = parsed {
            return Some(head);
        }
    }
    // The start line itself is cut: keep the method and the target prefix.
    let line_end = buf.iter().position(|&c| c == b'\n').unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    match kind {
        MsgKind::Request => {
            let sp = line.iter().position(|&c| c == b' ')?;
            let rest = &line[sp + 1..];
            let target = rest.split(|&c| c == b' ').next().unwrap_or(b"");
            if target.is_empty() || target.iter().any(|c| c.is_ascii_control()) {
                return None;
            }
            Some(Head::Request(RequestHead {
                method: String::from_utf8_lossy(&line[..sp]).into_owned(),
                target: String::from_utf8_lossy(target).into_owned(),
                version_minor: 1,
                headers: RequestHeaders::default(),
                framing: Framing::default(),
            }))
        }
        MsgKind::Response => {
            if line.len() < 12 || line[8] != b' ' || !line[7].is_ascii_digit() {
                return None;
            }
            let code = &line[9..12];
            let status = parse_decimal(code).filter(|_| code.len() == 3)? as u16;
            if status < MIN_STATUS {
                return None;
            }
            Some(Head::Response(ResponseHead {
                status,
                version_minor: line[7] - b'0',
                framing: Framing::default(),
            }))
        }
    }
}

/// Finds the end of a head (an empty line) across chunk boundaries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeadEndScan {
    /// 0: inside a line, 1: at a line start, 2: at a line start after '\r'.
    state: u8,
}

impl HeadEndScan {
    pub(crate) fn reset(&mut self) {
        self.state = 0;
    }

    /// Index of the byte that ends the head (the final '\n'), if in `b`.
    pub(crate) fn find(&mut self, b: &[u8]) -> Option<usize> {
        for (i, &c) in b.iter().enumerate() {
            self.state = match (self.state, c) {
                (1 | 2, b'\n') => {
                    self.state = 0;
                    return Some(i);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                (0, b'\r') => 0,
                _ => 0,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_starts() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Classify::Request);
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n"), Classify::Response);
        assert_eq!(classify(b"H"), Classify::NeedMore);
        assert_eq!(classify(b"HE"), Classify::NeedMore);
        assert_eq!(classify(b"HEAD /"), Classify::Request);
        assert_eq!(classify(b"HTTP/2 200"), Classify::NotHttp);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Classify::NotHttp
        );
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Classify::NotHttp);
        assert_eq!(classify(b"get / HTTP/1.1"), Classify::NotHttp);
        assert_eq!(classify(b"GET  /"), Classify::NotHttp);
    }

    #[test]
    fn definite_starts() {
        assert!(is_definite_start(
            b"GET /a HTTP/1.1\r\nHost: x\r\n",
            MsgKind::Request
        ));
        assert!(is_definite_start(
            b"\r\nPOST /a HTTP/1.0\n",
            MsgKind::Request
        ));
        assert!(!is_definite_start(b"GET /a HTTP/1.1", MsgKind::Request));
        assert!(!is_definite_start(b"GET /a HTTP/2.0\r\n", MsgKind::Request));
        assert!(is_definite_start(
            b"HTTP/1.1 204 No Content\r\n",
            MsgKind::Response
        ));
        assert!(!is_definite_start(b"HTTP/1.1 2x4 \r\n", MsgKind::Response));
    }

    #[test]
    fn request_head_and_headers() {
        let buf = b"POST /u/1?x=2 HTTP/1.1\r\nHOST: a\r\nTraceparent: tp \r\nX-B3-TraceId: t\r\nx-gray-tag: canary\r\nContent-Length: 5\r\n\r\nhello";
        let HeadParse::Complete {
            head: Head::Request(r),
            len,
        } = parse_head(buf)
        else {
            panic!("not complete")
        };
        assert_eq!(len, buf.len() - 5);
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/u/1?x=2");
        assert_eq!(r.headers.host(), Some("a"));
        assert_eq!(r.headers.traceparent(), Some("tp"));
        assert_eq!(r.headers.get(Header::XB3TraceId), Some("t"));
        assert_eq!(r.headers.x_gray_tag(), Some("canary"));
        assert_eq!(r.framing.content_length, Some(5));
    }

    #[test]
    fn framing_rules() {
        let mut f = Framing::default();
        f.content_length(b"12, 12");
        assert_eq!((f.content_length, f.bad_length), (Some(12), false));
        f.content_length(b"13");
        assert!(f.bad_length);
        let mut f = Framing::default();
        f.content_length(b"-1");
        assert!(f.bad_length);
        f.transfer_encoding(b"gzip, Chunked");
        assert!(f.chunked && f.transfer_encoding);
        f.transfer_encoding(b"chunked, gzip");
        assert!(!f.chunked);
    }

    #[test]
    fn many_headers_fall_back_to_heap() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"X-Request-Id: abc\r\n\r\n");
        let HeadParse::Complete {
            head: Head::Request(r),
            ..
        } = parse_head(&buf)
        else {
            panic!("not complete")
        };
        assert_eq!(r.headers.x_request_id(), Some("abc"));
    }

    #[test]
    fn truncated_heads_keep_what_is_there() {
        let mut s = Vec::new();
        let h = parse_truncated(b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Ag", &mut s).unwrap();
        let Head::Request(r) = h else { panic!() };
        assert_eq!((r.target.as_str(), r.headers.host()), ("/a", Some("h")));
        let Head::Request(r) = parse_truncated(b"GET /very/long/pa", &mut s).unwrap() else {
            panic!()
        };
        assert_eq!(r.target, "/very/long/pa");
        let Head::Response(r) = parse_truncated(b"HTTP/1.1 503 Serv", &mut s).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, 503);
        assert!(parse_truncated(b"HTTP/1.1 5", &mut s).is_none());
        assert!(parse_truncated(b"\x16\x03\x01", &mut s).is_none());
    }

    /// Found by fuzzing: httparse takes any three digits, so `HTTP/1.1 000`
    /// made a complete exchange with status 0, the value that means "no
    /// response" (and a `http_response_status_code="0"` series).
    #[test]
    fn status_below_100_is_not_a_response() {
        for head in [
            &b"HTTP/1.1 000 OK\r\n\r\n"[..],
            b"HTTP/1.0 042 X\r\nA: b\r\n\r\n",
        ] {
            assert_eq!(parse_head(head), HeadParse::Invalid, "{head:?}");
        }
        let mut s = Vec::new();
        assert!(parse_truncated(b"HTTP/1.1 099 Cut", &mut s).is_none());
        assert!(parse_truncated(b"HTTP/1.1 000 OK\r\nServer: x\r\nCont", &mut s).is_none());
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\n"),
            HeadParse::Complete { .. }
        ));
    }

    #[test]
    fn head_end_scan_across_boundaries() {
        let head = b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY";
        for split in 0..head.len() {
            let mut s = HeadEndScan::default();
            let (a, b) = head.split_at(split);
            let found = s.find(a).or_else(|| s.find(b).map(|i| i + a.len()));
            assert_eq!(found, Some(head.len() - 5), "split {split}");
        }
        let mut s = HeadEndScan::default();
        assert_eq!(s.find(b"GET / HTTP/1.0\n\nx"), Some(15));
    }
}
