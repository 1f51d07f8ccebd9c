//! The audit trail: every fuse state change (and every override) as one JSON
//! line in the audit file and one `tracing` event.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

/// One line of the audit file.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    #[serde(with = "humantime_serde")]
    pub time: SystemTime,
    pub service: String,
    pub method: String,
    pub route: String,
    pub from: &'static str,
    pub to: &'static str,
    /// `alert`, `verdict`, `timer`, `override` or `ttl`.
    pub cause: &'static str,
    /// `sloguard` for automatic changes, the operator for overrides.
    pub who: String,
    pub why: String,
    /// `dry_run` changes were recorded but no action was called.
    pub mode: &'static str,
    pub seq: u64,
    /// The request snapshots frozen by the alert that caused the change:
    /// what tripped the fuse stays answerable after the fact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

pub struct AuditLog {
    path: Option<PathBuf>,
}

impl AuditLog {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }

    /// Logs always; a failing audit file is reported but never stops a fuse.
    pub fn record(&mut self, r: &AuditRecord) {
        tracing::info!(
            target: "sloguard::respond::fuse::audit",
            service = %r.service, method = %r.method, route = %r.route,
            from = r.from, to = r.to, cause = r.cause, who = %r.who, why = %r.why,
            mode = r.mode, seq = r.seq, snapshot_id = r.snapshot_id.as_deref(),
            "{}", if r.mode == "dry_run" && r.to == "open" { "would fuse route" } else { "fuse state change" }
        );
        if let Err(e) = self.append(r) {
            tracing::error!(path = ?self.path, error = %e, "cannot append to the fuse audit file");
        }
    }

    /// Opened per record (changes are rare), so log rotation by rename works.
    fn append(&mut self, r: &AuditRecord) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write call per line keeps lines whole under O_APPEND.
        f.write_all(&line)
    }
}
