//! Turning a request target into a route template: the path without its
//! query, configured patterns, and the id heuristic.

/// The path of a request target: query and fragment dropped, absolute-form
/// URLs reduced to their path. `None` for targets that have no path
/// (`*`, authority form).
pub(crate) fn path_of(target: &str) -> Option<&str> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let t = &target[..end];
    if t.starts_with('/') {
        return Some(t);
    }
    for scheme in ["http://", "https://", "HTTP://", "HTTPS://"] {
        if let Some(rest) = t.strip_prefix(scheme) {
            return Some(rest.find('/').map_or("/", |i| &rest[i..]));
        }
    }
    None
}

/// One segment of a configured pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// `*`: one segment, or everything that remains when last.
    Wild,
}

/// Error text for an invalid pattern.
pub(crate) fn compile(pattern: &str) -> Result<Vec<Seg>, String> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err("must start with '/'".into());
    };
    if pattern.contains(['?', '#']) {
        return Err("must not contain a query or fragment".into());
    }
    rest.split('/')
        .map(|s| {
            if s == "*" {
                Ok(Seg::Wild)
            } else if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    Err(format!("bad parameter segment `{s}`"))
                } else {
                    Ok(Seg::Param)
                }
            } else if s.contains(['{', '}', '*']) {
                Err(format!(
                    "`{{name}}` and `*` must be whole segments (in `{s}`)"
                ))
            } else {
                Ok(Seg::Literal(s.to_string()))
            }
        })
        .collect()
}

/// Does `path` (starting with '/') match the compiled pattern?
pub(crate) fn matches(segs: &[Seg], path: &str) -> bool {
    let mut parts = path[1..].split('/');
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match seg {
            Seg::Wild if last => return true,
            Seg::Wild => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Seg::Param => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            Seg::Literal(l) => match parts.next() {
                Some(p) if p == l => {}
                _ => return false,
            },
        }
    }
    parts.next().is_none()
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Is a path segment an identifier rather than a name?
pub(crate) fn is_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() || is_uuid(b) || b.len() > 64 || b.contains(&b'@') {
        return true;
    }
    // Dates, versions with many digits, numeric ranges: digits and separators.
    if digits > 0
        && b.iter()
            .all(|&c| c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_' | b':' | b','))
    {
        return true;
    }
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    if hex && (b.len() >= 16 || (b.len() >= 8 && digits > 0)) {
        return true;
    }
    let token = b.iter().all(|&c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'%' | b'=')
    });
    // Long mixed tokens (base64url ids, hashes, session ids).
    if token && b.len() >= 20 && digits > 0 {
        return true;
    }
    if b.len() >= 32 {
        return true;
    }
    // Short codes that are mostly digits ("a1234", "u-98765").
    b.len() >= 5 && digits * 2 >= b.len()
}

/// The heuristic template of a path: id-like segments become `{id}` (a file
/// extension is kept, so `/img/123.png` becomes `/img/{id}.png`).
pub(crate) fn heuristic(path: &str, out: &mut String) {
    out.clear();
    for seg in path[1..].split('/') {
        out.push('/');
        if let Some(dot) = seg.rfind('.') {
            let (stem, ext) = (&seg[..dot], &seg[dot + 1..]);
            if !stem.is_empty()
                && !seg.contains('@')
                && (1..=5).contains(&ext.len())
                && ext.bytes().all(|c| c.is_ascii_alphanumeric())
                && ext.bytes().any(|c| c.is_ascii_alphabetic())
                && is_id(stem)
            {
                out.push_str("{id}.");
                out.push_str(ext);
                continue;
            }
        }
        if is_id(seg) {
            out.push_str("{id}");
            continue;
        }
        push_literal(out, seg);
    }
}

/// A segment of a raw path as route text. Braces are percent-encoded, so in
/// a route `{...}` always means a template placeholder and never something
/// a client sent (gateways such as nginx decode `%7B` back to `{`).
fn push_literal(out: &mut String, seg: &str) {
    for c in seg.chars() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_targets() {
        assert_eq!(path_of("/a/b?x=1#f"), Some("/a/b"));
        assert_eq!(path_of("http://h:80/a?q"), Some("/a"));
        assert_eq!(path_of("https://h"), Some("/"));
        assert_eq!(path_of("*"), None);
        assert_eq!(path_of("example.com:443"), None);
    }

    #[test]
    fn patterns_compile_and_match() {
        let p = compile("/users/{id}/orders/*").unwrap();
        assert!(matches(&p, "/users/7/orders/"));
        assert!(matches(&p, "/users/7/orders/a/b/c"));
        assert!(!matches(&p, "/users//orders/a"));
        assert!(!matches(&p, "/users/7"));
        let p = compile("/users/{id}").unwrap();
        assert!(matches(&p, "/users/abc"));
        assert!(!matches(&p, "/users/abc/x"));
        let p = compile("/a/*/c").unwrap();
        assert!(matches(&p, "/a/b/c"));
        assert!(!matches(&p, "/a/c"));
        assert!(compile("users").is_err());
        assert!(compile("/u/{}").is_err());
        assert!(compile("/u/x{id}").is_err());
        assert!(compile("/u?x").is_err());
    }

    #[test]
    fn heuristic_replaces_ids_only() {
        let cases = [
            ("/users/42", "/users/{id}"),
            ("/users/42/orders/17", "/users/{id}/orders/{id}"),
            ("/o/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/o/{id}"),
            (
                "/commit/9fceb02d0ae598e95dc970b74767f19372d61af8",
                "/commit/{id}",
            ),
            ("/blob/deadbeef12", "/blob/{id}"),
            ("/t/eyJhbGciOiJIUzI1NiJ9abc123", "/t/{id}"),
            ("/img/12345.png", "/img/{id}.png"),
            ("/day/2026-11-25", "/day/{id}"),
            ("/api/v2/users", "/api/v2/users"),
            ("/static/app.js", "/static/app.js"),
            ("/health", "/health"),
            ("/", "/"),
            ("/a/", "/a/"),
            ("/m/a@b.c", "/m/{id}"),
            // A client's braces are not a template.
            ("/a/{x}/b}", "/a/%7Bx%7D/b%7D"),
            ("/{overflow}", "/%7Boverflow%7D"),
        ];
        let mut out = String::new();
        for (path, want) in cases {
            heuristic(path, &mut out);
            assert_eq!(out, want, "{path}");
        }
    }
}
