//! Bounding and redacting what leaves the agent from requests it observed:
//! span attributes and request log fields are copied from other people's
//! traffic, so they are capped in length and query values are withheld.

/// What a withheld query value becomes (the OpenTelemetry semantic
/// conventions' choice for scrubbed `url.query` values).
pub const REDACTED: &str = "REDACTED";

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `query` with every value replaced by [`REDACTED`] except those of keys in
/// `allow` (compared as sent, before percent-decoding). Keys and parameter
/// order stay: which parameters a request used is useful, their values may
/// be tokens, e-mail addresses or session ids.
pub fn redact_query(query: &str, allow: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() && !allow.iter().any(|a| a == k) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_withheld_unless_allowed() {
        let allow = vec!["page".to_string(), "sort".to_string()];
        assert_eq!(
            redact_query(
                "user=alice&token=s3cret&page=2&flag&empty=&sort=asc",
                &allow
            ),
            "user=REDACTED&token=REDACTED&page=2&flag&empty=&sort=asc"
        );
        assert_eq!(redact_query("a=1=2", &[]), "a=REDACTED");
        assert_eq!(redact_query("", &[]), "");
        // Case matters: keys are compared as sent.
        assert_eq!(redact_query("Page=2", &allow), "Page=REDACTED");
    }

    #[test]
    fn cap_cuts_at_a_character_boundary() {
        assert_eq!(cap("abcdef", 4), "abcd");
        assert_eq!(cap("abc", 4), "abc");
        // "é" is two bytes: never cut in the middle.
        assert_eq!(cap("aé", 2), "a");
        assert_eq!(cap(&"x".repeat(16 * 1024), 256).len(), 256);
    }
}
