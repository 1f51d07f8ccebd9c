//! The Grafana dashboard's queries, for tests that run them through a real
//! Prometheus: every panel target's `expr` and every template variable's
//! query, with Grafana's variables replaced by values Prometheus accepts.
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// `(panel title, expr)` of every panel target, rows' nested panels included,
/// in dashboard order. Exprs are returned as written (with `$service`,
/// `$__rate_interval`...): pass them through [`to_promql`] before querying.
pub fn panel_queries(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let dash = load(path)?;
    let mut out = Vec::new();
    let panels = dash
        .get("panels")
        .and_then(Value::as_array)
        .context("dashboard has no `panels` array")?;
    collect(panels, &mut out)?;
    Ok(out)
}

fn collect(panels: &[Value], out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    for p in panels {
        let title = p
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(targets) = p.get("targets").and_then(Value::as_array) {
            for t in targets {
                match t.get("expr").and_then(Value::as_str) {
                    Some(e) if !e.trim().is_empty() => out.push((title.clone(), e.to_string())),
                    _ => bail!("panel {title:?} has a target without an expr"),
                }
            }
        }
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            collect(nested, out)?;
        }
    }
    Ok(())
}

/// `(variable name, PromQL)` of each `query` template variable: Grafana's
/// `label_values(selector, label)` becomes `group by (label) (selector)`,
/// which returns the same label values.
pub fn variable_queries(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let dash = load(path)?;
    let vars = dash
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .context("dashboard has no templating.list")?;
    let mut out = Vec::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap_or("").to_string();
        let q = v
            .pointer("/query/query")
            .or_else(|| v.get("query"))
            .and_then(Value::as_str)
            .with_context(|| format!("variable {name} has no query"))?;
        out.push((
            name,
            label_values_to_promql(q).unwrap_or_else(|| q.to_string()),
        ));
    }
    Ok(out)
}

/// `label_values(sel, label)` → `group by (label) (sel)`; `None` for other text.
pub fn label_values_to_promql(q: &str) -> Option<String> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some(format!("group by ({}) ({})", label.trim(), selector.trim()))
}

/// Replace Grafana's variables with values Prometheus accepts: intervals
/// become `5m`, template variables (`$service`, `${route}`) match anything.
pub fn to_promql(expr: &str) -> String {
    let mut s = expr.to_string();
    for v in [
        "$__rate_interval",
        "$__interval",
        "$__range",
        "${__rate_interval}",
    ] {
        s = s.replace(v, "5m");
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name_len, skip) = if let Some(b) = after.strip_prefix('{') {
            let end = b.find('}').unwrap_or(b.len());
            (end, end + 2)
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (n, n)
        };
        if name_len == 0 {
            out.push('$');
            rest = after;
        } else {
            out.push_str(".*");
            rest = &after[skip.min(after.len())..];
        }
    }
    out.push_str(rest);
    out
}

fn load(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_variables_become_promql() {
        assert_eq!(
            to_promql(r#"rate(x{a=~"$service", b=~"${route}"}[$__rate_interval])"#),
            r#"rate(x{a=~".*", b=~".*"}[5m])"#
        );
        assert_eq!(to_promql("up == 1"), "up == 1");
        assert_eq!(
            label_values_to_promql(r#"label_values(m{a=~"$s"}, http_route)"#).as_deref(),
            Some(r#"group by (http_route) (m{a=~"$s"})"#)
        );
        assert_eq!(label_values_to_promql("up"), None);
    }
}
