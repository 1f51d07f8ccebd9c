//! Reading Prometheus text exposition in assertions.

/// Value of the sample `name{labels…}` whose labels include all of `want`.
/// Sums when several series match (e.g. a label left out).
pub fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, val) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let ok = want
            .iter()
            .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
        if ok {
            let v: f64 = val.split_whitespace().next()?.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_and_sums_labelled_samples() {
        let t = "# TYPE x counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\ny 7\n";
        assert_eq!(super::value(t, "x_total", &[("a", "1")]), Some(7.0));
        assert_eq!(super::value(t, "x_total", &[("b", "3")]), Some(4.0));
        assert_eq!(super::value(t, "y", &[]), Some(7.0));
        assert_eq!(super::value(t, "x_total", &[("a", "2")]), None);
    }
}
