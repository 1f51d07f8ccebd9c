//! `SLOGUARD_*` environment overrides, merged into the YAML document before
//! it is deserialised, so an override is checked exactly like a file key.

/// `SLOGUARD_METRICS__LISTEN` → `["metrics", "listen"]`. Double underscore
/// separates levels because keys themselves contain single underscores.
pub(super) fn env_key_path(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix("SLOGUARD_")?;
    // Variables that are not config keys: the config path (`--config`) and
    // the admin token, read by name.
    if rest.is_empty() || var == "SLOGUARD_CONFIG" || var == crate::export::admin::DEFAULT_TOKEN_ENV
    {
        return None;
    }
    Some(rest.split("__").map(|p| p.to_ascii_lowercase()).collect())
}

pub(super) fn apply_override(
    doc: &mut serde_yaml_ng::Value,
    path: &[String],
    raw: &str,
) -> Result<(), String> {
    // The value is read as a YAML scalar or flow collection, so `true`, `10s`,
    // `[a, b]` mean what they would in the file.
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(raw).map_err(|e| format!("value is not valid YAML: {e}"))?;
    let mut node = doc;
    for (i, key) in path.iter().enumerate() {
        let map = match node {
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => return Err(format!("`{}` is not a section", path[..i].join("."))),
        };
        let k = serde_yaml_ng::Value::String(key.clone());
        if i + 1 == path.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    }
    Ok(())
}

/// serde_yaml_ng appends "at line L column C" of the re-serialised document,
/// which means nothing to the user once env overrides were merged.
pub(super) fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
