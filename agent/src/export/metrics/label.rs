//! Label values that come from outside the agent (routes and methods from
//! the wire, service names from `comm` or Kubernetes, gray tags, endpoints,
//! names from the config), escaped once, when a scrape encodes them.
//!
//! prometheus-client writes label values as they are (its issue "Escaping?",
//! client_rust #151): one `"` or `\` in a request target would make the whole
//! `/metrics` unparsable, and Prometheus would drop every sample of the node
//! until the series went away. The in-memory value stays the real string, so
//! alerts, logs and the admin API's JSON show what was seen; only the
//! exposition escapes it.
use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value written escaped: `\` as `\\`, `"` as `\"`, a line feed as
/// `\n` (the same rules in Prometheus text 0.0.4 and OpenMetrics 1.0). The
/// other control characters but tab have no escape in either format and some
/// parsers split lines at a carriage return (Python's prometheus_client), so
/// they are written as U+FFFD; all other UTF-8 stands as it is.
/// Use it for every label whose value is not a constant of the agent.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Escaped<T>(pub T);

impl<T> From<T> for Escaped<T> {
    fn from(v: T) -> Self {
        Self(v)
    }
}

impl From<&str> for Escaped<String> {
    fn from(v: &str) -> Self {
        Self(v.to_string())
    }
}

impl<T> std::ops::Deref for Escaped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<str>> EncodeLabelValue for Escaped<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write_escaped(encoder, self.0.as_ref())
    }
}

/// Write `value` escaped for a quoted label value (see [`Escaped`]).
pub fn write_escaped(out: &mut impl Write, value: &str) -> std::fmt::Result {
    let mut rest = value;
    // Runs without a special character go out in one piece (the common case:
    // the whole value).
    while let Some(i) = rest.find(needs_escape) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            b'\n' => "\\n",
            _ => "\u{fffd}",
        })?;
        // Every character matched is one byte (ASCII).
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

fn needs_escape(c: char) -> bool {
    matches!(c, '\\' | '"') || (c.is_ascii_control() && c != '\t')
}

/// `value` escaped, as a new string (tests and the few callers outside
/// prometheus-client's encoder).
pub fn escaped(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    let _ = write_escaped(&mut s, value);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_backslash_newline_are_escaped_other_controls_replaced() {
        assert_eq!(escaped("/a\"b"), "/a\\\"b");
        assert_eq!(escaped("/a\\b"), "/a\\\\b");
        assert_eq!(escaped("x\ny"), "x\\ny");
        assert_eq!(escaped("\\\"\n"), "\\\\\\\"\\n");
        // Braces, commas, '=', tabs and any UTF-8 stand as they are.
        for s in ["/a}b{c", "a,b=c", "t\tr", "/caf\u{e9}/\u{fffd}", ""] {
            assert_eq!(escaped(s), s);
        }
        // Controls without an escape become U+FFFD.
        assert_eq!(escaped("a\rb\x00c\x7f"), "a\u{fffd}b\u{fffd}c\u{fffd}");
    }
}
