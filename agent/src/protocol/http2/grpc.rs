//! gRPC over HTTP/2 (the gRPC "PROTOCOL-HTTP2" spec): what marks a call,
//! its status and its deadline.

/// What a gRPC call adds to its HTTP/2 exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcCall {
    /// `grpc-status` from the trailers (or a Trailers-Only response); `None`
    /// when the call ended without one (reset, connection lost).
    pub status: Option<u8>,
    /// `grpc-timeout` of the request, in nanoseconds.
    pub timeout_ns: Option<u64>,
}

/// gRPC status codes that count as server errors: the "5xx burst" of an RPC
/// route for L2 and the error ratio of its SLO. UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS (docs/decisions.md).
pub const SERVER_ERROR_CODES: [u8; 6] = [2, 4, 12, 13, 14, 15];

impl GrpcCall {
    /// The call failed on the server's side (see [`SERVER_ERROR_CODES`]). A
    /// call without a status (reset, connection lost) is incomplete, as an
    /// HTTP/1 exchange without a response is: not a server error.
    pub fn is_server_error(&self) -> bool {
        self.status.is_some_and(|s| SERVER_ERROR_CODES.contains(&s))
    }
}

/// Canonical names of the gRPC status codes, by code.
pub const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `content-type: application/grpc` or `application/grpc+proto` etc.
pub fn is_grpc_content_type(v: &[u8]) -> bool {
    let p = b"application/grpc";
    v.len() >= p.len()
        && v[..p.len()].eq_ignore_ascii_case(p)
        && matches!(v.get(p.len()), None | Some(b'+' | b';'))
}

/// `grpc-status`: a decimal code 0..=16; others (and garbage) are UNKNOWN (2),
/// as gRPC clients treat them.
pub fn parse_status(v: &[u8]) -> u8 {
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
    {
        Some(c) if c <= 16 => c,
        _ => 2,
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H M S m u n), in nanoseconds.
pub fn parse_timeout(v: &[u8]) -> Option<u64> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let per = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    n.checked_mul(per)
}

/// `/package.Service/Method` split into service and method; `None` for a
/// path of another shape.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (svc, method) = rest.split_once('/')?;
    (!svc.is_empty() && !method.is_empty() && !method.contains('/')).then_some((svc, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_statuses_and_paths() {
        assert_eq!(parse_timeout(b"100m"), Some(100_000_000));
        assert_eq!(parse_timeout(b"1S"), Some(1_000_000_000));
        assert_eq!(
            parse_timeout(b"99999999H"),
            None,
            "overflows u64 ns: no deadline"
        );
        assert_eq!(
            parse_timeout(b"99999999S"),
            Some(99_999_999 * 1_000_000_000)
        );
        assert_eq!(parse_timeout(b"123456789m"), None, "at most 8 digits");
        assert_eq!(parse_timeout(b"m"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_status(b"14"), 14);
        assert_eq!(parse_status(b"0"), 0);
        assert_eq!(parse_status(b"99"), 2);
        assert_eq!(parse_status(b"x"), 2);
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert_eq!(split_path("/pkg.Svc/Get"), Some(("pkg.Svc", "Get")));
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("/x"), None);
        for (code, server) in [
            (0, false),
            (1, false),
            (5, false),
            (14, true),
            (4, true),
            (2, true),
        ] {
            let c = GrpcCall {
                status: Some(code),
                timeout_ns: None,
            };
            assert_eq!(c.is_server_error(), server, "{code}");
        }
    }
}
