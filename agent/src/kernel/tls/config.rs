//! The `tls` config section: which TLS libraries the agent reads plaintext
//! from (docs/config.md).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Attach uprobes to OpenSSL (every `libssl.so*` a process maps, and
    /// executables that export `SSL_read`) and to Go's `crypto/tls` (Go
    /// executables with a symbol table) to see HTTPS plaintext.
    pub enabled: bool,
    /// Globs on executable or library paths (as the process sees them); a
    /// file is attached only when one matches the library or the
    /// executable of a process mapping it. Empty: every one.
    pub include: Vec<String>,
    /// Globs on executable or library paths never attached; wins over `include`.
    pub exclude: Vec<String>,
    /// Full look at every process's mappings at this interval (libraries
    /// loaded late with dlopen, processes the exec events missed, files no
    /// longer mapped). New processes are looked at on their exec at once.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            include: Vec::new(),
            exclude: Vec::new(),
            rescan_interval: Duration::from_secs(30),
        }
    }
}

/// Compiled include/exclude globs.
#[derive(Clone, Debug)]
pub struct PathFilter {
    include: Option<globset::GlobSet>,
    exclude: globset::GlobSet,
}

impl TlsConfig {
    /// The filter, or an error naming the key with a bad glob.
    pub fn filter(&self) -> Result<PathFilter, ConfigError> {
        let set = |key: &str, globs: &[String]| {
            let mut b = globset::GlobSetBuilder::new();
            for (i, g) in globs.iter().enumerate() {
                let glob = globset::Glob::new(g)
                    .map_err(|e| ConfigError::key(format!("tls.{key}[{i}]"), e.to_string()))?;
                b.add(glob);
            }
            b.build()
                .map_err(|e| ConfigError::key(format!("tls.{key}"), e.to_string()))
        };
        let include = if self.include.is_empty() {
            None
        } else {
            Some(set("include", &self.include)?)
        };
        if self.rescan_interval < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "tls.rescan_interval",
                "must be at least 1s (each rescan reads every process's maps)",
            ));
        }
        Ok(PathFilter {
            include,
            exclude: set("exclude", &self.exclude)?,
        })
    }
}

impl PathFilter {
    /// Whether a TLS `file` mapped by a process running `exe` may be attached.
    pub fn allows(&self, exe: &str, file: &str) -> bool {
        if self.exclude.is_match(exe) || self.exclude.is_match(file) {
            return false;
        }
        match &self.include {
            None => true,
            Some(inc) => inc.is_match(exe) || inc.is_match(file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_match_library_or_executable() {
        let cfg = TlsConfig {
            include: vec!["/usr/bin/node".into(), "**/libssl.so*".into()],
            exclude: vec!["/opt/legacy/**".into()],
            ..Default::default()
        };
        let f = cfg.filter().unwrap();
        assert!(f.allows(
            "/usr/bin/python3.11",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3"
        ));
        assert!(f.allows("/usr/bin/node", "/usr/bin/node"));
        assert!(!f.allows("/usr/bin/ruby", "/usr/lib/libfoo.so"));
        assert!(
            !f.allows("/opt/legacy/app", "/usr/lib/libssl.so.3"),
            "exclude wins"
        );
        assert!(TlsConfig::default().filter().unwrap().allows("/x", "/y"));
    }

    #[test]
    fn bad_glob_and_short_interval_name_their_key() {
        let cfg = TlsConfig {
            exclude: vec!["ok".into(), "a[".into()],
            ..Default::default()
        };
        assert!(
            cfg.filter()
                .unwrap_err()
                .to_string()
                .contains("tls.exclude[1]")
        );
        let cfg = TlsConfig {
            rescan_interval: Duration::from_millis(10),
            ..Default::default()
        };
        assert!(
            cfg.filter()
                .unwrap_err()
                .to_string()
                .contains("tls.rescan_interval")
        );
    }
}
