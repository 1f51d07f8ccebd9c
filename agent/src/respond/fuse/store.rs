//! Fuse state on disk: one JSON file rewritten atomically after every change,
//! read back at start so a restarted agent knows what it fused and which
//! actions still owe the gateway a call.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::RouteFuse;
use crate::request::route::RouteKey;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("fuse state file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fuse state file {path} is not valid ({message}); fix or remove it")]
    Invalid { path: String, message: String },
}

/// One route as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRoute {
    pub service: String,
    pub method: String,
    pub route: String,
    #[serde(flatten)]
    pub fuse: RouteFuse,
    /// Per action name: the last transition `seq` it applied.
    #[serde(default)]
    pub applied: BTreeMap<String, u64>,
}

impl StoredRoute {
    pub fn key(&self) -> RouteKey {
        RouteKey::new(&self.service, &self.method, &self.route)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateDoc {
    version: u32,
    /// Mode that wrote the file: dry-run state must not turn into real fuses.
    mode: String,
    routes: Vec<StoredRoute>,
    /// Routes `enforce` left fused at the gateway that are being closed
    /// through the actions after a switch to `dry_run` (state `closed`,
    /// `applied` per action); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    releasing: Vec<StoredRoute>,
}

/// What a state file holds.
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    /// The mode that wrote the file; None: no file.
    pub mode: Option<String>,
    pub routes: Vec<StoredRoute>,
    pub releasing: Vec<StoredRoute>,
}

pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Missing file: nothing fused yet. A file that does not parse is an
    /// error: silently forgetting fused routes would be worse than not starting.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.display().to_string(),
                    source,
                });
            }
        };
        let doc: StateDoc = serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        if doc.version != VERSION {
            return Err(StoreError::Invalid {
                path: self.path.display().to_string(),
                message: format!("version {} (expected {VERSION})", doc.version),
            });
        }
        Ok(Loaded {
            mode: Some(doc.mode),
            routes: doc.routes,
            releasing: doc.releasing,
        })
    }

    /// Renames the file to `<file>.bad-<unix seconds>` (kept for a post
    /// mortem) and returns the new path.
    pub fn move_aside(&self, now: std::time::SystemTime) -> Result<PathBuf, StoreError> {
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".bad-{secs}"));
        let aside = PathBuf::from(name);
        std::fs::rename(&self.path, &aside).map_err(|source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        Ok(aside)
    }

    pub fn save(
        &self,
        mode: &str,
        routes: Vec<StoredRoute>,
        releasing: Vec<StoredRoute>,
    ) -> Result<(), StoreError> {
        let doc = StateDoc {
            version: VERSION,
            mode: mode.to_string(),
            routes,
            releasing,
        };
        let mut text = serde_json::to_vec_pretty(&doc).map_err(|e| StoreError::Invalid {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        write_atomic(&self.path, &text).map_err(|source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }
}

/// Write a sibling temp file, fsync it, rename it over `path`, fsync the
/// directory: readers see the old or the new file, never a torn one.
///
/// The temp file gets a random suffix and is created exclusively without
/// following symlinks (`O_EXCL | O_NOFOLLOW`), so nobody who can write to the
/// directory can point it at another file. It takes the mode of the file it
/// replaces (a map nginx reads as another user stays readable), or 0644.
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0o644,
        Err(e) => return Err(e),
    };
    let (mut f, tmp) = create_temp(&dir, name)?;
    let result = (|| {
        // fchmod: the umask must not narrow the mode the target had.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `.<name>.tmp.<random>` in `dir`, created with `O_CREAT | O_EXCL |
/// O_NOFOLLOW`; a name that exists (even as a symlink) is never opened.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<(std::fs::File, PathBuf)> {
    use rand::Rng;
    use std::os::unix::fs::OpenOptionsExt;
    let mut rng = rand::rng();
    for _ in 0..16 {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{:016x}", rng.random::<u64>()));
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temp file name after 16 tries",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::fuse::machine::FuseState;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::new(dir.path().join("sub/state.json"));
        assert_eq!(s.load().unwrap(), Loaded::default());
        let r = StoredRoute {
            service: "shop".into(),
            method: "GET".into(),
            route: "/a".into(),
            fuse: RouteFuse {
                state: FuseState::Open,
                escalation: 2,
                open_until: Some(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
                ),
                seq: 4,
                ..Default::default()
            },
            applied: [("nginx".to_string(), 3)].into_iter().collect(),
        };
        s.save("enforce", vec![r.clone()], vec![]).unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(!text.contains("releasing"), "{text}");
        assert_eq!(
            s.load().unwrap(),
            Loaded {
                mode: Some("enforce".to_string()),
                routes: vec![r.clone()],
                releasing: vec![],
            }
        );
        s.save("dry_run", vec![], vec![r.clone()]).unwrap();
        assert_eq!(s.load().unwrap().releasing, vec![r]);
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = StateStore::new(p).load().unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }

    #[test]
    fn temp_file_does_not_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("state.json");
        // The temp name the old code used: `.state.json.tmp.<pid>`.
        let planted = dir
            .path()
            .join(format!(".state.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
    }

    #[test]
    fn rewrite_keeps_the_target_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fuses.map");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&target, b"new").unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // A new file is 0644 whatever the umask-free temp mode was.
        let fresh = dir.path().join("fresh");
        write_atomic(&fresh, b"x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }
}
