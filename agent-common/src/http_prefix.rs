//! Does a byte stream start like HTTP/1.x? Shared by the probe (which decides
//! whether to copy payload) and userspace (which can re-check), so both agree.
//!
//! Works on the first 8 bytes loaded as a little-endian `u64`, so the probe
//! needs one 8-byte user read and a few compares, no loop the verifier must bound.

/// How many leading bytes [`classify`] looks at.
pub const PREFIX_LEN: usize = 8;

/// Verdict on the first bytes of a connection's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixClass {
    /// A request method and a space, or `HTTP/1.`.
    Http,
    /// The HTTP/2 client connection preface (`PRI * HTTP/2.0`, prior
    /// knowledge, or TLS plaintext after ALPN `h2`): its first 8 bytes.
    Http2,
    /// Cannot be HTTP/1.x.
    NotHttp,
    /// Too few bytes to tell, and they match the start of a pattern.
    Undecided,
}

/// `(pattern as little-endian u64, its length)`; every pattern fits in 8 bytes.
const PATTERNS: [(u64, usize); 10] = [
    (word(b"GET "), 4),
    (word(b"PUT "), 4),
    (word(b"POST "), 5),
    (word(b"HEAD "), 5),
    (word(b"PATCH "), 6),
    (word(b"TRACE "), 6),
    (word(b"DELETE "), 7),
    (word(b"HTTP/1."), 7),
    (word(b"OPTIONS "), 8),
    (word(b"CONNECT "), 8),
];

const fn word(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
        w |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

#[inline(always)]
const fn mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// `PRI * HT`: the first 8 bytes of the HTTP/2 client preface.
const H2_PREFACE: u64 = word(b"PRI * HT");

/// Whether the first `n` bytes in `w` start like an HTTP/2 server's first
/// frame, its SETTINGS on stream 0 (length < 64 KiB, type 4, no flags):
/// a server may write it before it reads the client's preface, so the
/// connection must stay undecided rather than be judged not HTTP.
#[inline(always)]
pub fn is_h2_server_settings(w: u64, n: usize) -> bool {
    // Bytes 0 (length high), 3 (type), 4 (flags), 5..8 (stream id).
    n >= 8 && w & 0xffff_ffff_ff00_00ff == 0x0000_0000_0400_0000
}

/// Classify a stream whose first `n` bytes (`n` ≥ 1; bytes past `n` ignored)
/// are `w`, loaded little-endian.
#[inline(always)]
pub fn classify(w: u64, n: usize) -> PrefixClass {
    let m = mask(if n < 8 { n } else { 8 });
    if (w & m) == (H2_PREFACE & m) && n > 0 {
        return if n >= 8 {
            PrefixClass::Http2
        } else {
            PrefixClass::Undecided
        };
    }
    if is_h2_server_settings(w, n) {
        return PrefixClass::Undecided;
    }
    let mut undecided = false;
    let mut i = 0;
    while i < PATTERNS.len() {
        let (pat, len) = PATTERNS[i];
        let m = if n < len { mask(n) } else { mask(len) };
        if (w & m) == (pat & m) {
            if n >= len {
                return PrefixClass::Http;
            }
            undecided = true;
        }
        i += 1;
    }
    if undecided || n == 0 {
        PrefixClass::Undecided
    } else {
        PrefixClass::NotHttp
    }
}

/// Whether a stream (first `n` bytes in `w`, little-endian) starts with a TLS
/// record header: content type 20..=24 (change_cipher_spec, alert,
/// handshake, application_data, heartbeat) and major version 3. Checked only
/// on streams [`classify`] found not HTTP, so the socket's ciphertext is
/// counted as TLS rather than as unknown bytes.
#[inline(always)]
pub fn is_tls_record(w: u64, n: usize) -> bool {
    let ty = (w & 0xff) as u8;
    n >= 2 && (20..=24).contains(&ty) && ((w >> 8) & 0xff) == 3
}

/// [`classify`] for a byte slice (userspace convenience).
pub fn classify_bytes(bytes: &[u8]) -> PrefixClass {
    let n = bytes.len().min(PREFIX_LEN);
    let mut buf = [0u8; PREFIX_LEN];
    buf[..n].copy_from_slice(&bytes[..n]);
    classify(u64::from_le_bytes(buf), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_http() {
        for s in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1",
            b"PUT /",
            b"DELETE /a",
            b"HEAD / ",
            b"OPTIONS * HTTP/1.1",
            b"PATCH /p",
            b"CONNECT host:443",
            b"TRACE / HTTP/1.0",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 404",
        ] {
            assert_eq!(classify_bytes(s), PrefixClass::Http, "{:?}", s);
        }
    }

    #[test]
    fn other_protocols_are_not_http() {
        for s in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01"[..], // TLS ClientHello
            b"HTTP/2 200",
            b"\x00\x00\x12\x04\x01\x00\x00\x00", // SETTINGS with ACK: not a first frame
            b"\x01\x00\x12\x04\x00\x00\x00\x00", // SETTINGS longer than 64 KiB
            b"GETX / HTTP/1.1",
            b"get / HTTP/1.1",
            b"SSH-2.0-OpenSSH",
            b"\0\0\0\0\0\0\0\0",
            b"GET/",
            b"{\"a\":1}",
        ] {
            assert_eq!(classify_bytes(s), PrefixClass::NotHttp, "{:?}", s);
        }
    }

    #[test]
    fn http2_preface_and_server_settings() {
        assert_eq!(
            classify_bytes(b"PRI * HTTP/2.0\r\n\r\nSM"),
            PrefixClass::Http2
        );
        assert_eq!(classify_bytes(b"PRI * HT"), PrefixClass::Http2);
        assert_eq!(classify_bytes(b"PRI"), PrefixClass::Undecided);
        assert_eq!(classify_bytes(b"PRI * X"), PrefixClass::NotHttp);
        // nghttp2 and gRPC servers may write SETTINGS before reading the preface.
        assert_eq!(
            classify_bytes(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x03"),
            PrefixClass::Undecided
        );
        assert_eq!(
            classify_bytes(b"\x00\x00\x00\x04\x00\x00\x00\x00"),
            PrefixClass::Undecided
        );
    }

    #[test]
    fn tls_records_are_recognised() {
        let w = |b: &[u8]| {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            (u64::from_le_bytes(a), b.len())
        };
        for b in [
            &b"\x16\x03\x01\x02\x00"[..], // ClientHello
            b"\x17\x03\x03\x00\x20",      // application data
            b"\x15\x03\x03",              // alert
            b"\x14\x03",
        ] {
            let (x, n) = w(b);
            assert!(is_tls_record(x, n), "{b:?}");
        }
        for b in [
            &b"\x16"[..],
            b"\x16\x02\x00",
            b"\x13\x03\x03",
            b"\x19\x03\x03",
            b"GET / HT",
            b"PRI * HT",
        ] {
            let (x, n) = w(b);
            assert!(!is_tls_record(x, n), "{b:?}");
        }
    }

    #[test]
    fn short_prefixes_wait_for_more_bytes() {
        assert_eq!(classify_bytes(b"GE"), PrefixClass::Undecided);
        assert_eq!(classify_bytes(b"HTTP/1"), PrefixClass::Undecided);
        assert_eq!(classify_bytes(b"OPTIONS"), PrefixClass::Undecided);
        assert_eq!(classify_bytes(b""), PrefixClass::Undecided);
        assert_eq!(classify_bytes(b"X"), PrefixClass::NotHttp);
        assert_eq!(classify_bytes(b"GEX"), PrefixClass::NotHttp);
    }

    #[test]
    fn bytes_past_n_are_ignored() {
        let w = u64::from_le_bytes(*b"GE\xff\xff\xff\xff\xff\xff");
        assert_eq!(classify(w, 2), PrefixClass::Undecided);
        let w = u64::from_le_bytes(*b"GET \xff\xff\xff\xff");
        assert_eq!(classify(w, 4), PrefixClass::Http);
    }
}
