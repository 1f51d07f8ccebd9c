//! `http_response_status_code` as a bounded label. On the client side the
//! code is whatever the remote server sent (any three digits, up to 1 000
//! series per route); on the server side whatever the local application
//! wrote. Registered codes are kept; any other becomes its class (`5xx`), so
//! `http_response_status_code=~"5.."` (the shipped error-ratio rules) still
//! counts it, and a code outside 100–599 (no HTTP status at all) becomes
//! `other`: at most 6 values beyond the registry.
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The label value of a status code. Holds the code itself when registered,
/// else its class digit (1–5), else 0 (`other`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusLabel(u16);

impl StatusLabel {
    pub fn of(code: u16) -> Self {
        if is_registered(code) {
            Self(code)
        } else if (100..600).contains(&code) {
            Self(code / 100)
        } else {
            Self(0)
        }
    }
}

impl std::fmt::Display for StatusLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("other"),
            class @ 1..=5 => write!(f, "{class}xx"),
            code => write!(f, "{code}"),
        }
    }
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{self}")
    }
}

/// Codes in the IANA HTTP Status Code Registry (RFC 9110 and later RFCs),
/// without the ones it lists as unused (306, 418).
pub fn is_registered(code: u16) -> bool {
    matches!(
        code,
        100..=104
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=417
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_codes_stay_and_the_rest_collapse_to_six_values() {
        for code in [200, 204, 301, 404, 429, 451, 500, 503, 511] {
            assert_eq!(StatusLabel::of(code).to_string(), code.to_string());
        }
        assert_eq!(StatusLabel::of(599).to_string(), "5xx");
        assert_eq!(StatusLabel::of(520).to_string(), "5xx");
        assert_eq!(StatusLabel::of(299).to_string(), "2xx");
        assert_eq!(StatusLabel::of(418).to_string(), "4xx");
        assert_eq!(StatusLabel::of(0).to_string(), "other");
        assert_eq!(StatusLabel::of(999).to_string(), "other");
        let all: std::collections::BTreeSet<StatusLabel> = (0..1000).map(StatusLabel::of).collect();
        let registered = (0..1000).filter(|c| is_registered(*c)).count();
        assert_eq!(all.len(), registered + 6);
    }
}
