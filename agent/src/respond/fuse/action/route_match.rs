//! The one translation of a fused route (`GET /users/{id}`) into what a
//! gateway matches requests with, shared by the nginx map, the HAProxy map
//! and the Caddy route: which routes are blocked (only `open` ones), in what
//! order (literal siblings of a fused template first, unblocked), and how a
//! route becomes an anchored regex that nothing a client sent can break out
//! of.
//!
//! In a route `{...}` is always a template placeholder (the route table
//! percent-encodes braces a client sent) and matches one path segment; the
//! literal parts are percent-decoded, since every gateway here matches the
//! decoded path.
use super::SnapshotEntry;
use crate::request::route::RouteKey;
use crate::respond::fuse::machine::FuseState;

/// One piece of a route template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Percent-decoded bytes, matched as they are.
    Literal(Vec<u8>),
    /// `{name}`: one or more bytes other than `/`.
    Segment,
}

/// A route as a gateway matches it: method plus parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    method: String,
    parts: Vec<Part>,
}

/// One line of a gateway's match table, in the order the gateway must try
/// them: `fused == false` lines (literal siblings) come first.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchLine<'s> {
    pub entry: &'s SnapshotEntry,
    pub fused: bool,
}

impl RouteMatch {
    pub fn new(method: &str, route: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = route;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            if open > 0 {
                parts.push(Part::Literal(percent_decode(&rest[..open])));
            }
            parts.push(Part::Segment);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(percent_decode(rest)));
        }
        Self {
            method: method.to_string(),
            parts,
        }
    }

    pub fn of(route: &RouteKey) -> Self {
        Self::new(&route.method, &route.route)
    }

    pub fn is_template(&self) -> bool {
        self.parts.contains(&Part::Segment)
    }

    /// `^GET /users/[^/]+$` over the key `"<method> <decoded path>"`, for
    /// PCRE in byte mode (nginx, HAProxy). Every byte outside
    /// `[A-Za-z0-9/_-]` is `\xHH`; `sep` is how the space between method and
    /// path is written (`" "` for nginx's quoted key, `\x20` where the key must
    /// hold no blank, as in HAProxy's map).
    pub fn pcre(&self, sep: &str) -> String {
        let mut s = String::from("^");
        push_pcre(&mut s, self.method.as_bytes());
        s.push_str(sep);
        self.push_path(&mut s, push_pcre);
        s.push('$');
        s
    }

    /// `^/users/[^/]+$` for Go's RE2 (Caddy's `path_regexp`), which matches
    /// code points, not bytes: literal parts are decoded as UTF-8 (invalid
    /// bytes become U+FFFD, as Go reads them) and every character outside
    /// `[A-Za-z0-9/_-]` is `\x{H}`.
    pub fn go_path_regexp(&self) -> String {
        let mut s = String::from("^");
        self.push_path(&mut s, |out, b| {
            for c in String::from_utf8_lossy(b).chars() {
                if c.is_ascii_alphanumeric() || "/_-".contains(c) {
                    out.push(c);
                } else {
                    out.push_str(&format!("\\x{{{:x}}}", c as u32));
                }
            }
        });
        s.push('$');
        s
    }

    fn push_path(&self, s: &mut String, literal: impl Fn(&mut String, &[u8])) {
        for p in &self.parts {
            match p {
                Part::Literal(b) => literal(s, b),
                Part::Segment => s.push_str("[^/]+"),
            }
        }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether a request with this method and decoded path matches.
    pub fn matches(&self, method: &str, path: &[u8]) -> bool {
        method == self.method && match_parts(&self.parts, path)
    }
}

/// Backtracking over the few parts of one route; a segment takes 1..n
/// non-`/` bytes.
fn match_parts(parts: &[Part], path: &[u8]) -> bool {
    match parts.split_first() {
        None => path.is_empty(),
        Some((Part::Literal(l), rest)) => {
            path.starts_with(l) && match_parts(rest, &path[l.len()..])
        }
        Some((Part::Segment, rest)) => {
            let max = path.iter().position(|&b| b == b'/').unwrap_or(path.len());
            (1..=max).any(|n| match_parts(rest, &path[n..]))
        }
    }
}

/// What a gateway blocks for a snapshot, in the order it must try the
/// lines: known literal routes that are not open but that an open template
/// of the same method would match (`/users/me` beside a fused
/// `/users/{id}`) first, unblocked, then every open route. Only `open`
/// blocks; `half_open` lets traffic through to prove the route.
pub fn match_lines<'s>(
    snapshot: &'s [SnapshotEntry],
    wants: impl Fn(&RouteKey) -> bool,
) -> Vec<MatchLine<'s>> {
    let all: Vec<&SnapshotEntry> = snapshot.iter().filter(|e| wants(&e.route)).collect();
    let open: Vec<&SnapshotEntry> = all
        .iter()
        .filter(|e| e.state == FuseState::Open)
        .copied()
        .collect();
    let templates: Vec<RouteMatch> = open
        .iter()
        .map(|e| RouteMatch::of(&e.route))
        .filter(RouteMatch::is_template)
        .collect();
    let siblings = all.iter().filter(|e| {
        e.state != FuseState::Open
            && !e.route.route.contains('{')
            && templates
                .iter()
                .any(|t| t.matches(&e.route.method, &percent_decode(&e.route.route)))
    });
    siblings
        .map(|&entry| MatchLine {
            entry,
            fused: false,
        })
        .chain(
            open.into_iter()
                .map(|entry| MatchLine { entry, fused: true }),
        )
        .collect()
}

/// `%XX` → the byte; anything else (a lone `%` too) as it is.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn push_pcre(out: &mut String, s: &[u8]) {
    for &b in s {
        if b.is_ascii_alphanumeric() || b"/_-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a client sent, with every character a gateway's syntax cares about.
    pub const HOSTILE: &str = "/h/a\"b\\c d{x}e\n;#$'%0A%22";

    #[test]
    fn pcre_templates_and_escapes() {
        let m = |r: &str| RouteMatch::new("GET", r).pcre(" ");
        assert_eq!(m("/api/slow"), "^GET /api/slow$");
        assert_eq!(m("/users/{id}/x"), "^GET /users/[^/]+/x$");
        assert_eq!(m("/v1.0"), "^GET /v1\\x2e0$");
        assert_eq!(m("/a%20b"), "^GET /a\\x20b$");
        assert_eq!(m("/l/%7Bx%7D/{id}"), "^GET /l/\\x7bx\\x7d/[^/]+$");
        assert_eq!(m("/p%zz%"), "^GET /p\\x25zz\\x25$");
        assert_eq!(m("/u/{id"), "^GET /u/\\x7bid$");
        assert_eq!(
            RouteMatch::new("GET", "/a b").pcre("\\x20"),
            "^GET\\x20/a\\x20b$"
        );
    }

    #[test]
    fn hostile_routes_stay_inside_every_dialect() {
        let m = RouteMatch::new("GET", HOSTILE);
        let pcre = m.pcre("\\x20");
        let go = m.go_path_regexp();
        for re in [&pcre, &go] {
            // Only the regex alphabet remains: no quote, blank, `;`, `#`,
            // brace outside `\x{..}`, or control byte.
            assert!(
                re.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-\\^$[]+{}".contains(&b)),
                "{re}"
            );
        }
        assert!(!pcre.contains(['{', '}']), "{pcre}");
        assert!(pcre.contains("\\x0a") && pcre.contains("\\x22"), "{pcre}");
        assert!(go.contains("\\x{a}") && go.contains("\\x{22}"), "{go}");
        // Both regexes accept exactly the decoded hostile path.
        let path = b"/h/a\"b\\c d";
        assert!(m.matches("GET", &[&path[..], b"zz", b"e\n;#$'\n\""].concat()));
        assert!(!m.matches("GET", &[&path[..], b"z/z", b"e\n;#$'\n\""].concat()));
        assert!(!m.matches("POST", &[&path[..], b"zz", b"e\n;#$'\n\""].concat()));
        let re = regex::bytes::RegexBuilder::new(&pcre)
            .unicode(false)
            .build()
            .unwrap();
        assert!(re.is_match(&[&b"GET "[..], path, b"zz", b"e\n;#$'\n\""].concat()));
        let re = regex::Regex::new(&go).unwrap();
        assert!(re.is_match("/h/a\"b\\c dzze\n;#$'\n\""));
        assert!(!re.is_match("/h/a\"b\\c dze"));
    }

    #[test]
    fn go_regexp_reads_code_points() {
        let m = RouteMatch::new("GET", "/caf%C3%A9/{id}");
        assert_eq!(m.go_path_regexp(), "^/caf\\x{e9}/[^/]+$");
        assert!(
            regex::Regex::new(&m.go_path_regexp())
                .unwrap()
                .is_match("/café/1")
        );
    }

    fn entry(method: &str, route: &str, state: FuseState) -> SnapshotEntry {
        SnapshotEntry {
            route: RouteKey::new("shop", method, route),
            state,
        }
    }

    /// An open template among its literal siblings, a client's braces and
    /// deeper paths: what every gateway action must tell apart.
    pub(crate) fn siblings_snapshot() -> Vec<SnapshotEntry> {
        vec![
            entry("GET", "/users/{id}", FuseState::Open),
            entry("GET", "/users/me", FuseState::Closed),
            entry("GET", "/users/%7Bid%7D", FuseState::HalfOpen),
            entry("POST", "/users/me", FuseState::Closed),
            entry("GET", "/users/me/x", FuseState::Closed),
            entry("GET", "/users/{id}/x", FuseState::Closed),
        ]
    }

    #[test]
    fn lines_put_literal_siblings_of_open_templates_first() {
        let mut snap = siblings_snapshot();
        snap.push(entry("GET", "/half", FuseState::HalfOpen));
        snap.push(entry("GET", "/other", FuseState::Open));
        let lines: Vec<(&str, bool)> = match_lines(&snap, |r| &*r.service == "shop")
            .iter()
            .map(|l| (&*l.entry.route.route, l.fused))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("/users/me", false),
                ("/users/%7Bid%7D", false),
                ("/users/{id}", true),
                ("/other", true),
            ]
        );
        assert!(match_lines(&snap, |r| &*r.service == "none").is_empty());
    }
}
